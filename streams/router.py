"""The sharing router: every source event, every partner, one decision each.

``Router.route`` is the whole decision for one record as a pure function from the consumed
bytes to the records to produce, so it can be tested and benchmarked without a broker. The faust
agent in ``streams.app`` only moves bytes in and out and decides when offsets may be committed.
"""

from __future__ import annotations

from dataclasses import dataclass

from mutualaid.deadletter import dead_letter
from mutualaid.events import record_key
from mutualaid.metrics import EVENTS_IN, EVENTS_OUT, SHARE_DECISIONS
from mutualaid.policy import Decision, Policy
from mutualaid.serde import (
    DEAD_LETTER,
    SHARED_EVENT,
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    DeserializationError,
    RegistryClient,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import Kind, Stage, dlq_topic, parse_source_topic, share_topic


@dataclass(frozen=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Consumed:
    """A consumed record, exactly as the broker gave it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Router:
    def __init__(self, policy: Policy, store: SchemaStore, registry: RegistryClient | None) -> None:
        self.policy = policy
        self._decode = {k: AvroDeserializer(store, SOURCE_EVENT[k], registry) for k in Kind}
        self._encode = {k: AvroSerializer(store, SHARED_EVENT[k], registry) for k in Kind}
        self._encode_dead = AvroSerializer(store, DEAD_LETTER, registry)

    def route(self, record: Consumed) -> list[Output]:
        """The records to produce for one consumed record: shares, or one dead letter."""
        ctx = SerializationContext(record.topic, record.partition, record.offset)
        try:
            owner, kind = parse_source_topic(record.topic)
            event = self._decode[kind](record.value, ctx)
        except (DeserializationError, ValueError) as exc:
            return [self._dead(record, "undecodable", str(exc))]
        if event is None:
            return [
                self._dead(
                    record,
                    "null_value",
                    "a source topic never carries tombstones; publish a DELETE event instead",
                )
            ]
        EVENTS_IN.labels(stage="streams", kind=str(kind)).inc()
        envelope = event["envelope"]
        if envelope["source_ori"] != owner or envelope["kind"] != str(kind):
            # An agency can only publish its own records: the topic, not the payload, says whose.
            return [
                self._dead(
                    record,
                    "wrong_topic",
                    f"event of {envelope['source_ori']} {envelope['kind']} on "
                    f"{record.topic}; each agency publishes only to its own topics",
                )
            ]
        outputs = [self._share(kind, event, ctx, d) for d in self.policy.decide(envelope)]
        EVENTS_OUT.labels(stage="streams", kind=str(kind)).inc(len(outputs))
        return outputs

    def _share(self, kind: Kind, event: dict, ctx: SerializationContext, d: Decision) -> Output:
        SHARE_DECISIONS.labels(partner=d.partner_ori, kind=str(kind), outcome="shared").inc()
        shared = {
            "envelope": event["envelope"],
            "disclosure": {
                "partner_ori": d.partner_ori,
                "agreement_id": d.agreement_id,
                "agreement_version": d.agreement_version,
                "tier": d.tier,
                "contact": None,
            },
            "body": event["body"],
        }
        topic = share_topic(d.partner_ori, kind)
        return Output(topic, record_key(event["envelope"]), self._encode[kind](shared, ctx))

    def _dead(self, record: Consumed, error_type: str, reason: str) -> Output:
        topic = dlq_topic(Stage.STREAMS)
        letter = dead_letter(
            stage=Stage.STREAMS,
            reason=reason,
            error_type=error_type,
            source=record.topic,
            position=f"partition {record.partition} offset {record.offset}",
            payload=record.value,
            key=record.key,
        )
        return Output(topic, record.key, self._encode_dead(letter, SerializationContext(topic)))
