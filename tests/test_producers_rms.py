"""The RMS connector: NIBRS XML reports onto mutualaid.rms.Record, parsed with a hardened parser."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import Region, dead_letters, mutualaid_cli, source_events
from mutualaid.serde import SOURCE_EVENT, AvroSerializer, SchemaStore
from mutualaid.serde import SerializationContext as Ctx
from mutualaid.topics import Kind, Stage
from producers.rms import RmsAdapter
from producers.runner import Rejected, SourceItem

DATA = Path(__file__).parent / "data" / "rms"
NIEM = (DATA / "nibrs-54236732.xml").read_bytes()
DELETE = (DATA / "simple-delete.xml").read_bytes()

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Report><Incident><ActivityIdentification><IdentificationID>&lol4;</IdentificationID>
</ActivityIdentification></Incident></Report>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Report><ReportHeader><ReportDate><Date>2026-11-24</Date></ReportDate></ReportHeader>
<Incident><ActivityIdentification><IdentificationID>X-1</IdentificationID>
</ActivityIdentification></Incident><ReportNarrativeText>&secret;</ReportNarrativeText></Report>"""


def to_event(raw: bytes) -> dict:
    item = SourceItem(raw, 1, None, where="file r.xml")  # type: ignore[arg-type]
    return RmsAdapter("CA0990100").to_event(item)


