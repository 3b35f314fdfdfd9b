"""The same connector and router on each broker, in one run: the embedded Tansu and Apache Kafka.

    python -m bench.brokers [--reads 20000] [--brokers tansu,kafka]

Per broker: the ALPR CSV connector publishes ``reads`` reads of NV0990300 (acknowledged and
checkpointed, as `mutualaid connect` does), then a `mutualaid router` process routes them to
that agency's two partners under deploy/agreements. The connector's figure is reads/s over its
whole run; the router's is reads taken in per second from its first to its last, read from its
own mutualaid_events_in_total (so its start-up and group join are not counted). What to compare
is the ratio of Kafka to Tansu, measured on the same machine in the same run.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench import save, start_broker
from mutualaid.auditlog import ensure_stage_keys
from mutualaid.broker import free_port
from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.kafkaserver import KafkaCluster
from mutualaid.processes import spawn, stop
from mutualaid.settings import Settings
from mutualaid.topics import topics_for
from producers import samples
from producers.alpr import DEFAULT_MAPPING, AlprAdapter, load_mapping
from producers.runner import Runner
from producers.sources import LineFile

ORI = "NV0990300"
ORIS = ["CA0990100", "CA0990200", "NV0990300", "DC0990400"]


def routed_in(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "mutualaid_events_in_total" and s.labels.get("stage") == "streams"
    )


def one_broker(kind: str, reads: int, csv: Path, tmp: Path) -> dict[str, float]:
    broker = start_broker(kind, tmp)
    try:
        port = free_port()
        values = {
            "bootstrap_servers": broker.bootstrap_servers,
            "data_dir": str(tmp / f"var-{kind}"),
            "metrics_port": port,
            "router_id": f"bench-router-{kind}",
        }
        config = tmp / f"{kind}.yaml"
        config.write_text(yaml.safe_dump(values))
        settings = Settings(**values)
        ensure_stage_keys(settings, [settings.router_id])  # it signs its audit records
        admin = wait_for_broker(broker.bootstrap_servers)
        ensure_topics(admin, topics_for(ORIS, settings.partitions), 1)
        source = LineFile(csv)
        adapter = AlprAdapter(load_mapping(DEFAULT_MAPPING), source.header, ORI)
        began = time.perf_counter()
        progress = Runner(settings, ORI, adapter, source, name=f"bench-{kind}").run()
        connector = progress.published / (time.perf_counter() - began)
        assert progress.published == reads, progress.counts()

        router = spawn(
            [sys.executable, "-m", "cli", "--config", str(config), "router"],
            log=tmp / f"router-{kind}.log",
        )
        try:
            deadline = time.monotonic() + 600
            while routed_in(port) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            first, at_first = time.perf_counter(), routed_in(port)
            while (done := routed_in(port)) < reads and time.monotonic() < deadline:
                time.sleep(0.05)
            router_rate = (done - at_first) / (time.perf_counter() - first)
            assert done >= reads, f"the router took in {done:,.0f} of {reads:,} reads"
        finally:
            stop(router, timeout=10)
        started = getattr(broker, "started_in", 0.0)
        memory = broker.memory()[1] / 2**20 if isinstance(broker, KafkaCluster) else 0.0
    finally:
        broker.stop()
    print(
        f"  {kind:<6} connector {connector:>9,.0f} reads/s  router {router_rate:>8,.0f} reads/s"
        + (f"  (broker up in {started:.1f}s, {memory:,.0f} MiB resident)" if started else "")
    )
    return {
        "connector_per_second": connector,
        "router_per_second": router_rate,
        "broker_start_seconds": started,
        "broker_resident_mib": memory,
    }


def main(reads: int, brokers: list[str]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mutualaid-bench-brokers-"))
    try:
        rng = random.Random(11)
        csv = tmp / "reads.csv"
        cameras = samples.cameras_for(ORI, (38.96, -119.93), 6, rng)
        plates = samples.plate_pool(["NV", "CA"], 2000, rng)
        samples.write_alpr_csv(
            csv, ORI, cameras, plates, reads, datetime(2026, 11, 24, tzinfo=UTC), rng
        )
        print(f"mutualaid bench.brokers: {reads:,} ALPR reads, router to 2 partners")
        figures: dict = {"reads": reads}
        for kind in brokers:
            figures[kind] = one_broker(kind, reads, csv, tmp)
        if {"tansu", "kafka"} <= figures.keys():
            for what in ("connector_per_second", "router_per_second"):
                ratio = figures["kafka"][what] / figures["tansu"][what]
                figures[f"kafka_to_tansu_{what}"] = ratio
                print(f"  Kafka / Tansu, {what.replace('_per_second', '')}: {ratio:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save(figures, "brokers-")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.brokers", description=__doc__)
    parser.add_argument("--reads", type=int, default=20_000, help="ALPR reads (20,000)")
    parser.add_argument("--brokers", default="tansu,kafka", help="tansu,kafka (both)")
    options = parser.parse_args()
    main(options.reads, options.brokers.split(","))
