"""The RMS connector: NIBRS XML reports onto mutualaid.rms.Record, parsed with a hardened parser."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mutualaid.serde import SOURCE_EVENT, AvroSerializer, SchemaStore
from mutualaid.serde import SerializationContext as Ctx
from mutualaid.topics import Kind, Stage
from producers.contract import Rejected, Skipped, SourceItem
from producers.rms import RmsAdapter
from support.brokers import dead_letters, source_events
from support.processes import mutualaid_cli
from support.regions import Region

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
    millis = (written - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert envelope["version"] == millis * 10 + 1  # the Insert's rank in the lowest digit
    assert envelope["occurred_at"] == datetime(2026, 11, 24, 19, 30, tzinfo=UTC)  # zone: UTC
    assert body["incident_number"] == "54236732"
    assert (body["report_date"], body["incident_date"], body["incident_hour"]) == (
        "2026-11-01",
        "2026-11-24",
        19,
    )
    assert body["cleared_exceptionally"] == "N"
    assert [
        (o["nibrs_code"], o["description"], o["attempted_completed"], o["location_type"])
        for o in body["offenses"]
    ] == [("240", "Motor vehicle theft", "C", "18"), ("13A", "Aggravated assault", "A", "18")]
    assert [(o["weapon"], o["weapons"]) for o in body["offenses"]] == [(None, []), ("12", ["12"])]
    assert [
        (p["person_id"], p["role"], p["age"], p["sex"], p["race"], p["ethnicity"])
        for p in body["persons"]
    ] == [("1", "VICTIM", 34, "F", "W", "N"), ("1", "OFFENDER", 19, "M", "B", None)]
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
    assert [(p["description"], p["loss_type"], p["value_usd"]) for p in body["property"]] == [
        ("2019 Toyota Tacoma, silver", "STOLEN", 18500.0)
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
            "needs Incident/ActivityIdentification/IdentificationID",
        ),
        (
            NIEM.replace(
                b">I</nibrs:ReportActionCategoryCode", b">X</nibrs:ReportActionCategoryCode"
            ),
            "bad_report_action",
            "'X' is not I, A, R or D",
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


# The project's own IEPD 4.2 fixtures (tests/data/rms/conformance/), of agency ZZ0000001.
CONFORMANCE = DATA / "conformance"
FIXTURE_ORI = "ZZ0000001"


def fixture(name: str) -> bytes:
    return next(CONFORMANCE.glob(f"{name}*.xml")).read_bytes()


def mapped(adapter: RmsAdapter, raw: bytes, where: str = "file f.xml") -> dict:
    return adapter.to_event(SourceItem(raw, 1, None, where=where))  # type: ignore[arg-type]


def test_the_incident_time_is_its_datetime_not_a_stray_year_month() -> None:
    # 01 writes a YearMonthDate (2026-11) before the DateTime inside ActivityDate.
    event = mapped(RmsAdapter(FIXTURE_ORI), fixture("01"))
    assert (event["body"]["incident_date"], event["body"]["incident_hour"]) == ("2026-11-24", 23)
    assert event["envelope"]["occurred_at"] == datetime(2026, 11, 24, 23, 40, tzinfo=UTC)
    # A Date alone says nothing of the hour.
    dated = mapped(RmsAdapter(FIXTURE_ORI), fixture("03"))["body"]
    assert (dated["incident_date"], dated["incident_hour"]) == ("2026-11-21", None)


def test_persons_come_from_the_role_elements_not_the_association_links() -> None:
    persons = mapped(RmsAdapter(FIXTURE_ORI), fixture("01"))["body"]["persons"]
    assert [(p["role"], p["person_id"]) for p in persons] == [
        ("VICTIM", "1"),
        ("VICTIM", "2"),
        ("VICTIM", "3"),
        ("VICTIM", "4"),
        ("OFFENDER", "1"),
        ("OFFENDER", "2"),
        ("ARRESTEE", "1"),
    ]


def test_a_replace_with_the_same_message_time_supersedes_the_insert() -> None:
    adapter = RmsAdapter(FIXTURE_ORI)
    insert, replace = mapped(adapter, fixture("01")), mapped(adapter, fixture("02"))
    assert insert["envelope"]["version"] < replace["envelope"]["version"]
    assert insert["envelope"]["event_id"] != replace["envelope"]["event_id"]
    # Without any state too: at one MessageDateTime the action's rank orders them.
    alone = mapped(RmsAdapter(FIXTURE_ORI), fixture("02"))
    assert alone["envelope"]["version"] > insert["envelope"]["version"]
    # Read again, the same Replace is the same event.
    reread = mapped(adapter, fixture("02"))["envelope"]
    assert (reread["version"], reread["event_id"]) == (
        replace["envelope"]["version"],
        replace["envelope"]["event_id"],
    )


def test_different_content_never_gets_the_same_version_and_the_last_read_wins() -> None:
    adapter = RmsAdapter(FIXTURE_ORI)
    versions = [mapped(adapter, fixture("02"))["envelope"]["version"]]
    # Another Replace with the same MessageDateTime, and one stamped before the Insert.
    again = fixture("02").replace(b"<nc:Amount>1400<", b"<nc:Amount>1500<")
    earlier = again.replace(b"2026-11-25T06:00:00-08:00", b"2026-11-20T06:00:00-08:00")
    earlier = earlier.replace(b"<nc:Amount>1500<", b"<nc:Amount>1600<")
    versions += [mapped(adapter, raw)["envelope"]["version"] for raw in (again, earlier)]
    assert versions == sorted(versions) and len(set(versions)) == 3


def test_a_group_b_add_read_after_its_delete_stands_again() -> None:
    # As the FBI applies submissions in order: the arrest deleted, then reported again.
    adapter = RmsAdapter(FIXTURE_ORI)
    deleted = mapped(adapter, fixture("06"))["envelope"]
    added = mapped(adapter, fixture("05"))["envelope"]
    assert (deleted["op"], added["op"]) == ("DELETE", "UPSERT")
    assert added["version"] > deleted["version"]


def test_the_per_record_state_survives_a_restart() -> None:
    first = RmsAdapter(FIXTURE_ORI)
    replace = mapped(first, fixture("02"))
    again = fixture("02").replace(b"<nc:Amount>1400<", b"<nc:Amount>1500<")
    bumped = mapped(first, again)["envelope"]["version"]
    restarted = RmsAdapter(FIXTURE_ORI)
    restarted.restore(json.loads(json.dumps(first.state())))  # as the checkpoint keeps it
    assert mapped(restarted, again)["envelope"]["version"] == bumped
    assert bumped > replace["envelope"]["version"]
    # A restart that lost its state would give that content the Replace's version again:
    # that is the collision the state prevents.
    assert mapped(RmsAdapter(FIXTURE_ORI), again)["envelope"]["version"] != bumped


def test_a_reused_sequence_number_with_other_content_is_refused() -> None:
    adapter = RmsAdapter(FIXTURE_ORI)
    sequenced = fixture("01").replace(
        b"</nibrs:ReportHeader>",
        b"<nibrs:ReportSequenceNumber>4</nibrs:ReportSequenceNumber></nibrs:ReportHeader>",
    )
    assert mapped(adapter, sequenced)["envelope"]["version"] == 4
    with pytest.raises(Rejected) as caught:
        mapped(adapter, sequenced.replace(b"<nc:Amount>900<", b"<nc:Amount>901<"))
    assert caught.value.error_type == "version_reused"


def test_group_b_arrests_are_records_of_their_own() -> None:
    adapter = RmsAdapter(FIXTURE_ORI)
    arrest, deleted = mapped(adapter, fixture("05")), mapped(adapter, fixture("06"))
    assert (arrest["envelope"]["record_id"], arrest["envelope"]["op"]) == (
        "arrest-RB26-B0077",
        "UPSERT",
    )
    assert arrest["body"]["incident_number"] is None
    assert arrest["body"]["report_type"] == "GROUP B ARREST REPORT"
    assert [
        (a["arrest_number"], a["charge"], a["arrest_type"]) for a in arrest["body"]["arrests"]
    ] == [("RB26-B0077", "90D", "S")]
    assert (deleted["envelope"]["record_id"], deleted["envelope"]["op"]) == (
        "arrest-RB26-B0077",
        "DELETE",
    )
    assert deleted["envelope"]["version"] > arrest["envelope"]["version"]


def test_a_zero_report_is_skipped_not_rejected() -> None:
    with pytest.raises(Skipped, match="zero report for 2026-10"):
        mapped(RmsAdapter(FIXTURE_ORI), fixture("07"))


@pytest.mark.parametrize("name", ["01", "05", "07"])
def test_another_agencys_report_is_refused(name: str) -> None:
    with pytest.raises(Rejected) as caught:
        mapped(RmsAdapter("CA0990100"), fixture(name))
    assert caught.value.error_type == "ori_mismatch"
    assert "ReportingAgency ORI 'ZZ0000001' is not CA0990100" in caught.value.reason


def test_a_juvenile_offender_or_arrestee_labels_the_record_through_derive() -> None:
    adapter = RmsAdapter(FIXTURE_ORI)
    assert mapped(adapter, fixture("03"))["envelope"]["labels"] == ["juvenile"]  # aged 16
    assert mapped(adapter, fixture("01"))["envelope"]["labels"] == []  # 28-35, unknown, 31
    # An offender "16-20" may be a juvenile: the lower end counts.
    ranged = fixture("01").replace(
        b"<nc:RangeMinimumIntegerValue>28<", b"<nc:RangeMinimumIntegerValue>16<"
    )
    assert mapped(RmsAdapter(FIXTURE_ORI), ranged)["envelope"]["labels"] == ["juvenile"]
    # Infant victims (NB, BB: age 0) do not make a juvenile record.
    assert [p["age"] for p in mapped(adapter, fixture("03"))["body"]["persons"][1:3]] == [0, 0]
