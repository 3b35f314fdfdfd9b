"""A record the broker refuses stops the router before it commits the batch that made it.

The refusal is the broker's own: Tansu validates records against a schema for a topic when it
runs with ``--schema-registry``, and answers INVALID_RECORD for any that does not match. Here
one partner's share topic is given a JSON schema that no Avro record matches, so every share
to that partner is refused, while the other partner's are accepted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from bench.data import alpr_events
from mutualaid.broker import free_port, tansu_binary
from mutualaid.kafka import wait_for_broker
from mutualaid.processes import spawn, stop
from mutualaid.topics import Kind, share_topic, source_topic
from streams.worker import EXIT_DELIVERY_FAILED
from support.regions import configured_region, publish_source, random_ori

NO_AVRO_MATCHES = {"type": "object", "properties": {"value": {"type": "object"}}}


class RefusingBroker:
    """An embedded broker that refuses every record on the topics named in ``refused``."""

    def __init__(self, directory: Path, refused: list[str]) -> None:
        schemas = directory / "schemas"
        schemas.mkdir()
        for topic in refused:
            (schemas / f"{topic}.json").write_text(json.dumps(NO_AVRO_MATCHES))
        self.bootstrap_servers = f"127.0.0.1:{free_port()}"
        url = f"tcp://{self.bootstrap_servers}"
        argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        # Tansu reads a file:// registry relative to its working directory.
        self._proc = subprocess.Popen(
            [*argv, "--schema-registry", "file://./schemas"],
            cwd=directory,
            stdout=(directory / "broker.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for_broker(self.bootstrap_servers)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


@pytest.mark.broker
def test_a_refused_share_exits_70_and_commits_nothing(tmp_path: Path) -> None:
    local, county, neighbour, federal = (random_ori(s) for s in ("CA", "CA", "NV", "DC"))
    agencies = [
        {"ori": o, "name": f"Agency {o}", "state": o[:2], "type": "local"}
        for o in (local, county, neighbour)
    ] + [{"ori": federal, "name": "Federal Task Force", "state": "DC", "type": "federal"}]
    agreement = {
        "id": "neighbour-to-ca",
        "version": 1,
        "owner": neighbour,
        "partners": [local, county],
        "kinds": ["alpr.read"],
    }
    (tmp_path / "agreements").mkdir()
    (tmp_path / "agencies.yaml").write_text(yaml.safe_dump({"agencies": agencies}))
    (tmp_path / "agreements" / "a.yaml").write_text(yaml.safe_dump({"agreements": [agreement]}))
    broker = RefusingBroker(tmp_path, [share_topic(local, Kind.ALPR_READ)])
    try:
        router_id = f"router-{local.lower()}"
        region = configured_region(
            tmp_path, broker, (local, county, neighbour, federal), router_id=router_id
        )  # type: ignore[arg-type]
        publish_source(
            region, Kind.ALPR_READ, alpr_events(tmp_path, neighbour, 50), owner=neighbour
        )
        argv = [sys.executable, "-m", "cli", "--config", str(region.config_file)]
        router = spawn([*argv, "router"], log=tmp_path / "router.log")
        try:
            code = router.wait(120)
        finally:
            stop(router)
        log = (tmp_path / "router.log").read_text()
        assert code == EXIT_DELIVERY_FAILED, log[-3000:]
        assert "broker did not acknowledge records" in log
        assert "INVALID_RECORD" in log or "failed to validate record" in log
        source = source_topic(neighbour, Kind.ALPR_READ)
        group = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": router_id})
        try:
            committed = group.committed(
                [TopicPartition(source, p) for p in range(region.settings.partitions)], timeout=10
            )
        finally:
            group.close()
        # Nothing committed (librdkafka reports "no offset" as a negative one): after a restart
        # every read is routed again, so the refused partner misses none.
        assert [tp.offset for tp in committed if tp.offset >= 0] == []
    finally:
        broker.close()
