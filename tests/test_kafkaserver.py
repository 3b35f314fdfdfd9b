"""Apache Kafka from the Maven-fetched jars: a node starts, serves, stops without leaving a
process or its data behind, and every way it cannot run is a clear error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mutualaid.kafka import BrokerUnavailable, ensure_topics, wait_for_broker
from mutualaid.kafkaserver import (
    COMPLETE,
    KafkaCluster,
    KafkaServerError,
    KafkaUnavailable,
    cluster_id,
    install,
    jars_dir,
    java_binary,
    kafka_version,
)
from mutualaid.topics import topics_for


@pytest.fixture(scope="module")
def kafka_runs() -> None:
    """Skip where Apache Kafka cannot run (no Java; no jars and no Maven), saying why."""
    try:
        java_binary()
        install()
    except KafkaUnavailable as exc:
        pytest.skip(f"Apache Kafka cannot run here: {exc}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def test_the_pom_pins_a_kafka_4_version() -> None:
    major = int(kafka_version().split(".")[0])
    assert major >= 4, "KRaft-only Kafka (4.x) is what mutualaid.kafkaserver starts"


def test_a_node_starts_serves_and_stops_without_leftovers(kafka_runs: None) -> None:
    with KafkaCluster(nodes=1) as cluster:
        root, (node,) = cluster.root, cluster.members
        assert root is not None and node.proc is not None
        pid = node.proc.pid
        admin = wait_for_broker(cluster.bootstrap_servers)
        specs = topics_for(["CA0990100"], partitions=3)
        assert sorted(ensure_topics(admin, specs, 1)) == sorted(s.name for s in specs)
        meta = admin.list_topics(timeout=10).topics
        assert len(meta["src.ca0990100.alpr.read"].partitions) == 3
        cluster.warm_up()  # a record produced and fetched back
        cluster.warm_up()  # again, with its topic already there
        # The heap is capped (384 MiB), so the whole JVM stays well under a GiB.
        assert 50 * 2**20 < cluster.memory()[1] < 2**30
        assert cluster.started_in > 0
        address = cluster.bootstrap_servers
    assert not alive(pid), "the JVM outlived stop()"
    assert not root.exists(), "a temporary data directory outlived stop()"
    with pytest.raises(BrokerUnavailable):
        wait_for_broker(address, timeout=1)


def test_a_node_that_cannot_start_is_an_error_with_its_log(
    kafka_runs: None, tmp_path: Path
) -> None:
    bad = KafkaCluster(nodes=1, root=tmp_path, broker_config={"num.network.threads": "zero"})
    with pytest.raises(KafkaServerError, match=r"(?s)node 1.*num\.network\.threads"):
        bad.start(timeout=60)
    assert not bad.running()


def test_a_port_in_use_is_a_clear_error(kafka_runs: None) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(KafkaServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            KafkaCluster(nodes=1, port=port).start()


def test_without_java_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", "/nonexistent/jdk")
    with pytest.raises(KafkaUnavailable, match="needs Java 17 or newer"):
        KafkaCluster(nodes=1).start()


def test_without_jars_or_maven_it_says_how_to_fetch_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MUTUALAID_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn
    with pytest.raises(KafkaUnavailable, match=r"not in .*kafka-.* there is no `mvn`"):
        install()


def test_a_complete_cache_is_used_without_maven(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Offline after the first install: a cache marked complete needs no Maven at all."""
    monkeypatch.setenv("MUTUALAID_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    target = jars_dir()
    target.mkdir(parents=True)
    (target / COMPLETE).write_text(kafka_version())
    assert install() == target


def test_cluster_ids_never_read_as_an_option() -> None:
    ids = {cluster_id() for _ in range(2000)}
    assert len(ids) == 2000 and all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_nodes_die_with_the_process_that_started_them(kafka_runs: None, tmp_path: Path) -> None:
    """No orphan JVM holds ports or memory after a test run (or `up`) is killed outright."""
    script = (
        "import sys, time\n"
        "from mutualaid.kafkaserver import KafkaCluster\n"
        "c = KafkaCluster(nodes=1).start()\n"
        "print(c.members[0].proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert alive(pid)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid), "the Kafka JVM outlived the process that started it"
