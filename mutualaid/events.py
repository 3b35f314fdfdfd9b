"""The envelope every event carries, and the identities derived from it.

Events travel as plain dicts shaped like their Avro schema (what fastavro reads and writes);
these helpers are the one place their identities are computed, so a replay of the same source
record yields the same event id and key everywhere.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypedDict

from mutualaid.topics import Kind, check_ori

# A fixed namespace: event ids must be the same on every machine and every replay.
EVENT_NAMESPACE = uuid.UUID("6b1f3c2e-6a0e-5d7b-9a57-8e0f4f1c2d10")

Op = Literal["UPSERT", "DELETE"]


class Envelope(TypedDict):
    event_id: str
    source_ori: str
    source_system: str
    kind: str
    op: Op
    record_id: str
    version: int
    occurred_at: datetime
    ingested_at: datetime
    labels: list[str]
    source_position: str | None


class Event(TypedDict):
    """A source event, as it is on src.<ori>.<kind>: the envelope, and the body (None when the
    event deletes the record)."""

    envelope: Envelope
    body: dict[str, Any] | None


class SharedEvent(Event):
    """An event as a partner receives it on share.<ori>.<kind>: how it was disclosed, too."""

    disclosure: dict[str, Any]


def event_id(source_ori: str, kind: Kind, record_id: str, version: int) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{source_ori}/{kind}/{record_id}/{version}"))


def new_envelope(
    *,
    source_ori: str,
    source_system: str,
    kind: Kind,
    record_id: str,
    version: int,
    occurred_at: datetime,
    op: Op = "UPSERT",
    labels: list[str] | None = None,
    source_position: str | None = None,
    now: datetime | None = None,
) -> Envelope:
    """An envelope with a deterministic event id; ``now`` is injectable for tests."""
    ori = check_ori(source_ori)
    return Envelope(
        event_id=event_id(ori, kind, record_id, version),
        source_ori=ori,
        source_system=source_system,
        kind=str(kind),
        op=op,
        record_id=record_id,
        version=version,
        occurred_at=occurred_at,
        ingested_at=now or datetime.now(UTC),
        labels=sorted(set(labels or [])),
        source_position=source_position,
    )


def record_key(envelope: Mapping[str, Any]) -> bytes:
    """The Kafka key: every version of one record lands in one partition, in order.

    The owner's ORI is part of it because partner topics mix records from many owners, whose
    record ids may collide.
    """
    return f"{envelope['source_ori']}/{envelope['record_id']}".encode()


def event_from_json(path: Path) -> dict[str, Any]:
    """An event written by hand as JSON (for `agreements explain`), times as ISO 8601."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        envelope = data["envelope"]
        for name in ("occurred_at", "ingested_at"):
            value = envelope.get(name) or datetime.now(UTC).isoformat()
            parsed = datetime.fromisoformat(value)
            envelope[name] = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        envelope["source_ori"] = check_ori(envelope["source_ori"])
        envelope.setdefault("labels", [])
        Kind(envelope["kind"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"not an event ({type(exc).__name__}: {exc}); expected JSON with envelope.source_ori, "
            "envelope.kind, envelope.occurred_at (ISO 8601), envelope.labels and a body"
        ) from None
    data.setdefault("body", None)
    return data
