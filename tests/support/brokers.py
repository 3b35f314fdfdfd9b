"""The brokers tests run on, and reading what the stages wrote to them."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from consumers.opening import ShareReader
from mutualaid.broker import EmbeddedBroker
from mutualaid.crypto import load_keyring
from mutualaid.kafka import wait_for_broker
from mutualaid.kafkaserver import KafkaCluster
from mutualaid.serde import (
    DEAD_LETTER,
    SOURCE_EVENT,
    AvroDeserializer,
    SchemaStore,
    SerializationContext,
    codecs_for,
)
from mutualaid.settings import Settings
from mutualaid.topics import Kind, Stage, dlq_topic, share_topic, source_topic

# The brokers every broker-backed test runs on: the embedded Tansu (what `up` runs) and Apache
# Kafka (what agencies run). MUTUALAID_TEST_BROKERS=tansu (or kafka) runs on one only.
BROKERS = ("tansu", "kafka")


Broker = EmbeddedBroker | KafkaCluster


def selected_brokers() -> list[str]:
    """The brokers this run tests on: MUTUALAID_TEST_BROKERS (comma-separated), or all."""
    chosen = os.environ.get("MUTUALAID_TEST_BROKERS", ",".join(BROKERS)).split(",")
    unknown = sorted(set(chosen) - set(BROKERS))
    if unknown:
        raise pytest.UsageError(f"MUTUALAID_TEST_BROKERS: unknown {unknown}; known: {BROKERS}")
    return [b for b in BROKERS if b in chosen]


def read_topic(
    bootstrap_servers: str,
    topic: str,
    until: Callable[[list[Message]], bool],
    timeout: float = 30.0,
) -> list[Message]:
    """Every record on ``topic`` from the start, read until ``until(records)`` or the deadline.

    Partitions are assigned directly (no group join to wait for). The end is decided by the
    caller's condition, not by watermarks, which Tansu reports wrong after batched produces.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "test-reader",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[Message] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(records):
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    records.append(msg)
        return records
    finally:
        consumer.close()


def source_events(
    bootstrap_servers: str, ori: str, kind: Kind, count: int, timeout: float = 30.0
) -> list[dict]:
    """What the agency's connectors published on ``src.<ori>.<kind>``, decoded, once there
    are ``count`` events (or fewer at the deadline)."""
    topic = source_topic(ori, kind)
    decode = AvroDeserializer(SchemaStore(), SOURCE_EVENT[kind])
    records = read_topic(bootstrap_servers, topic, lambda r: len(r) >= count, timeout)
    return [decode(m.value(), SerializationContext(topic)) for m in records]


def dead_letters(
    bootstrap_servers: str, stage: Stage, keep: Callable[[dict], bool], timeout: float = 30.0
) -> list[dict]:
    """The stage's dead letters that ``keep`` selects, read until at least one has arrived."""
    topic = dlq_topic(stage)
    decode = AvroDeserializer(SchemaStore(), DEAD_LETTER)

    def selected(records: list[Message]) -> list[dict]:
        letters = (decode(m.value(), SerializationContext(topic)) for m in records)
        return [letter for letter in letters if keep(letter)]

    return selected(read_topic(bootstrap_servers, topic, lambda r: bool(selected(r)), timeout))


def shared_events(
    settings: Settings, partner: str, kind: Kind, records: list[Message]
) -> list[dict | None]:
    """The records of the partner's share topic as the partner reads them (records the router
    sealed whole opened with its keys), None for each tombstone."""
    reader = ShareReader(codecs_for(settings), load_keyring(partner, settings.private_keys_dir))
    ctx = SerializationContext(share_topic(partner, kind))
    return [None if m.value() is None else reader.decode(kind, m.value(), ctx) for m in records]


def everything_on(bootstrap: str, topic: str, quiet: float = 1.5) -> list:
    """Every record on ``topic``, read until nothing new has come for ``quiet`` seconds."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records, last = [], time.monotonic()
        while time.monotonic() - last < quiet:
            batch = [m for m in consumer.consume(500, 0.2) if m.error() is None]
            if batch:
                records += batch
                last = time.monotonic()
        return records
    finally:
        consumer.close()


def lag(bootstrap: str, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """Per partition, the records on ``topics`` past what ``group`` committed, where any
    (ends from the records themselves: Tansu's watermarks run short after batched produces)."""
    ends: Counter[tuple[str, int]] = Counter()
    for topic in topics:
        for m in everything_on(bootstrap, topic, quiet=0.5):
            ends[(topic, m.partition())] = max(ends[(topic, m.partition())], m.offset() + 1)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
    finally:
        consumer.close()
    done = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}
    return {key: end - done[key] for key, end in ends.items() if end > done[key]}


def consumed_all(bootstrap: str, group: str, topics: list[str], timeout: float) -> None:
    """Wait until ``group`` has committed every record on ``topics``; fail saying where not."""
    deadline = time.monotonic() + timeout
    while behind := lag(bootstrap, group, topics):
        assert time.monotonic() < deadline, f"{group} is behind on (topic, partition): {behind}"
        time.sleep(0.5)


def projector_group(bootstrap: str, ori: str) -> str:
    admin = wait_for_broker(bootstrap)
    prefix = f"mutualaid-projector-{ori.lower()}-"
    groups = [g.group_id for g in admin.list_consumer_groups().result(10).valid]
    (group,) = [g for g in groups if g.startswith(prefix)]
    return group
