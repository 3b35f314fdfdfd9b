"""EIDO conformance: our own NENA EIDO documents, valid against NENA's schema, through the real
CAD connector on the real broker.

The fixtures in tests/data/eido/ are written for this project (not copies of NENA's samples):
an incident dispatched and then on scene (two versions), a call-transfer EIDO without an
incident component, and the later EIDO that makes that call an incident. Together they carry a
PIDF-LO civic address with a geodetic point, a circle with confidence, persons (one of them
15), a vehicle, notes, units and a disposition.

NENA's openapi.yaml is not vendored (NENA911/EIDO-JSON states no licence), so they are validated
against tests/data/eido/eido-subset.schema.json, which restates its rules for the components
read here (see that file's description).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from mutualaid.serde import DEAD_LETTER, AvroDeserializer, SchemaStore, SerializationContext
from mutualaid.topics import Kind, Stage, dlq_topic
from support.brokers import read_topic, source_events
from support.processes import mutualaid_cli
from support.regions import Region

DATA = Path(__file__).parent / "data" / "eido"
FIXTURES = sorted(DATA.glob("0*.json"))
SCHEMA = json.loads((DATA / "eido-subset.schema.json").read_text())
INCIDENT_A = "urn:emergency:uid:incidentid:7c1e09ab44:psap.riverbend.example"
INCIDENT_B = "urn:emergency:uid:incidentid:b5d2e81f07:psap.riverbend.example"
CALL_B = "urn:emergency:uid:callid:b5d2e81f07:bcf.riverbend.example"


def validator() -> jsonschema.Draft202012Validator:
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    # Without rfc3339-validator jsonschema skips date-time silently: refuse to pretend.
    assert "date-time" in checker.checkers, "pip install rfc3339-validator"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    return jsonschema.Draft202012Validator(SCHEMA, format_checker=checker)


def errors(doc: dict) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(doc)
    ]


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_fixtures_follow_nenas_schema(path: Path) -> None:
    assert errors(json.loads(path.read_text())) == []


def _broken(change) -> dict:
    doc = json.loads(FIXTURES[0].read_text())
    change(doc)
    return doc


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.pop("eidoVersion"), "'eidoVersion' is a required property"),
        (
            lambda d: d["personComponent"][0].pop("personIncidentRoleRegistryText"),
            "'personIncidentRoleRegistryText' is a required property",
        ),
        (
            lambda d: d["callComponent"][0].update(direction="sideways"),
            "'sideways' is not one of",
        ),
        (
            lambda d: d["notesComponent"][0].update(lastUpdateTimeStamp="yesterday"),
            "'yesterday' is not a 'date-time'",
        ),
        (
            lambda d: d["vehicleComponent"][0].update(vehicleRelationshipType=[]),
            "should be non-empty",
        ),
        (lambda d: d.update(incidentComponent=[d["incidentComponent"]]), "is not of type 'object'"),
        (
            lambda d: d.update(
                linkComponent=[
                    d["incidentComponent"]
                    | {"incidentTrackingIdentifier": "x", "linkDirectionCode": "SIBLING"}
                ]
            ),
            "'SIBLING' is not one of",
        ),
    ],
)
def test_the_schema_refuses_what_nena_requires_otherwise(change, expected: str) -> None:
    found = errors(_broken(change))
    assert any(expected in e for e in found), found


def _bad_documents(drop: Path) -> dict[str, str]:
    """Bad documents written into the drop directory: file name -> expected error type."""
    good = json.loads(FIXTURES[0].read_text())
    no_id = {k: v for k, v in good.items() if k != "$id"}
    entity = json.loads(json.dumps(good))
    entity["locationComponent"][0]["locationByValue"] = (
        '<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e SYSTEM "file:///etc/passwd">]><p>&e;</p>'
    )
    local_time = json.loads(json.dumps(good))
    local_time["lastUpdateTimeStamp"] = "2026-11-24T21:14:03"
    bad = {
        "90-no-tracking-id.json": (json.dumps(no_id), "missing_incident_id"),
        "91-pidf-entity.json": (json.dumps(entity), "bad_location"),
        "92-no-utc-offset.json": (json.dumps(local_time), "bad_timestamp"),
        "93-truncated.json": (FIXTURES[0].read_text()[:400], "malformed_document"),
    }
    for name, (content, _) in bad.items():
        (drop / name).write_text(content)
    return {name: error for name, (_, error) in bad.items()}


@pytest.mark.broker
def test_conformance_documents_publish_what_they_hold(region: Region, tmp_path: Path) -> None:
    drop = tmp_path / "eido"
    drop.mkdir()
    for path in FIXTURES:
        shutil.copy(path, drop / path.name)
    bad = _bad_documents(drop)
    result = mutualaid_cli(
        region, "connect", "cad", "--agency", region.local, "--source", str(drop)
    )
    assert result.returncode == 0, result.stderr
    assert f"read {len(FIXTURES) + len(bad)}  published 4  rejected {len(bad)}" in result.stdout

    events = source_events(region.settings.bootstrap_servers, region.local, Kind.CAD_INCIDENT, 4)
    by_file = {e["envelope"]["source_position"].removeprefix("file "): e for e in events}
    assert sorted(by_file) == [p.name for p in FIXTURES]
    assert {e["envelope"]["op"] for e in events} == {"UPSERT"}
    dispatched, on_scene = (
        by_file["01-incident-dispatched.json"],
        by_file["02-incident-on-scene.json"],
    )
    transfer, incident = (
        by_file["03-call-transfer.json"],
        by_file["04-transfer-becomes-incident.json"],
    )

    # Record ids and version order: an update, and a call transfer that becomes an incident.
    assert {dispatched["envelope"]["record_id"], on_scene["envelope"]["record_id"]} == {INCIDENT_A}
    assert {transfer["envelope"]["record_id"], incident["envelope"]["record_id"]} == {INCIDENT_B}
    assert dispatched["envelope"]["version"] < on_scene["envelope"]["version"]
    assert transfer["envelope"]["version"] < incident["envelope"]["version"]

    # The incident component.
    a, b = dispatched["body"], on_scene["body"]
    assert (a["incident_type"], a["incident_type_description"]) == (
        "TA",
        "Traffic accident with injuries",
    )
    assert (a["priority"], a["common_priority"], a["incident_number"]) == ("1", 1, "RB-26-001234")
    assert (a["status"], b["status"], b["local_status"]) == ("DISPATCHED", "ONSCENE", "ONSC")
    assert b["status_at"] == datetime(2026, 11, 25, 5, 19, 44, 500000, tzinfo=UTC)

    # PIDF-LO: a civic address and a geodetic point in one location.
    assert a["location"] == {
        "address": "120 Main St",
        "city": "Riverbend",
        "state": "CA",
        "postal_code": "96150",
        "latitude": 38.94012,
        "longitude": -119.98231,
        "beat": "B3",
    }
    [where] = a["locations"]
    assert (where["type"], where["method"], where["problem"]) == ("Incident", "GPS", None)
    assert {k: v for k, v in where["civic"].items() if v} == {
        "country": "US",
        "a1": "CA",
        "a2": "El Dorado",
        "a3": "Riverbend",
        "hno": "120",
        "rd": "Main",
        "sts": "St",
        "pc": "96150",
    }
    assert (where["point"]["shape"], where["point"]["srs"]) == (
        "Point",
        "urn:ogc:def:crs:EPSG::4326",
    )

    # Persons, with the 15-year-old making the record juvenile; vehicles; notes; units.
    names = [(p["first_name"], p["last_name"], p["dob"], p["age"]) for p in a["persons"]]
    assert names == [
        ("Pat", "Doe", "1984-03-09", None),
        ("Sam", "Rossi", None, 15),
        ("Lena", "Okafor", "1990-07-21", None),
    ]
    assert a["persons"][0]["roles"] == ["Caller", "Witness"]
    assert (a["caller_name"], a["caller_phone"]) == ("Pat Doe", "+15305550142")
    assert dispatched["envelope"]["labels"] == ["juvenile"]
    [vehicle] = a["vehicles"]
    assert (vehicle["plate"], vehicle["plate_state"], vehicle["vin"]) == (
        "7ABC123",
        "CA",
        "4T1BF1FK5CU123456",
    )
    assert (vehicle["make"], vehicle["model"], vehicle["year"], vehicle["color"]) == (
        "Toyota",
        "Camry",
        2012,
        "Silver",
    )
    assert [n["text"] for n in b["notes"]] == [
        "Two vehicles, one driver trapped.",
        "M12 on scene; extrication under way.",
    ]
    assert [(u["unit_id"], u["status"]) for u in b["units"]] == [
        ("M12", "ONSCENE"),
        ("E7", "ENROUTE"),
    ]

    # The call transfer: no incident yet, but the call, caller and caller's location are there.
    t = transfer["body"]
    assert (t["incident_type"], t["status"], t["incident_tracking_id"]) == (None, None, INCIDENT_B)
    assert t["call_ids"] == [CALL_B]
    assert (t["persons"][0]["full_name"], t["caller_phone"]) == ("Wei Kim", "+15305550199")
    circle = t["locations"][0]["point"]
    assert (circle["shape"], circle["radius_m"], circle["confidence"]) == ("Circle", 35.0, 90)
    assert (t["location"]["latitude"], t["location"]["longitude"]) == (38.91207, -119.94416)
    assert transfer["envelope"]["labels"] == []
    # The caller's comment, sent as RFC 7852 additional data, is a note.
    assert [n["text"] for n in t["notes"]] == ["Caller reports a white van circling the lot."]

    # ...and the EIDO that makes it an incident, located where the incident names.
    i = incident["body"]
    assert (i["incident_type"], i["status"], i["disposition"]) == ("SUSP", "CLOSED", "GOA")
    assert i["closed_at"] == i["status_at"]
    assert (i["location"]["address"], i["location"]["latitude"]) == ("2210 Lake Pkwy", None)
    assert i["call_ids"] == [CALL_B]
    assert i["links"] == [
        {
            "incident_tracking_id": INCIDENT_A,
            "relation": "RELATED",
            "reason": "Van matches the one seen at the crash",
        }
    ]

    # Only the bad documents were dead-lettered, each with its reason.
    topic = dlq_topic(Stage.PRODUCERS)
    decode = AvroDeserializer(SchemaStore(), DEAD_LETTER)

    def ours(records: list) -> list[dict]:
        letters = (decode(m.value(), SerializationContext(topic)) for m in records)
        return [d for d in letters if d["source_ori"] == region.local]

    letters = ours(
        read_topic(region.settings.bootstrap_servers, topic, lambda r: len(ours(r)) >= len(bad))
    )
    assert {d["position"].removeprefix("file "): d["error_type"] for d in letters} == bad
    reasons = {d["position"].removeprefix("file "): d["reason"] for d in letters}
    assert "DTDs and entities are refused" in reasons["91-pidf-entity.json"]
    assert "no UTC offset" in reasons["92-no-utc-offset.json"]
