"""What the policy tests share: the demo registry's agencies, events, agreement files, and the
router's outputs decoded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from mutualaid.agencies import load_registry
from mutualaid.events import new_envelope
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    SHARED_EVENT,
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import Kind, source_topic
from streams.router import Consumed, Output

STORE = SchemaStore()
REGISTRY = load_registry(Path("deploy/agencies.yaml"))
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RIVERBEND, MESA, DESERT, FEDERAL = "CA0990100", "CA0990200", "NV0990300", "DC0990400"


def agreement(id: str, **extra: object) -> dict:
    return {
        "id": id,
        "version": 1,
        "owner": RIVERBEND,
        "kinds": ["rms.record"],
        "partners": [MESA],
        **extra,
    }


def write_agreements(folder: Path, files: dict[str, list[dict]]) -> Path:
    """One agreement file per name, in the order given (to show that order does not count)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, agreements in files.items():
        (folder / name).write_text(yaml.safe_dump({"agreements": agreements}))
    return folder


def rms_event(
    owner: str = RIVERBEND,
    labels: tuple[str, ...] = (),
    *,
    record_id: str = "RB26-1",
    ssn: str = "123-45-6789",
    narrative: str = "informant CI-7 says the car is at 18 Pine Ct",
    at: datetime = NOW,
) -> dict:
    envelope = new_envelope(
        source_ori=owner,
        source_system="test",
        kind=Kind.RMS_RECORD,
        record_id=record_id,
        version=1,
        occurred_at=at - timedelta(hours=1),
        labels=list(labels),
        now=at,
    )
    person = {
        "person_id": "P1",
        "role": "ARRESTEE",
        "last_name": "Doe",
        "first_name": "Sam",
        "dob": "1990-05-01",
        "ssn": ssn,
        "phone": "555-0101",
    }
    body = {"incident_number": record_id, "persons": [person], "narrative": narrative}
    return {"envelope": envelope, "body": body}


def alpr_event(owner: str = RIVERBEND, record_id: str = "A-1", at: datetime = NOW) -> dict:
    envelope = new_envelope(
        source_ori=owner,
        source_system="test",
        kind=Kind.ALPR_READ,
        record_id=record_id,
        version=1,
        occurred_at=at,
        now=at,
    )
    return {
        "envelope": envelope,
        "body": {"plate": "7ABC123", "latitude": 38.94, "longitude": -119.98},
    }


def consumed(event: dict) -> Consumed:
    """The event as the router consumes it from its owner's source topic."""
    kind = Kind(event["envelope"]["kind"])
    topic = source_topic(event["envelope"]["source_ori"], kind)
    value = AvroSerializer(STORE, SOURCE_EVENT[kind])(event, SerializationContext(topic))
    return Consumed(topic, 0, 0, None, value)


def decoded(outputs: list[Output]) -> tuple[dict[str, dict], dict[str, dict]]:
    """(shared event per partner ORI, audit record per partner ORI) of one route() call."""
    shares, audits = {}, {}
    for o in outputs:
        if o.topic == "audit.dissemination":
            audit = AvroDeserializer(STORE, AUDIT_DISSEMINATION_SCHEMA)(
                o.value, SerializationContext(o.topic)
            )
            audits[audit["partner_ori"]] = audit
        elif o.topic.startswith("share.") and o.value is not None:
            kind = Kind(o.topic.split(".", 2)[2])
            shared = AvroDeserializer(STORE, SHARED_EVENT[kind])(
                o.value, SerializationContext(o.topic)
            )
            shares[shared["disclosure"]["partner_ori"]] = shared
    return shares, audits