def test_a_niem_nibrs_report_becomes_a_record() -> None:
    event = to_event(NIEM)
    envelope, body = event["envelope"], event["body"]
    assert (envelope["record_id"], envelope["op"], envelope["labels"]) == ("54236732", "UPSERT", [])
    written = datetime(2026, 11, 25, 6, 5, tzinfo=UTC)  # MessageDateTime, 22:05 -08:00
    assert (
        envelope["version"] == (written - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000
    )
    assert envelope["occurred_at"] == datetime(2026, 11, 24, 19, 30, tzinfo=UTC)  # zone: UTC
    assert body["incident_number"] == "54236732"
    assert (body["report_date"], body["incident_date"], body["incident_hour"]) == (
        "2026-11-01",
        "2026-11-24",
        19,
    )
    assert body["cleared_exceptionally"] == "N"
    assert body["offenses"] == [
        {
            "nibrs_code": "240",
            "description": "Motor vehicle theft",
            "attempted_completed": "C",
            "location_type": "18",
            "weapon": None,
        },
        {
            "nibrs_code": "13A",
            "description": "Aggravated assault",
            "attempted_completed": "A",
            "location_type": "18",
            "weapon": "12",
        },
    ]
    assert body["persons"] == [
        {"person_id": "1", "role": "VICTIM", "age": 34, "sex": "F", "race": "W", "ethnicity": "N"},
        {
            "person_id": "1",
            "role": "OFFENDER",
            "age": 19,
            "sex": "M",
            "race": "B",
            "ethnicity": None,
        },
    ]
    assert body["vehicles"] == [
        {
            "plate": "8ABC123",
            "plate_state": "CA",
            "vin": "3TMCZ5AN5KM123456",
            "make": "TOYT",
            "model": "TAC",
            "year": 2019,
            "color": "SIL",
            "style": None,
            "role": None,
        }
    ]
    assert body["property"] == [
        {"description": "2019 Toyota Tacoma, silver", "loss_type": "STOLEN", "value_usd": 18500.0}
    ]
    AvroSerializer(SchemaStore(), SOURCE_EVENT[Kind.RMS_RECORD])(event, Ctx("t"))


def test_report_actions_map_onto_ops() -> None:
    replaced = to_event(NIEM.replace(b">I</nibrs:Report", b">R</nibrs:Report"))
    assert replaced["envelope"]["op"] == "UPSERT"
    deleted = to_event(DELETE)
    assert (deleted["envelope"]["op"], deleted["envelope"]["record_id"]) == ("DELETE", "54236732")
    assert deleted["body"] is None
    # Withdrawn later, so a higher version: downstream applies the tombstone over the report.
    assert deleted["envelope"]["version"] > to_event(NIEM)["envelope"]["version"]


def test_an_explicit_sequence_number_is_the_version() -> None:
    sequenced = DELETE.replace(
        b"</ReportHeader>", b"<ReportSequenceNumber>3</ReportSequenceNumber></ReportHeader>"
    )
    assert to_event(sequenced)["envelope"]["version"] == 3


@pytest.mark.parametrize("status", ["SEALED", "EXPUNGED"])
def test_sealed_and_expunged_reports_become_labelled_deletes(status: str) -> None:
    sealed = NIEM.replace(
        b"</nibrs:ReportHeader>",
        f"<nibrs:RecordStatusCode>{status}</nibrs:RecordStatusCode></nibrs:ReportHeader>".encode(),
    )
    event = to_event(sealed)
    assert event["envelope"]["op"] == "DELETE" and event["body"] is None
    assert event["envelope"]["labels"] == [status.lower()]
    AvroSerializer(SchemaStore(), SOURCE_EVENT[Kind.RMS_RECORD])(event, Ctx("t"))


def test_a_juvenile_offender_labels_the_record() -> None:
    juvenile = NIEM.replace(b"<nc:MeasureIntegerValue>19<", b"<nc:MeasureIntegerValue>16<")
    assert to_event(juvenile)["envelope"]["labels"] == ["juvenile"]
    # A juvenile victim alone does not.
    young_victim = NIEM.replace(b"<nc:MeasureIntegerValue>34<", b"<nc:MeasureIntegerValue>12<")
    assert to_event(young_victim)["envelope"]["labels"] == []


def test_a_later_submission_is_a_higher_version() -> None:
    later = NIEM.replace(b"2026-11-24T22:05:00-08:00", b"2026-11-26T08:00:00-08:00")
    assert to_event(later)["envelope"]["version"] > to_event(NIEM)["envelope"]["version"]
    assert to_event(NIEM)["envelope"]["event_id"] == to_event(NIEM)["envelope"]["event_id"]


@pytest.mark.parametrize(
    ("raw", "error_type", "reason"),
    [
        (BILLION_LAUGHS, "unsafe_xml", "nothing was expanded"),
        (EXTERNAL_ENTITY, "unsafe_xml", "DTDs and entity declarations are not allowed"),
        (NIEM[: len(NIEM) // 2], "malformed_document", "not well-formed XML"),
        (
            NIEM.replace(b"54236732", b"5423\xe96732", 1),
            "malformed_document",
            "not well-formed XML",
        ),
        (
            NIEM.replace(b"<nc:IdentificationID>54236732</nc:IdentificationID>", b""),
            "missing_incident_id",
            "IdentificationID is missing",
        ),
        (
            NIEM.replace(
                b">I</nibrs:ReportActionCategoryCode", b">X</nibrs:ReportActionCategoryCode"
            ),
            "bad_report_action",
            "'X' is not I, R or D",
        ),
        (
            DELETE.replace(
                b"</ReportHeader>", b"<ReportSequenceNumber>x</ReportSequenceNumber></ReportHeader>"
            ),
            "bad_version",
            "'x' is not a positive integer",
        ),
        (
            NIEM.replace(b"2026-11-24T19:30:00", b"yesterday"),
            "bad_timestamp",
            "'yesterday' in ActivityDate",
        ),
    ],
)
def test_bad_documents_are_rejected_not_expanded(raw: bytes, error_type: str, reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        to_event(raw)
    assert caught.value.error_type == error_type
    assert reason in caught.value.reason


@pytest.mark.broker
def test_connect_rms_publishes_reports_and_tombstones(region: Region, tmp_path: Path) -> None:
    drop = tmp_path / "nibrs"
    drop.mkdir()
    shutil.copy(DATA / "nibrs-54236732.xml", drop / "a-report.xml")
    shutil.copy(DATA / "simple-delete.xml", drop / "b-delete.xml")
    (drop / "c-bomb.xml").write_bytes(BILLION_LAUGHS)
    result = mutualaid_cli(
        region, "connect", "rms", "--agency", region.local, "--source", str(drop)
    )
    assert result.returncode == 0, result.stderr
    assert "read 3  published 2  rejected 1" in result.stdout

    events = source_events(region.settings.bootstrap_servers, region.local, Kind.RMS_RECORD, 2)
    assert [(e["envelope"]["op"], e["envelope"]["record_id"]) for e in events] == [
        ("UPSERT", "54236732"),
        ("DELETE", "54236732"),
    ]
    letters = dead_letters(
        region.settings.bootstrap_servers,
        Stage.PRODUCERS,
        lambda d: d["source_ori"] == region.local,
    )
    assert [(d["error_type"], d["position"]) for d in letters] == [
        ("unsafe_xml", "file c-bomb.xml")
    ]
    assert letters[0]["payload"] == BILLION_LAUGHS
