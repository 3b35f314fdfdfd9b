"""Every event schema in avro/ round-trips a realistic record, and a sparse one."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from fastavro.schema import load_schema

from mutualaid.events import new_envelope
from mutualaid.serde import (
    ALERT_ACK,
    AVRO_DIR,
    HIT_ALERT,
    SHARED_EVENT,
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import Kind

AT = datetime(2026, 11, 24, 21, 14, 3, tzinfo=UTC)
LOCATION = {
    "address": "1200 Lake Pkwy",
    "city": "Riverbend",
    "state": "CA",
    "postal_code": "96150",
    "latitude": 38.94,
    "longitude": -119.98,
    "beat": "B3",
}
# The PIDF-LO civic address elements, as mutualaid.cad.CivicAddress names them.
CIVIC_KEYS = [
    "country",
    "a1",
    "a2",
    "a3",
    "a4",
    "a5",
    "a6",
    "prm",
    "prd",
    "rd",
    "sts",
    "pod",
    "pom",
    "rdsec",
    "rdbr",
    "rdsubbr",
    "hno",
    "hns",
    "lmk",
    "loc",
    "flr",
    "nam",
    "pc",
    "bld",
    "unit",
    "room",
    "seat",
    "plc",
    "pcn",
    "pobox",
    "addcode",
]
BODIES = {
    Kind.ALPR_READ: {
        "plate": "7ABC123",
        "plate_state": "CA",
        "confidence": 0.9375,
        "camera_id": "CA100-CAM01",
        "camera_name": "Hwy 50 & Park Ave",
        "latitude": 38.94,
        "longitude": -119.98,
        "heading": "E",
        "vehicle_make": "Toyota",
        "vehicle_model": "Camry",
        "vehicle_color": "Silver",
        "image_ref": "https://alpr.riverbend.example/reads/1",
    },
    Kind.CAD_INCIDENT: {
        "incident_number": "RB26-0112233",
        "incident_type": "10851",
        "incident_type_description": "Stolen vehicle",
        "priority": "2",
        "status": "DISPATCHED",
        "status_at": AT,
        "reported_at": AT,
        "closed_at": None,
        "location": LOCATION,
        "units": [
            {
                "unit_id": "3A12",
                "agency_ori": "CA0990100",
                "status": "ENROUTE",
                "dispatched_at": AT,
                "arrived_at": None,
                "cleared_at": None,
            }
        ],
        "caller_name": "Jordan Ellis",
        "caller_phone": "555-0142",
        "narrative": "RP reports silver Camry taken from driveway overnight",
        "disposition": None,
        "incident_tracking_id": "urn:emergency:uid:incidentid:0a1b2c:psap.riverbend.example",
        "local_incident_type": "10851",
        "common_priority": 2,
        "local_status": "DISP",
        "call_ids": ["urn:emergency:uid:callid:0a1b2c:bcf.riverbend.example"],
        "locations": [
            {
                "location_id": "loc-1",
                "type": "Incident",
                "description": None,
                "reference_url": None,
                "civic": {
                    **dict.fromkeys(CIVIC_KEYS),
                    "country": "US",
                    "a1": "CA",
                    "a3": "Riverbend",
                    "hno": "1200",
                    "rd": "Lake",
                    "sts": "Pkwy",
                },
                "point": {
                    "latitude": 38.94,
                    "longitude": -119.98,
                    "altitude_m": None,
                    "shape": "Circle",
                    "srs": "urn:ogc:def:crs:EPSG::4326",
                    "radius_m": 35.0,
                    "semi_major_m": None,
                    "semi_minor_m": None,
                    "vertical_m": None,
                    "orientation_deg": None,
                    "confidence": 90,
                },
                "method": "GPS",
                "problem": None,
            }
        ],
        "persons": [
            {
                "person_id": "p-1",
                "roles": ["Caller"],
                "first_name": "Jordan",
                "middle_name": None,
                "last_name": "Ellis",
                "full_name": None,
                "dob": "1984-03-09",
                "age": None,
                "sex": "F",
                "race": None,
                "phone": "555-0142",
                "call_ids": [],
            }
        ],
        "vehicles": [
            {
                "vehicle_id": "v-1",
                "relationships": ["Stolen"],
                "plate": "7ABC123",
                "plate_state": "CA",
                "vin": "4T1BF1FK5CU123456",
                "make": "Toyota",
                "model": "Camry",
                "year": 2012,
                "color": "Silver",
                "style": "4D",
                "description": None,
            }
        ],
        "notes": [{"note_id": "n-1", "at": AT, "author": "ct4", "text": "Taken overnight."}],
        "links": [
            {
                "incident_tracking_id": "urn:emergency:uid:incidentid:9f:psap.riverbend.example",
                "relation": "REPLACED",
                "reason": None,
            }
        ],
    },
    Kind.RMS_RECORD: {
        "incident_number": "RB26-004411",
        "report_type": "GROUP A INCIDENT REPORT",
        "report_action": "R",
        "report_date": "2026-11-24",
        "incident_date": "2026-11-23",
        "incident_hour": 23,
        "incident_date_is_report_date": False,
        "location": LOCATION,
        "cleared_exceptionally": "N",
        "cleared_exceptionally_date": None,
        "cargo_theft": False,
        "status": "OPEN",
        "offenses": [
            {
                "nibrs_code": "240",
                "description": "Motor vehicle theft",
                "attempted_completed": "C",
                "location_type": "20",
                "weapon": None,
                "weapons": [],
                "suspected_of_using": ["N"],
                "bias_motivations": ["NONE"],
                "premises_entered": None,
                "entry_method": "F",
                "criminal_activities": [],
            }
        ],
        "persons": [
            {
                "person_id": "P1",
                "role": "VICTIM",
                "last_name": "Ellis",
                "first_name": "Jordan",
                "middle_name": None,
                "dob": "1984-03-09",
                "age": 42,
                "age_min": 42,
                "age_max": 42,
                "age_code": None,
                "sex": "F",
                "race": "W",
                "ethnicity": "N",
                "ssn": "123-45-6789",
                "drivers_license": "D1234567",
                "drivers_license_state": "CA",
                "address": "18 Pine Ct",
                "phone": "555-0142",
                "resident_status": "R",
                "victim_type": "I",
                "officer_activity": None,
                "officer_assignment": None,
                "officer_other_ori": None,
                "injuries": ["N"],
                "circumstances": [],
                "justifiable_homicide_circumstance": None,
                "offenses": ["240"],
                "relationships": [{"offender_id": "1", "relationship": "Stranger"}],
            }
        ],
        "vehicles": [
            {
                "plate": "7ABC123",
                "plate_state": "CA",
                "vin": "4T1BF1FK5CU123456",
                "make": "Toyota",
                "model": "Camry",
                "year": 2012,
                "color": "Silver",
                "style": "4D",
                "role": "STOLEN",
            }
        ],
        "property": [
            {
                "description": "2012 Toyota Camry",
                "loss_type": "STOLEN",
                "status_description": None,
                "value_usd": 9500.0,
                "category": "03",
                "recovered_date": None,
                "quantity": 1,
                "drug_type": None,
                "drug_measures": [],
            }
        ],
        "arrests": [
            {
                "arrestee_id": "1",
                "arrest_number": "RB26-A0042",
                "arrest_date": "2026-11-24",
                "arrest_type": "T",
                "multiple_arrestee_indicator": "N",
                "charge": "240",
                "charge_description": "Motor vehicle theft",
                "armed_with": ["01"],
                "juvenile_disposition": None,
                "clears_incident": True,
            }
        ],
        "narrative": "Vehicle taken from residence between 2300 and 0600.",
    },
    Kind.HOTLIST_ENTRY: {
        "plate": "7ABC123",
        "plate_state": "CA",
        "plate_type": "PC",
        "reason": "stolen_vehicle",
        "ncic_number": "V123456789",
        "entered_at": AT,
        "expires_at": AT + timedelta(days=90),
        "vehicle_year": 2012,
        "vehicle_make": "TOYT",
        "vehicle_model": "CAM",
        "vehicle_color": "SIL",
        "caution": None,
        "notes": "Taken from driveway overnight.",
    },
}


def envelope(kind: Kind) -> dict:
    return new_envelope(
        source_ori="CA0990100",
        source_system="test",
        kind=kind,
        record_id="r1",
        version=2,
        occurred_at=AT,
        labels=["victim"],
        now=AT,
    )


DISCLOSURE = {
    "partner_ori": "CA0990200",
    "agreement_id": "a",
    "agreement_version": 1,
    "tier": "FULL",
    "contact": None,
    "withheld_fields": [],
    "masked_fields": [],
    "hashed_fields": [],
    "sealed": None,
    "retain_until": None,
    "revision": 3,
    "match_keys": ["c0ffee"],
}


def cases() -> list[tuple[str, dict]]:
    out = []
    for kind, body in BODIES.items():
        out.append((SOURCE_EVENT[kind], {"envelope": envelope(kind), "body": body}))
        if kind not in SHARED_EVENT:
            continue
        out.append(
            (
                SHARED_EVENT[kind],
                {"envelope": envelope(kind), "disclosure": DISCLOSURE, "body": body},
            )
        )
    return [*out, (HIT_ALERT, HIT), (ALERT_ACK, ACK)]


HIT = {
    "alert_id": "9a4d5c1e-0000-5000-8000-000000000001",
    "center_ori": "CA0990200",
    "match": "EXACT",
    "read_event_id": "e1",
    "read_source_ori": "CA0990100",
    "read_record_id": "r1",
    "read_occurred_at": AT,
    "read_ingested_at": AT,
    "read": BODIES[Kind.ALPR_READ],
    "entry_owner_ori": "CA0990200",
    "entry_id": "V123456789",
    "entry": BODIES[Kind.HOTLIST_ENTRY],
    "withheld_fields": ["read.image_ref"],
    "matched_at": AT,
}
ACK = {
    "alert_id": HIT["alert_id"],
    "center_ori": "CA0990200",
    "user": "dispatcher1",
    "acknowledged_at": AT,
    "note": "unit 12 en route",
}


@pytest.mark.parametrize(("name", "event"), cases(), ids=[c[0] for c in cases()])
def test_realistic_event_round_trips(name: str, event: dict) -> None:
    store = SchemaStore()
    ctx = SerializationContext("t")
    assert AvroDeserializer(store, name)(AvroSerializer(store, name)(event, ctx), ctx) == event


@pytest.mark.parametrize("kind", list(Kind))
def test_sparse_body_decodes_with_nulls_and_empty_lists(kind: Kind) -> None:
    store = SchemaStore()
    ctx = SerializationContext("t")
    first = next(iter(BODIES[kind]))
    event = {"envelope": envelope(kind), "body": {first: BODIES[kind][first]}}
    decoded = AvroDeserializer(store, SOURCE_EVENT[kind])(
        AvroSerializer(store, SOURCE_EVENT[kind])(event, ctx), ctx
    )
    body = decoded["body"]
    assert body[first] == BODIES[kind][first]
    assert all(v in (None, []) for k, v in body.items() if k != first)


# Anyone holding only avro/ (another language, a Kafka tool) must be able to load each file by
# path: named references resolve from sibling files called <namespace>.<Name>.avsc.
@pytest.mark.parametrize(("name", "event"), cases(), ids=[c[0] for c in cases()])
def test_each_file_loads_alone_and_round_trips_with_plain_fastavro(name: str, event: dict) -> None:
    schema = load_schema(str(AVRO_DIR / f"{name}.avsc"))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, event)
    buf.seek(0)
    assert fastavro.schemaless_reader(buf, schema, schema) == event


BODY = {kind: SOURCE_EVENT[kind].removesuffix("Event") for kind in Kind}


def _required_leaves(schema: Any, path: str, out: list[str]) -> None:
    for field in schema["fields"]:
        where = f"{path}.{field['name']}"
        t = field["type"]
        if isinstance(t, dict) and t.get("type") == "array":
            if field.get("default") != []:
                out.append(where)
            if isinstance(t["items"], dict) and t["items"].get("type") == "record":
                _required_leaves(t["items"], f"{where}[]", out)
            continue
        if not (isinstance(t, list) and t[0] == "null" and field.get("default", 0) is None):
            out.append(where)
            continue
        for branch in t[1:]:
            if isinstance(branch, dict) and branch.get("type") == "record":
                _required_leaves(branch, where, out)


@pytest.mark.parametrize("kind", list(Kind))
def test_every_body_field_may_be_withheld(kind: Kind) -> None:
    """An agreement may drop any field: every leaf is ["null", T] = null, every array = []."""
    required: list[str] = []
    _required_leaves(load_schema(str(AVRO_DIR / f"{BODY[kind]}.avsc")), BODY[kind], required)
    assert required == []
