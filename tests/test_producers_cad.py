"""The CAD connector: NENA EIDO JSON documents onto mutualaid.cad.Incident."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mutualaid.serde import SOURCE_EVENT, AvroDeserializer, AvroSerializer, SchemaStore
from mutualaid.serde import SerializationContext as Ctx
from mutualaid.topics import Kind, Stage, source_topic
from producers.cad import CadAdapter
from producers.contract import Rejected, SourceItem
from support.brokers import dead_letters, read_topic
from support.processes import mutualaid_cli
from support.regions import Region

DATA = Path(__file__).parent / "data" / "eido"
FIRST = (DATA / "01-incident-dispatched.json").read_bytes()
SECOND = (DATA / "02-incident-on-scene.json").read_bytes()
INCIDENT = "urn:emergency:uid:incidentid:7c1e09ab44:psap.riverbend.example"


def to_event(raw: bytes) -> dict:
    return CadAdapter("CA0990100").to_event(SourceItem(raw, 1, None, where="file x.json"))  # type: ignore[arg-type]


def test_an_eido_document_becomes_an_incident() -> None:
    event = to_event(FIRST)
    envelope, body = event["envelope"], event["body"]
    assert envelope["record_id"] == INCIDENT == body["incident_tracking_id"]
    assert envelope["op"] == "UPSERT" and envelope["source_system"] == "cad-eido"
    status_at = datetime(2026, 11, 25, 5, 14, 3, 120000, tzinfo=UTC)
    # The newest lastUpdateTimeStamp in milliseconds, then 20 bits of the document's digest.
    assert envelope["version"] >> 20 == int(status_at.timestamp() * 1000)
    assert envelope["occurred_at"] == datetime(2026, 11, 25, 5, 12, 40, tzinfo=UTC)  # call start
    assert envelope["source_position"] == "file x.json"
    assert envelope["labels"] == ["juvenile"]  # the 15-year-old patient
    assert body["incident_number"] == "RB-26-001234"
    assert (body["incident_type"], body["local_incident_type"]) == ("TA", "1183")
    assert (body["priority"], body["common_priority"]) == ("1", 1)
    assert (body["status"], body["local_status"]) == ("DISPATCHED", "DISP")
    assert body["status_at"] == status_at and body["closed_at"] is None
    assert body["location"] == {
        "address": "120 Main St",
        "city": "Riverbend",
        "state": "CA",
        "postal_code": "96150",
        "latitude": 38.94012,
        "longitude": -119.98231,
        "beat": "B3",
    }
    assert body["units"] == [
        {
            "unit_id": "M12",
            "agency_ori": None,
            "status": "ENROUTE",
            "dispatched_at": None,
            "arrived_at": None,
            "cleared_at": None,
        }
    ]
    assert (body["caller_name"], body["caller_phone"]) == ("Pat Doe", "+15305550142")
    assert body["narrative"] == (
        "[2026-11-24T21:13:01-08:00 ct4@psap.riverbend.example] Two vehicles, one driver trapped."
    )
    # It fits the schema.
    AvroSerializer(SchemaStore(), SOURCE_EVENT[Kind.CAD_INCIDENT])(event, Ctx("t"))


def test_a_status_change_is_a_higher_version_of_the_same_record() -> None:
    first, second = to_event(FIRST), to_event(SECOND)
    assert first["envelope"]["record_id"] == second["envelope"]["record_id"]
    assert second["envelope"]["version"] > first["envelope"]["version"]
    assert first["envelope"]["event_id"] != second["envelope"]["event_id"]
    assert second["body"]["status"] == "ONSCENE"
    assert [u["unit_id"] for u in second["body"]["units"]] == ["M12", "E7"]
    assert to_event(FIRST)["envelope"]["event_id"] == first["envelope"]["event_id"]  # replay


def test_the_same_content_keeps_its_event_id_and_different_content_never_shares_one() -> None:
    doc = json.loads(FIRST)
    reformatted = json.dumps(doc, indent=None).encode()  # whitespace is not content
    assert to_event(reformatted)["envelope"]["event_id"] == to_event(FIRST)["envelope"]["event_id"]
    # A CAD that re-sends a changed incident without moving any timestamp.
    doc["incidentComponent"]["incidentPriorityInternalText"] = "2"
    changed = to_event(json.dumps(doc).encode())
    original = to_event(FIRST)
    assert changed["envelope"]["version"] >> 20 == original["envelope"]["version"] >> 20
    assert changed["envelope"]["version"] != original["envelope"]["version"]
    assert changed["envelope"]["event_id"] != original["envelope"]["event_id"]


def test_a_later_component_stamp_raises_the_version_even_if_the_header_lags() -> None:
    doc = json.loads(FIRST)
    doc["notesComponent"][0]["lastUpdateTimeStamp"] = "2026-11-24T21:30:00-08:00"
    later = to_event(json.dumps(doc).encode())
    assert later["envelope"]["version"] >> 20 == int(
        datetime(2026, 11, 25, 5, 30, tzinfo=UTC).timestamp() * 1000
    )


def test_keys_are_read_whatever_their_case() -> None:
    doc = json.loads(FIRST)
    doc["LastUpdateTimeStamp"] = doc.pop("lastUpdateTimeStamp")
    doc["EIDOVersion"] = doc.pop("eidoVersion")
    assert to_event(json.dumps(doc).encode())["envelope"]["record_id"] == INCIDENT


@pytest.mark.parametrize(
    ("value", "unit", "age", "juvenile"),
    [(15, "ANN", 15, True), (7, "MON", 0, True), (240, "MON", 20, False), (3, "WEE", 0, True)],
)
def test_an_age_is_read_in_its_time_unit(value: int, unit: str, age: int, juvenile: bool) -> None:
    doc = json.loads(FIRST)
    doc["personComponent"] = doc["personComponent"][1:2]  # the patient alone
    measure = doc["personComponent"][0]["ncPersonComponent"]["ageMeasure"][0]
    measure["integerValue"] = [{"value": value}]
    measure["timeUnitCode"] = [{"simpleType": unit}]
    event = to_event(json.dumps(doc).encode())
    assert event["body"]["persons"][0]["age"] == age
    assert ("juvenile" in event["envelope"]["labels"]) is juvenile


def test_an_age_range_reaching_under_18_is_juvenile() -> None:
    doc = json.loads(FIRST)
    doc["personComponent"] = doc["personComponent"][1:2]
    doc["personComponent"][0]["ncPersonComponent"]["ageMeasure"] = [
        {"integerRange": [{"rangeMinimumIntegerValue": [{"value": 16}],
                           "rangeMaximumIntegerValue": [{"value": 20}]}]}
    ]  # fmt: skip
    event = to_event(json.dumps(doc).encode())
    assert event["body"]["persons"][0]["age"] is None
    assert event["envelope"]["labels"] == ["juvenile"]


def test_an_adult_only_incident_is_not_labelled() -> None:
    doc = json.loads(FIRST)
    doc["personComponent"] = [doc["personComponent"][0], doc["personComponent"][2]]
    assert to_event(json.dumps(doc).encode())["envelope"]["labels"] == []


def closed(doc: dict) -> dict:
    doc["incidentComponent"]["incidentStatusCommonRegistryText"] = ["Closed"]
    return doc


def test_closing_sets_closed_at_to_the_status_time() -> None:
    event = to_event(json.dumps(closed(json.loads(FIRST))).encode())
    assert event["body"]["status"] == "CLOSED"
    assert event["body"]["closed_at"] == event["body"]["status_at"]


def edited(**changes: object) -> bytes:
    doc = json.loads(FIRST)
    doc.update(changes)
    return json.dumps(doc).encode()


def without(key: str) -> bytes:
    doc = json.loads(FIRST)
    doc.pop(key)
    return json.dumps(doc).encode()


DTD = (
    '<?xml version="1.0"?><!DOCTYPE presence [<!ENTITY x "boom">]>'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf">&x;</presence>'
)


def with_pidf(xml: str) -> bytes:
    doc = json.loads(FIRST)
    doc["locationComponent"][0]["locationByValue"] = xml
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("raw", "error_type", "reason"),
    [
        (FIRST[:200], "malformed_document", "not JSON: "),
        (b"[1, 2]", "malformed_document", "expected one EIDO JSON object"),
        (b'{"callComponent": [{}]}', "missing_incident_id", "has no $id"),
        (without("$id"), "missing_incident_id", "Incident Tracking Identifier"),
        (
            edited(**{"$id": "urn:emergency:uid:incidentid:0:psap.riverbend.example"})
            .replace(b'"incidentComponent"', b'"_incidentComponent"')
            .replace(b'"callComponent"', b'"_callComponent"'),
            "missing_incident_id",
            "not-an-incident form",
        ),
        (edited(lastUpdateTimeStamp="24/11/2026 9pm"), "bad_timestamp", "is not ISO 8601"),
        (edited(lastUpdateTimeStamp="2026-11-24T21:14:03"), "bad_timestamp", "no UTC offset"),
        (FIRST.replace(b"Doe", b"D\xf6e"), "bad_encoding", "byte 0xf6 at position"),
        (FIRST.replace(b"38.94012", b"138.94012"), "bad_coordinates", "138.94012"),
        (with_pidf(DTD), "bad_location", "DTDs and entities are refused"),
        (with_pidf("<presence>" + "x" * 300_000 + "</presence>"), "bad_location", "KiB"),
        (FIRST.replace(b'"2012"', b'"MMXII"'), "bad_value", "modelYearDate"),
        (FIRST.replace(b'"1984-03-09"', b'"09/03/1984"'), "bad_value", "is not a date"),
    ],
)
def test_malformed_documents_are_rejected_with_a_reason(
    raw: bytes, error_type: str, reason: str
) -> None:
    with pytest.raises(Rejected) as caught:
        to_event(raw)
    assert caught.value.error_type == error_type
    assert reason in caught.value.reason


@pytest.mark.broker
def test_connect_cad_publishes_a_drop_directory_and_dead_letters_the_bad(
    region: Region, tmp_path: Path
) -> None:
    drop = tmp_path / "eido"
    drop.mkdir()
    shutil.copy(DATA / "01-incident-dispatched.json", drop / "0001.json")
    shutil.copy(DATA / "02-incident-on-scene.json", drop / "0002.json")
    (drop / "0003.json").write_bytes(FIRST[:300])  # truncated in transfer
    result = mutualaid_cli(
        region, "connect", "cad", "--agency", region.local, "--source", str(drop)
    )
    assert result.returncode == 0, result.stderr
    assert "read 3  published 2  rejected 1" in result.stdout

    topic = source_topic(region.local, Kind.CAD_INCIDENT)
    decode = AvroDeserializer(SchemaStore(), SOURCE_EVENT[Kind.CAD_INCIDENT])
    records = read_topic(region.settings.bootstrap_servers, topic, lambda r: len(r) >= 2)
    events = [decode(m.value(), Ctx(topic)) for m in records]
    assert {m.key() for m in records} == {f"{region.local}/{INCIDENT}".encode()}
    assert [e["body"]["status"] for e in events] == ["DISPATCHED", "ONSCENE"]  # one partition
    assert [e["envelope"]["source_position"] for e in events] == [
        "file 0001.json",
        "file 0002.json",
    ]
    letters = dead_letters(
        region.settings.bootstrap_servers,
        Stage.PRODUCERS,
        lambda d: d["source_ori"] == region.local,
    )
    assert [(d["error_type"], d["position"]) for d in letters] == [
        ("malformed_document", "file 0003.json")
    ]
    assert letters[0]["source"] == f"{drop / '*.json'} (cad-eido)"
    assert letters[0]["payload"] == FIRST[:300]

    # A second run finds nothing new; a fixed document under the same name is read again.
    (drop / "0003.json").write_bytes(SECOND)
    again = mutualaid_cli(region, "connect", "cad", "--agency", region.local, "--source", str(drop))
    assert "read 1  published 1  rejected 0" in again.stdout, again.stdout + again.stderr
