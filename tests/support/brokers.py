"""The brokers tests run on, and reading what the stages wrote to them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from consumers.opening import ShareReader
from mutualaid.broker import EmbeddedBroker
from mutualaid.crypto import load_keyring
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
