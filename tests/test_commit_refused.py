"""A projector (or the webhooks sender) whose group moved on without it (its session expired
while a broker node died, or a rebalance came between) keeps running: its commit is refused,
what it finished is read again by whoever owns the partition now. On the real brokers: a member that
stops polling past max.poll.interval.ms is put out of the group, as a stalled one is."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from mutualaid.kafka import commit_past, ensure_topics, wait_for_broker
from mutualaid.topics import TopicSpec
from support.brokers import Broker

SESSION_MS = 6000  # Apache Kafka's group.min.session.timeout.ms


@pytest.mark.broker
def test_a_commit_refused_because_the_group_moved_on_is_reported_not_raised(
    broker: Broker,
) -> None:
    topic = f"projector-commit-{uuid.uuid4().hex[:8]}"
    ensure_topics(wait_for_broker(broker.bootstrap_servers), [TopicSpec(topic, 1)], 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    producer.produce(topic, b"a share record")
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": topic,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_MS,
            "max.poll.interval.ms": SESSION_MS,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline, batch = time.monotonic() + 30, []
        while not batch and time.monotonic() < deadline:
            batch = [m for m in consumer.consume(10, 1.0) if m.error() is None]
        assert batch, "the record was never consumed"
        log = logging.getLogger("test")
        assert commit_past(consumer, batch, log)  # still a member: committed
        time.sleep(SESSION_MS / 1000 + 2)  # no poll: the member is put out of the group
        assert (
            commit_past(consumer, batch, logging.getLogger("test")) is False
        )  # refused, said, not raised
    finally:
        consumer.close()
