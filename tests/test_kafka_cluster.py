"""What only a real cluster shows: three Apache Kafka nodes (KRaft, each broker and controller),
topics with three copies and min.insync.replicas=2, as production runs them.

- A node SIGKILLed while a connector publishes and the router and projectors run: every read
  accepted is indexed once at the partner, nobody else gets any, and every stage carries on
  without a restart.
- A hotlist compacted by the broker still gives the matcher the current list.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from consumers.own import OWN_RECORDS
from mutualaid.agencies import load_registry
from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.kafkaserver import KafkaCluster, KafkaUnavailable
from mutualaid.processes import spawn, stop
from mutualaid.settings import Settings
from mutualaid.topics import Kind, TopicSpec, hotlist_topic, share_topic, source_topic
from producers import samples
from producers.hotlist import HotlistPublisher, current_entries, entry_body, entry_event
from streams.matcher_app import load_hotlists
from support.brokers import everything_on, lag, projector_group, read_topic
from support.indexes import index_rows
from support.processes import running_stages, wait_for
from support.regions import Region, make_region

pytestmark = pytest.mark.slow

READS = 4000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    root = tmp_path_factory.mktemp("cluster")
    # The cleaner looks for work every 15 s by default; the compaction test waits for it.
    config = {"log.cleaner.backoff.ms": "500"}
    try:
        with KafkaCluster(nodes=3, root=root, broker_config=config) as running:
            running.warm_up()
            yield running
    except KafkaUnavailable as exc:
        pytest.skip(f"Apache Kafka cannot run here: {exc}")


def leader_of(cluster: KafkaCluster, topic: str, partition: int) -> int:
    meta = wait_for_broker(cluster.bootstrap_servers).list_topics(topic, timeout=10)
    return meta.topics[topic].partitions[partition].leader


def why_not_indexed(region: Region) -> str:
    """Where the city's reads stopped on their way to the county's index: how many the
    connector published, the router shared, the index holds, and each group's lag (which
    stages still run, and their logs, running_stages adds)."""
    s = region.settings.bootstrap_servers
    source = source_topic(region.local, Kind.ALPR_READ)
    share = share_topic(region.county, Kind.ALPR_READ)
    published = {m.key() for m in everything_on(s, source)}
    shared = {m.key() for m in everything_on(s, share)}
    (held,) = index_rows(region.settings, region.county, "select count(*) from records")
    behind = {
        "router": lag(s, region.settings.router_id, [source]),
        "county projector": lag(s, projector_group(s, region.county), [share]),
    }
    lines = [
        f"{len(published)} reads published, {len(shared)} shared, {held[0]} indexed",
        f"behind: {behind}",
    ]
    return "\n".join(lines)


def test_a_node_killed_at_load_loses_nothing_and_duplicates_nothing(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    """Every stage rides out the death of the node leading the city's first partition. It
    failed, until fixed, on: the router's changelog producer keeping the dead leader for
    aiokafka's 5-minute metadata age (now 10 s), the router's agent crashing on one timed-out
    watermark lookup for its audit chain (now asked again), and a projector exiting when its
    commit was refused because its session had expired (now reported, and it goes on)."""
    region = make_region(tmp_path, cluster, replication_factor=3)
    rng = random.Random(16)
    generated = tmp_path / "generated.csv"
    cameras = samples.cameras_for(region.local, (38.94, -119.98), 6, rng)
    plates = samples.plate_pool(["CA", "NV"], 1500, rng)
    start = datetime(2026, 11, 24, tzinfo=UTC)
    samples.write_alpr_csv(generated, region.local, cameras, plates, READS, start, rng)
    header, *lines = generated.read_bytes().splitlines(keepends=True)
    # The camera export grows while the node dies: half before, half after.
    export = tmp_path / "reads.csv"
    export.write_bytes(header + b"".join(lines[: READS // 2]))
    everyone = [region.local, region.county, region.neighbour, region.federal]
    # The node leading the city's first source partition dies: the connector's writes there
    # and the router's reads both have to move to a new leader.
    victim = leader_of(cluster, source_topic(region.local, Kind.ALPR_READ), 0)

    def indexed() -> int:
        try:
            (count,) = index_rows(region.settings, region.county, "select count(*) from records")
        except sqlite3.OperationalError:  # no index file or table before the first record
            return 0
        return count[0]

    with running_stages(region, tmp_path / "logs", everyone) as stages:
        cli = [sys.executable, "-m", "cli", "--config", str(region.config_file)]
        argv = ["connect", "alpr", "--agency", region.local, "--source", str(export), "--follow"]
        log = tmp_path / "logs" / "connector.log"
        connector = spawn([*cli, *argv], log=log)
        stages["connector"] = connector
        try:
            # Kill once reads flow through every stage (some indexed at the partner already),
            # then the second half arrives while the cluster runs on two nodes.
            wait_for(lambda: indexed() > 0 or connector.poll() is not None, 180, "a first read")
            cluster.kill(victim)
            with export.open("ab") as grows:
                grows.write(b"".join(lines[READS // 2 :]))
            try:
                wait_for(lambda: indexed() >= READS, 240, f"all {READS} reads in the index")
            except AssertionError as timeout:
                why = why_not_indexed(region)
                raise AssertionError(f"{timeout}; {why}") from None
            for name, proc in stages.items():
                assert proc.poll() is None, f"{name} exited with {proc.returncode}"
        finally:
            code = stop(connector, timeout=60)  # SIGTERM: it finishes its batch and exits
        assert code == 0, log.read_text()[-3000:]
    held = index_rows(
        region.settings, region.county, "select count(*), count(distinct record_id) from records"
    )
    assert held == [(READS, READS)], "the index lost or duplicated records"
    # What partners hold from the city (each agency's own records are indexed too, as its own).
    nothing = f"select count(*) from records where agreement_id <> '{OWN_RECORDS}'"
    for other in (region.local, region.neighbour, region.federal):
        assert index_rows(region.settings, other, nothing) == [(0,)], f"{other} got reads"
    cluster.restart(victim)


def test_a_compacted_hotlist_still_gives_the_matcher_the_current_list(
    cluster: KafkaCluster, tmp_path: Path
) -> None:
    region = make_region(tmp_path, cluster, replication_factor=3)
    settings: Settings = region.settings
    ori = region.county
    topic = hotlist_topic(ori)
    admin = wait_for_broker(cluster.bootstrap_servers)
    ensure_topics(admin, [TopicSpec(topic, 1, compacted=True)], 3)
    # Small segments, cleaned as soon as anything is dirty: compaction within seconds.
    fast = {"segment.ms": "300", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"}
    entries = [
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in fast.items()
    ]
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    admin.incremental_alter_configs([resource])[resource].result(10)

    publisher = HotlistPublisher(settings)
    now = datetime.now(UTC)

    def entry(record_id: str, plate: str | None, minutes: int) -> dict:
        body = (
            entry_body({"plate": plate, "state": "CA", "reason": "stolen_vehicle"})
            if plate
            else None
        )
        return entry_event(ori, record_id, body, "test", None, now + timedelta(minutes=minutes))

    # E-1 changes plate fifty times, E-2 is listed then removed, E-3 stays as first written.
    history = [entry("E-1", f"1OLD{n:03d}", n) for n in range(50)]
    history += [entry("E-2", "2GONE00", 0), entry("E-3", "3STAY00", 0)]
    publisher.publish(history)
    time.sleep(0.5)  # past segment.ms, so the next write rolls a new segment
    publisher.publish([entry("E-1", "1NEW000", 60), entry("E-2", None, 60)])
    time.sleep(0.5)
    written = 50 + 2 + 1 + 3  # E-2's removal is an event and then a tombstone

    def records_on_topic() -> int:
        return len(read_topic(cluster.bootstrap_servers, topic, lambda r: False, timeout=3))

    def compacted() -> bool:
        publisher.publish([entry("E-3", "3STAY00", 0)])  # rolls the segment before it
        return records_on_topic() < written // 2

    wait_for(compacted, 90, "the broker to compact the hotlist")
    current = current_entries(settings, ori)
    assert {k: v["body"]["plate"] for k, v in current.items()} == {
        "E-1": "1NEW000",
        "E-3": "3STAY00",
    }
    hotlists, follower = load_hotlists(settings, load_registry(settings.agencies_file))
    follower.close()
    assert len(hotlists) == 2
    assert [e["body"]["plate"] for e, _ in hotlists.candidates("1NEW000", False)] == ["1NEW000"]
    assert hotlists.candidates("1OLD000", False) == []
    assert hotlists.candidates("2GONE00", False) == []
