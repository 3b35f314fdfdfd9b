"""A projector (or the webhooks sender) whose group moved on without it (its session expired
while a broker node died, or a rebalance came between) keeps running: its commit is refused,
what it finished is read again by whoever owns the partition now. On the real brokers: a member that
stops polling past max.poll.interval.ms is put out of the group, as a stalled one is."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

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


class CoordinatorGone:
    """Stands in for a consumer whose group coordinator died: librdkafka's commit raises
    NOT_COORDINATOR (seen when the node holding the coordinator was SIGKILLed in
    tests/test_kafka_cluster.py, where the projector then exited). Only the error is faked,
    because provoking it on demand takes killing the coordinator's node at the right moment."""

    def __init__(self, code: int) -> None:
        self.code = code

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        raise KafkaException(KafkaError(self.code))


class Record:
    """A consumed record as commit_past reads it."""

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "share.ca0990100.alpr.read"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 41


@pytest.mark.parametrize(
    "code",
    [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TRANSPORT],
)
def test_a_commit_not_taken_while_the_coordinator_moves_is_reported_not_raised(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    consumer: Any = CoordinatorGone(code)
    assert commit_past(consumer, [Record()], logging.getLogger("test")) is False  # type: ignore[list-item]
    assert "coordinator is moving" in caplog.text


def test_any_other_commit_error_still_raises() -> None:
    consumer: Any = CoordinatorGone(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        commit_past(consumer, [Record()], logging.getLogger("test"))  # type: ignore[list-item]
