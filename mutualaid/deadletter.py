"""Dead letters: an input a stage could not handle, kept with why and where it came from.

Every stage builds them with ``dead_letter`` and counts them here; how they are written is the
stage's own business (its producer), so the commit rules of each stage stay in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime

from confluent_kafka import Message

from mutualaid.metrics import DEAD_LETTERS
from mutualaid.topics import Stage

# Well under the 1 MB a Kafka broker takes per record by default, with room for the rest.
MAX_PAYLOAD_BYTES = 256 * 1024


def dead_letter(
    *,
    stage: Stage,
    reason: str,
    error_type: str,
    source: str,
    position: str,
    payload: bytes | None,
    key: bytes | None = None,
    source_ori: str | None = None,
    now: datetime | None = None,
) -> dict:
    """A ``mutualaid.DeadLetter`` record, counted in Prometheus by stage and error type.

    A payload past MAX_PAYLOAD_BYTES is cut to its start, and the reason says so: the whole of
    it could make the dead letter larger than the broker takes, and then nothing is kept.
    """
    DEAD_LETTERS.labels(stage=str(stage), reason=error_type).inc()
    if payload is not None and len(payload) > MAX_PAYLOAD_BYTES:
        reason += f" (payload cut to its first {MAX_PAYLOAD_BYTES:,} of {len(payload):,} bytes)"
        payload = payload[:MAX_PAYLOAD_BYTES]
    return {
        "stage": str(stage),
        "reason": reason,
        "error_type": error_type,
        "source": source,
        "position": position,
        "source_ori": source_ori,
        "key": key,
        "payload": payload,
        "failed_at": now or datetime.now(UTC),
    }


def for_consumed(
    stage: Stage, msg: Message, error_type: str, reason: str, source_ori: str | None = None
) -> dict:
    """The dead letter of a consumed record, positioned by its topic, partition and offset."""
    return dead_letter(
        stage=stage,
        reason=reason,
        error_type=error_type,
        source=msg.topic(),
        position=f"partition {msg.partition()} offset {msg.offset()}",
        payload=msg.value(),
        key=msg.key(),
        source_ori=source_ori,
    )
