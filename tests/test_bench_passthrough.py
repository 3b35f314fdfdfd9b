"""The pass-through baselines the pipeline benchmark divides by (bench/passthrough.py) forward
every record, on both brokers: a baseline that fails to start (as the faust one did after a
helper moved, unnoticed until `./run bench`) would leave the benchmark's ratios without a
denominator. Their speed is the benchmark's to report, not judged here."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.processes import spawn, stop
from mutualaid.topics import TopicSpec
from support.brokers import Broker, read_topic

RECORDS = 200


@pytest.mark.broker
@pytest.mark.parametrize("mode", ["faust", "confluent"])
def test_a_pass_through_baseline_forwards_every_record(
    broker: Broker, mode: str, tmp_path: Path
) -> None:
    name = f"bench-{mode}-{uuid.uuid4().hex[:8]}"
    source, dest = f"{name}-in", f"{name}-out"
    admin = wait_for_broker(broker.bootstrap_servers)
    ensure_topics(admin, [TopicSpec(source, 2), TopicSpec(dest, 2)], 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for n in range(RECORDS):
        producer.produce(source, f"value-{n}".encode(), f"key-{n}".encode())
    assert producer.flush(30) == 0
    argv = [sys.executable, "-m", "bench.passthrough", mode, broker.bootstrap_servers]
    proc = spawn([*argv, source, dest, name], log=tmp_path / "passthrough.log")
    try:
        forwarded = read_topic(broker.bootstrap_servers, dest, lambda r: len(r) >= RECORDS, 90)
        assert proc.poll() is None, (tmp_path / "passthrough.log").read_text()[-2000:]
    finally:
        stop(proc, timeout=20)
    assert sorted(m.value() for m in forwarded) == sorted(
        f"value-{n}".encode() for n in range(RECORDS)
    )
