"""mutualaid_consumer_lag, exported by the stages' own consumers against the real broker. The
embedded broker answers ListOffsets short after a batched produce, so these also show the lag
is taken from what the consumers fetch."""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import yaml
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from prometheus_client import REGISTRY

from mutualaid.broker import EmbeddedBroker, free_port
from mutualaid.events import new_envelope
from mutualaid.kafka import consumer_config, ensure_topics, wait_for_broker
from mutualaid.processes import spawn, stop
from mutualaid.settings import Settings
from mutualaid.topics import Kind, TopicSpec, source_topic
from support.processes import metric, wait_for
from support.regions import Region, publish_source


def take(consumer: Consumer, count: int, timeout: float = 30) -> list[Message]:
    taken: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(taken) < count and time.monotonic() < deadline:
        taken += [m for m in consumer.consume(count - len(taken), 0.5) if m.error() is None]
    assert len(taken) == count, f"{len(taken)} of {count} records arrived"
    return taken


def test_a_consumer_exports_its_lag_from_what_it_fetches(broker: EmbeddedBroker) -> None:
    settings = Settings(bootstrap_servers=broker.bootstrap_servers)
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"lag-test-{uuid.uuid4().hex[:8]}"
    ensure_topics(wait_for_broker(broker.bootstrap_servers), [TopicSpec(topic, 1)], 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 50})
    for n in range(10):  # one batch
        producer.produce(topic, b"%d" % n, partition=0)
    assert producer.flush(10) == 0

    consumer = Consumer(consumer_config(settings, group))
    consumer.subscribe([topic])

    def lag() -> float | None:
        consumer.poll(0.2)  # serves the statistics callback; what it returns stays uncommitted
        labels = {"group": group, "topic": topic, "partition": "0"}
        return REGISTRY.get_sample_value("mutualaid_consumer_lag", labels)

    try:
        consumer.commit(message=take(consumer, 5)[-1], asynchronous=False)
        wait_for(lambda: lag() == 5, 30, "a lag of 5: ten fetched, five committed")
        consumer.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
        wait_for(lambda: lag() == 0, 30, "a lag of 0 once all ten are committed")
    finally:
        consumer.close()


def test_the_router_exports_its_lag(region: Region, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "router.yaml"
    values = yaml.safe_load(region.config_file.read_text()) | {"metrics_port": port}
    config.write_text(yaml.safe_dump(values))
    router = spawn(
        [sys.executable, "-m", "cli", "--config", str(config), "router"],
        log=tmp_path / "router.log",
    )
    at = datetime.now(UTC)
    reads = [
        {
            "envelope": new_envelope(
                source_ori=region.local,
                source_system="t",
                kind=Kind.ALPR_READ,
                record_id=f"r{n}",
                version=1,
                occurred_at=at,
            ),
            "body": {"plate": "7ABC123"},
        }
        for n in range(20)
    ]
    topic = source_topic(region.local, Kind.ALPR_READ)
    sample = (  # labels as exposed: sorted by name
        f'mutualaid_consumer_lag{{group="{region.settings.router_id}",'
        f'partition="2",topic="{topic}"}}'
    )
    try:
        publish_source(region, Kind.ALPR_READ, reads, partition=2)
        wait_for(lambda: metric(port, sample) == 0, 90, f"{sample} to reach 0")
    finally:
        stop(router, timeout=10)
