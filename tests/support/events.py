"""Events and agreements as tests build them: one builder per kind of record, and the router's
disclosure of an event without a broker."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mutualaid.agencies import load_registry
from mutualaid.crypto import newest_public_key
from mutualaid.disclosure import disclose
from mutualaid.events import Op, new_envelope
from mutualaid.policy import Agreement, Decision
from mutualaid.serde import SchemaStore
from mutualaid.topics import Kind
from producers.alpr import record_id as alpr_record_id

# The demo registry's agencies (deploy/agencies.yaml), and a fixed time for tests without a broker.
RIVERBEND, MESA, DESERT, FEDERAL = "CA0990100", "CA0990200", "NV0990300", "DC0990400"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SSN = "123-45-6789"


def agreement(id: str, **extra: object) -> dict:
    """An agreement as its YAML file holds it: Riverbend's RMS records to Mesa, unless ``extra``
    says otherwise."""
    return {
        "id": id,
        "version": 1,
        "owner": RIVERBEND,
        "kinds": ["rms.record"],
        "partners": [MESA],
        **extra,
    }


def rms_event(
    owner: str = RIVERBEND,
    labels: tuple[str, ...] | list[str] = (),
    *,
    record_id: str = "RB26-1",
    version: int = 1,
    ssn: str = SSN,
    person: dict | None = None,
    narrative: str = "informant CI-7 says the car is at 18 Pine Ct",
    at: datetime = NOW,
) -> dict:
    """An RMS report, occurred an hour before ``at``, naming an adult arrestee with an SSN (or
    ``person``, with ``ssn`` added)."""
    envelope = new_envelope(
        source_ori=owner,
        source_system="test",
        kind=Kind.RMS_RECORD,
        record_id=record_id,
        version=version,
        occurred_at=at - timedelta(hours=1),
        labels=list(labels),
        now=at,
    )
    arrestee = person or {
        "person_id": "P1",
        "role": "ARRESTEE",
        "last_name": "Doe",
        "first_name": "Sam",
        "dob": "1990-05-01",
        "phone": "555-0101",
    }
    body = {
        "incident_number": record_id,
        "persons": [arrestee | {"ssn": ssn}],
        "narrative": narrative,
    }
    return {"envelope": envelope, "body": body}


def alpr_event(
    owner: str = RIVERBEND,
    record_id: str = "A-1",
    plate: str = "7ABC123",
    where: tuple[float, float] | None = (38.94, -119.98),
    *,
    at: datetime = NOW,
    version: int = 1,
    op: Op = "UPSERT",
    labels: tuple[str, ...] | list[str] = (),
    source_system: str = "test",
    **body: object,
) -> dict:
    """A plate read taken at ``at`` (and ingested then), ``where`` (None: a read without a
    position); ``body`` adds or overrides fields. A DELETE carries no body."""
    envelope = new_envelope(
        source_ori=owner,
        source_system=source_system,
        kind=Kind.ALPR_READ,
        record_id=record_id,
        version=version,
        occurred_at=at,
        op=op,
        labels=list(labels),
        now=at,
    )
    position = {} if where is None else {"latitude": where[0], "longitude": where[1]}
    fields = {"plate": plate, **position, **body}
    return {"envelope": envelope, "body": None if op == "DELETE" else fields}


def shared_by_router(
    event: dict, partner: str, fields: dict[str, str], public_keys_dir: Path, hash_key: bytes
) -> dict:
    """``event`` as the router shares it with ``partner`` under an agreement with these field
    actions (sealed fields left sealed): the real disclosure code, without a broker."""
    kind = event["envelope"]["kind"]
    agreement = Agreement(
        id="a", version=1, owner=event["envelope"]["source_ori"], partners=[partner],
        kinds=[kind], fields=fields,
    )  # fmt: skip
    schema = {
        "rms.record": "mutualaid.rms.Record",
        "alpr.read": "mutualaid.alpr.Read",
        "cad.incident": "mutualaid.cad.Incident",
    }[kind]
    shared, _ = disclose(
        {"envelope": event["envelope"], "body": event["body"]},
        Decision.under(partner, agreement, {}, "SHARED"),
        agreement.actions_for(Kind(kind), SchemaStore().get(schema)),
        registry=load_registry(Path("deploy/agencies.yaml")),
        public_key=newest_public_key(partner, public_keys_dir),
        hash_key=hash_key,
    )
    return shared


def export_record_ids(export: Path) -> list[str]:
    """The record ids the ALPR connector gives the reads of a reference-layout CSV export
    (``producers.samples``): the camera's id and the read id."""
    with export.open(newline="") as rows:
        return [alpr_record_id(r["camera_id"], r["read_id"]) for r in csv.DictReader(rows)]
