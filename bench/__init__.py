"""Benchmarks: `./run bench`. Figures are printed and saved under bench/results/."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from mutualaid.broker import EmbeddedBroker, free_port
from mutualaid.kafkaserver import KafkaCluster

RESULTS = Path(__file__).parent / "results"


def save(figures: dict, prefix: str = "") -> Path:
    """Write one run's figures as bench/results/<prefix><UTC time>.json and say where."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{prefix}{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(figures, indent=2))
    print(f"saved {out}")
    return out


def percentile(values: list[float], q: float) -> float:
    """The value ``q`` (0.5, 0.99) of the way through ``values`` sorted."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_broker(kind: str, tmp: Path) -> EmbeddedBroker | KafkaCluster:
    """A started broker of ``kind``: the embedded Tansu, or one Apache Kafka node (KRaft)."""
    if kind == "tansu":
        return EmbeddedBroker(free_port(), log=tmp / "tansu.log").start()
    cluster = KafkaCluster(nodes=1, root=tmp / "kafka").start()
    cluster.warm_up()  # production brokers are warm: leave the JVM's first produce out
    return cluster
