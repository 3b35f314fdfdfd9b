"""A ``TopicFollower`` (the dispatch console's feed, the matcher's hotlists) hands a lone record
to its reader as soon as it arrives, not at the end of its poll's timeout."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Producer

from mutualaid.kafka import TopicFollower, ensure_topics, wait_for_broker
from mutualaid.settings import Settings
from mutualaid.topics import TopicSpec
from support.brokers import Broker

# Long enough that a poll waiting out its timeout (what consume(1000, timeout) did with fewer
# than 1,000 records there) cannot pass for one that returned when the record came.
TIMEOUT = 30.0


def test_a_lone_record_is_handed_on_when_it_arrives(broker: Broker) -> None:
    topic = f"follow-{uuid.uuid4().hex[:8]}"
    ensure_topics(wait_for_broker(broker.bootstrap_servers), [TopicSpec(topic, 1)], 1)
    seen: list[bytes] = []
    follower = TopicFollower(
        Settings(bootstrap_servers=broker.bootstrap_servers),
        [topic],
        lambda m: seen.append(m.value()),
    )
    try:
        while not follower.caught_up.is_set():
            follower.poll(1.0)
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
        producer.produce(topic, b"hit")
        assert producer.flush(10) == 0
        started = time.monotonic()
        handled = 0
        while not handled and time.monotonic() - started < TIMEOUT:
            handled = follower.poll(TIMEOUT)
        waited = time.monotonic() - started
    finally:
        follower.close()
    assert seen == [b"hit"]
    assert waited < TIMEOUT / 3, f"the record waited {waited:.1f}s in the follower"
