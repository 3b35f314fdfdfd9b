"""What an index keeps of a shared event, which of two versions of a record wins, and the rows
of the search log: the same for every index backend.

An index is given each event as its agency holds it: with sealed fields opened by the
projector, or still sealed (``index_keep_encrypted``). Sealed fields are then kept as the
ciphertext that arrived (``IndexedRecord.sealed``), and a field the agreement hashed or
``encrypt_indexed`` holds its keyed hash, which searches match but never treat as a word,
a name or a plate.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from mutualaid.crypto import PrivateKeyring
from mutualaid.disclosure import sealed_from_avro
from mutualaid.plates import plate_key

RecordKey = tuple[str, str, str]  # owner ORI, kind, record id
KEY_COLUMNS = ("source_ori", "kind", "record_id")

# What a retention purge clears, as a DELETE would: the tombstone keeps only the version,
# the tier and whom to call.
CONTENT_COLUMNS = (
    "plate",
    "plate_key",
    "plate_state",
    "latitude",
    "longitude",
    "body",
    "incident_number",
    "sealed",
)


@dataclass(frozen=True)
class Person:
    """A person in a record; each field in clear or a keyed hash."""

    first_name: str | None
    last_name: str | None
    dob: str | None
    name: str  # the parts in clear, for trigram matching: a hash's letters are no name


@dataclass(frozen=True)
class IndexedRecord:
    """One row of the records table, whichever store holds it. Field names are column names."""

    source_ori: str
    kind: str
    record_id: str
    version: int
    revision: int  # orders copies of one version: a recall's replacement is higher
    deleted: bool
    occurred_at: datetime
    tier: str
    contact: str | None
    agreement_id: str
    plate: str | None
    plate_key: str | None
    plate_state: str | None
    latitude: float | None
    longitude: float | None
    body: str | None  # JSON
    incident_number: str | None
    retain_until: datetime | None
    sealed: str | None  # JSON: the fields kept encrypted, as they arrived (``kept_sealed``)
    # Not columns of the records table: the free text, the people, and a pointer's match keys
    # (keyed hashes of what it may be found by), kept beside it.
    text: str | None
    persons: tuple[Person, ...]
    match_keys: tuple[str, ...] = ()

    @property
    def key(self) -> RecordKey:
        return self.source_ori, self.kind, self.record_id

    def columns(self) -> dict[str, Any]:
        """The records-table columns, in the order RECORD_COLUMNS names them."""
        return {name: getattr(self, name) for name in RECORD_COLUMNS}


# The key columns first: a backend updates a held row with the others.
RECORD_COLUMNS = tuple(
    f.name for f in fields(IndexedRecord) if f.name not in ("text", "persons", "match_keys")
)


@dataclass(frozen=True)
class Held:
    """The version an index already holds of a record (its row id, to update it in place)."""

    row_id: int
    version: int
    revision: int
    deleted: bool


def indexed(event: dict) -> IndexedRecord:
    """What an index keeps of one shared event."""
    env, disclosure = event["envelope"], event["disclosure"]
    deleted = env["op"] == "DELETE"
    # A pointer says only that the record exists and whom to call: even if a body came with
    # it, the index must not make withheld data searchable.
    body = None if deleted or disclosure["tier"] == "POINTER" else event["body"]
    hashed = set(disclosure["hashed_fields"])
    plate = body.get("plate") if body else None
    latitude, longitude = _location(body) if body else (None, None)
    retain_until = disclosure.get("retain_until")
    sealed = disclosure["sealed"]
    return IndexedRecord(
        source_ori=env["source_ori"],
        kind=env["kind"],
        record_id=env["record_id"],
        version=env["version"],
        revision=disclosure.get("revision", 0),
        deleted=deleted,
        occurred_at=env["occurred_at"].astimezone(UTC),
        tier=disclosure["tier"],
        contact=disclosure["contact"],
        agreement_id=disclosure["agreement_id"],
        plate=plate,
        plate_key=_plate_key(plate, "plate" in hashed),
        plate_state=body.get("plate_state") if body else None,
        latitude=latitude,
        longitude=longitude,
        body=json.dumps(body, default=_json_default) if body else None,
        incident_number=body.get("incident_number") if body else None,
        retain_until=retain_until.astimezone(UTC) if retain_until is not None else None,
        sealed=kept_sealed(sealed, env["event_id"]) if sealed and body else None,
        text=" ".join(_strings(body)) if body else None,
        persons=_persons(body, hashed) if body else (),
        match_keys=tuple(disclosure.get("match_keys") or ())
        if disclosure["tier"] == "POINTER" and not deleted
        else (),
    )


def _plate_key(plate: str | None, hashed: bool) -> str | None:
    """What plate searches look up: the misread-folded plate, or a hashed plate's own hash
    (found exactly or not at all)."""
    if not plate:
        return None
    return plate if hashed else plate_key(plate)


def _persons(body: dict, hashed: set[str]) -> tuple[Person, ...]:
    people = []
    for i, p in enumerate(body.get("persons") or []):
        clear = (
            p.get(part)
            for part in ("first_name", "last_name")
            if f"persons[{i}].{part}" not in hashed
        )
        name = " ".join(n for n in clear if n)
        people.append(Person(p.get("first_name"), p.get("last_name"), p.get("dob"), name))
    return tuple(people)


def kept_sealed(sealed: dict, event_id: str) -> str:
    """Sealed fields as an index keeps them: JSON, bytes in hex, with the event id they are
    bound to (opening needs it)."""
    return json.dumps({"event_id": event_id, **sealed}, default=_json_default)


def sealed_paths(kept: str) -> list[str]:
    """The concrete paths of the fields a kept ``sealed`` holds."""
    return [f["path"] for f in json.loads(kept)["fields"]]


def open_kept(kept: str, keyring: PrivateKeyring) -> dict[str, bytes]:
    """The plaintext of every field a kept ``sealed`` holds; DecryptionError as from crypto."""
    record = json.loads(kept)
    raw = {k: bytes.fromhex(record[k]) for k in ("ephemeral_public", "wrap_nonce", "wrapped_key")}
    fields = [
        {
            "path": f["path"],
            "nonce": bytes.fromhex(f["nonce"]),
            "ciphertext": bytes.fromhex(f["ciphertext"]),
        }
        for f in record["fields"]
    ]
    sealed = sealed_from_avro({**record, **raw, "fields": fields})
    return keyring.open_fields(sealed, event_id=record["event_id"])


def supersedes(record: IndexedRecord, held: Held | IndexedRecord | None) -> bool:
    """Higher versions win; at the same version, the higher revision (a recall's more
    protective copy, or its withdrawal); at the same version and revision, a delete wins over
    the copy. Replaying a topic applies the same copies in the same order: nothing changes."""
    if held is None:
        return True
    if (record.version, record.revision) != (held.version, held.revision):
        return (record.version, record.revision) > (held.version, held.revision)
    return record.deleted and not held.deleted


def latest(
    records: Sequence[IndexedRecord], held: Mapping[RecordKey, Held]
) -> tuple[int, list[IndexedRecord]]:
    """Apply a batch in order against what the index holds: how many events change it, and
    the one record per key to write (a batch may carry several versions of one record)."""
    changed = 0
    winners: dict[RecordKey, IndexedRecord] = {}
    for record in records:
        if supersedes(record, winners.get(record.key) or held.get(record.key)):
            winners[record.key] = record
            changed += 1
    return changed, list(winners.values())


@dataclass(frozen=True)
class Layout:
    """How an index holds what it holds. ``epoch`` names the projector's consumer group, so a
    new or emptied index has no committed offsets and is rebuilt from the topics."""

    epoch: str
    keeps_sealed: bool


def new_epoch() -> str:
    return secrets.token_hex(4)


@dataclass(frozen=True)
class LoggedSearch:
    """One row of an agency's search log (its outbox for ``audit.search``)."""

    id: int
    at: datetime
    user: str
    reason: str
    query_json: str
    result_count: int
    result_owners: tuple[str, ...] = ()


def search_log_entry(user: str, reason: str, query: dict) -> tuple[str, str, str]:
    """(user, reason, query as JSON) for the log; refused without a user and a reason."""
    if not user.strip() or not reason.strip():
        raise ValueError("a search is logged only with a user and a reason")
    return user, reason, json.dumps(query, default=str)


def owners_of(result_owners: Iterable[str]) -> tuple[str, ...]:
    """The owners a search's results came from, as its log keeps them: each once, sorted."""
    return tuple(sorted(set(result_owners)))


def _location(body: dict) -> tuple[float | None, float | None]:
    where = body.get("location") if isinstance(body.get("location"), dict) else body
    return where.get("latitude"), where.get("longitude")


def _strings(value: Any) -> list[str]:
    """Every string inside a body, for free-text search whatever the kind's schema."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot store {type(value).__name__} in an index body")
