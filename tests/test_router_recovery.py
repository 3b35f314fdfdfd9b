"""The router's holders table, written to its changelog by one router, is read back by the next."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.data import alpr_events
from mutualaid.events import new_envelope
from mutualaid.serde import SHARED_EVENT, AvroDeserializer, SchemaStore, SerializationContext
from mutualaid.topics import Kind, share_topic
from support.brokers import read_topic
from support.processes import running_stages
from support.regions import Region, publish_source

READS = 400  # enough for the changelog to travel in compressed batches


@pytest.mark.broker
def test_a_restarted_router_recovers_its_holders_and_withdraws_from_each_partner(
    region: Region, tmp_path: Path
) -> None:
    neighbour = region.neighbour
    reads = alpr_events(tmp_path, neighbour, READS)
    bootstrap = region.settings.bootstrap_servers
    topics = [share_topic(p, Kind.ALPR_READ) for p in (region.local, region.county)]
    with running_stages(region, tmp_path / "first", []):
        publish_source(region, Kind.ALPR_READ, reads, owner=neighbour)
        for topic in topics:
            read_topic(bootstrap, topic, lambda r: len(r) >= READS, timeout=180)
    first = reads[0]["envelope"]
    deleted = {
        "envelope": new_envelope(
            source_ori=neighbour,
            source_system="test",
            kind=Kind.ALPR_READ,
            record_id=first["record_id"],
            version=first["version"] + 1,
            occurred_at=first["occurred_at"],
            op="DELETE",
        ),
        "body": None,
    }
    decode = AvroDeserializer(SchemaStore(), SHARED_EVENT[Kind.ALPR_READ])

    def withdrawals(records: list) -> list[str]:
        return [
            e["envelope"]["record_id"]
            for e in (decode(m.value(), SerializationContext(m.topic())) for m in records)
            if e is not None and e["envelope"]["op"] == "DELETE"
        ]

    # The second router knows who holds the read only from the table it recovered.
    with running_stages(region, tmp_path / "second", []):
        publish_source(region, Kind.ALPR_READ, [deleted], owner=neighbour)
        for topic in topics:
            records = read_topic(bootstrap, topic, lambda r: len(withdrawals(r)) >= 1, 180)
            assert withdrawals(records) == [first["record_id"]], (
                tmp_path / "second" / "router.log"
            ).read_text()[-3000:]
