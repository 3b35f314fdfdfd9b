"""Offsets on Apache Kafka, where the embedded broker's shortcut does not hold: after batched
produces its ListOffsets answer is the true end, so end_offsets, lag taken from it, and
``auto.offset.reset=latest`` are exact. (Tansu answers the last batch's base offset + 1; the
code never relies on that, and these tests say what Kafka gives instead.)"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mutualaid.kafka import consumer_config, end_offsets, ensure_topics, wait_for_broker
from mutualaid.settings import Settings
from mutualaid.topics import TopicSpec
from support.brokers import Broker

pytestmark = pytest.mark.brokers(
    "kafka", reason="Tansu answers ListOffsets short after batched produces (ENVIRONMENT.md)"
)


def batched(
    bootstrap: str, topic: str, count: int, partitions: int, prefix: bytes = b"old"
) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 100})
    for n in range(count):
        producer.produce(topic, prefix + b"%d" % n, partition=n % partitions)
    assert producer.flush(10) == 0


def new_topic(broker: Broker, partitions: int) -> str:
    topic = f"offsets-{uuid.uuid4().hex[:8]}"
    ensure_topics(wait_for_broker(broker.bootstrap_servers), [TopicSpec(topic, partitions)], 1)
    return topic


def test_end_offsets_are_exact_after_batched_produces(broker: Broker) -> None:
    topic = new_topic(broker, 3)
    batched(broker.bootstrap_servers, topic, 300, 3)
    settings = Settings(bootstrap_servers=broker.bootstrap_servers)
    assert end_offsets(settings, topic) == {0: 100, 1: 100, 2: 100}


def test_lag_from_list_offsets_is_the_backlog(broker: Broker) -> None:
    """Committed offset against the ListOffsets end: what an operator's kafka-consumer-groups
    shows, right on Kafka."""
    topic, group = new_topic(broker, 1), f"lag-{uuid.uuid4().hex[:8]}"
    batched(broker.bootstrap_servers, topic, 250, 1)
    settings = Settings(bootstrap_servers=broker.bootstrap_servers)
    consumer = Consumer(consumer_config(settings, group))
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        consumer.commit(offsets=[TopicPartition(topic, 0, 40)], asynchronous=False)
        (committed,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        assert high - committed.offset == 210
    finally:
        consumer.close()


def test_auto_offset_reset_latest_starts_after_what_was_there(broker: Broker) -> None:
    topic = new_topic(broker, 2)
    batched(broker.bootstrap_servers, topic, 200, 2)
    settings = Settings(bootstrap_servers=broker.bootstrap_servers)
    group = f"latest-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(consumer_config(settings, group, **{"auto.offset.reset": "latest"}))
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while len(consumer.assignment()) < 2 and time.monotonic() < deadline:
            consumer.poll(0.2)
        assert len(consumer.assignment()) == 2, "the group join did not finish"
        # While "latest" is resolved and fetched from, none of the 200 earlier records comes.
        quiet = time.monotonic() + 3
        while time.monotonic() < quiet:
            assert [m for m in consumer.consume(10, 0.2) if m.error() is None] == []
        batched(broker.bootstrap_servers, topic, 20, 2, prefix=b"new")
        taken: list[bytes] = []
        while len(taken) < 20 and time.monotonic() < deadline + 30:
            taken += [m.value() for m in consumer.consume(20, 0.5) if m.error() is None]
        assert sorted(taken) == sorted(b"new%d" % n for n in range(20))
    finally:
        consumer.close()
