"""Dead letters: an input a stage could not handle, kept with why and where it came from.

Every stage sends them through one ``DeadLetters``: it builds the ``mutualaid.DeadLetter``
record, counts it in Prometheus, encodes it with the process's codecs and hands
``(topic, key, value)`` to the stage's ``send`` -- its producer, or a maker of the records a
pure stage returns -- so how they are written, and the commit rules of each stage, stay the
stage's own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Generic, NamedTuple, Protocol, TypeVar

from confluent_kafka import Message

from mutualaid.metrics import DEAD_LETTERS
from mutualaid.serde import DEAD_LETTER, Codecs, SerializationContext
from mutualaid.topics import Stage, dlq_topic

T = TypeVar("T")
# Well under the 1 MB a Kafka broker takes per record by default, with room for the rest.
MAX_PAYLOAD_BYTES = 256 * 1024


class Letter(NamedTuple):
    """An encoded dead letter, for a stage that produces it later with its own bookkeeping."""

    topic: str
    key: bytes | None
    value: bytes


class Why(Protocol):
    """What a rejection says (``producers.contract.Rejected``)."""

    error_type: str
    reason: str


class DeadLetters(Generic[T]):
    """One stage's dead letters, each handed encoded to ``send(topic, key, value)``."""

    def __init__(
        self, send: Callable[[str, bytes | None, bytes], T], codecs: Codecs, stage: Stage
    ) -> None:
        self.stage = stage
        self.topic = dlq_topic(stage)
        self._send = send
        self._encode = codecs.serializer(DEAD_LETTER)

    def send(
        self,
        *,
        reason: str,
        error_type: str,
        source: str,
        position: str,
        payload: bytes | None,
        key: bytes | None = None,
        source_ori: str | None = None,
    ) -> T:
        """Build the ``mutualaid.DeadLetter``, count it by stage and error type, and send it.

        A payload past MAX_PAYLOAD_BYTES is cut to its start, and the reason says so: the whole of
        it could make the dead letter larger than the broker takes, and then nothing is kept.
        """
        DEAD_LETTERS.labels(stage=str(self.stage), reason=error_type).inc()
        if payload is not None and len(payload) > MAX_PAYLOAD_BYTES:
            reason += f" (payload cut to its first {MAX_PAYLOAD_BYTES:,} of {len(payload):,} bytes)"
            payload = payload[:MAX_PAYLOAD_BYTES]
        letter = {
            "stage": str(self.stage),
            "reason": reason,
            "error_type": error_type,
            "source": source,
            "position": position,
            "source_ori": source_ori,
            "key": key,
            "payload": payload,
            "failed_at": datetime.now(UTC),
        }
        value = self._encode(letter, SerializationContext(self.topic))
        assert value is not None  # a record, never a tombstone
        return self._send(self.topic, key, value)

    def rejected(
        self,
        why: Why,
        *,
        source: str,
        position: str,
        payload: bytes,
        source_ori: str,
        key: bytes | None = None,
    ) -> T:
        """The dead letter of an item an adapter rejected, saying why and where."""
        return self.send(
            reason=why.reason,
            error_type=why.error_type,
            source=source,
            position=position,
            payload=payload,
            key=key,
            source_ori=source_ori,
        )

    def consumed(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        payload: bytes | None,
        error_type: str,
        reason: str,
        source_ori: str | None = None,
    ) -> T:
        """The dead letter of a consumed record, positioned by its topic, partition and offset."""
        return self.send(
            reason=reason,
            error_type=error_type,
            source=topic,
            position=f"partition {partition} offset {offset}",
            payload=payload,
            key=key,
            source_ori=source_ori,
        )

    def message(
        self, msg: Message, error_type: str, reason: str, source_ori: str | None = None
    ) -> T:
        """``consumed`` for a confluent-kafka message."""
        return self.send(
            reason=reason,
            error_type=error_type,
            source=str(msg.topic()),
            position=f"partition {msg.partition()} offset {msg.offset()}",
            key=msg.key(),
            payload=msg.value(),
            source_ori=source_ori,
        )
