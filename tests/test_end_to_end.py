"""CSV -> connector -> router -> projectors -> search: real processes on a real broker."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from conftest import Region, dead_letters, mutualaid_cli, read_topic, running_stages, wait_for
from consumers.projector import index_path
from mutualaid.serde import (
    SEARCH_AUDIT,
    AvroDeserializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import AUDIT_SEARCH, Kind, Stage, share_topic, source_topic
from producers import samples

HEADER = ",".join(samples.HEADER)


def csv_rows(rows: list[str]) -> str:
    return HEADER + "\n" + "\n".join(rows) + "\n"


def found(region: Region, agency: str, plate: str) -> list[tuple[str, str]]:
    """(source ORI, record id) of every read the agency's search returns, sorted."""
    result = mutualaid_cli(
        region,
        "search",
        "--agency",
        agency,
        "--plate",
        plate,
        "--reason",
        "case 24-001",
        "--user",
        "det.rivera",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    return sorted((h["source_ori"], h["record_id"]) for h in hits)


@pytest.fixture
def stages(region: Region, tmp_path: Path) -> Iterator[None]:
    with running_stages(
        region, tmp_path, [region.local, region.county, region.neighbour, region.federal]
    ):
        yield


@pytest.mark.broker
def test_reads_reach_exactly_the_partners_their_agreements_name(
    region: Region, tmp_path: Path, stages: None
) -> None:
    local_csv = tmp_path / "local.csv"
    local_csv.write_text(
        csv_rows(
            [
                "L-1,7ABC123,CA,2026-11-24T21:14:03-08:00,0.93,C1,Main,38.94,-119.98,N,Kia,Rio,",
                "L-2,7abc-123,CA,2026-11-24T22:01:40-08:00,0.88,C2,Hwy 50,38.93,-119.97,E,Kia,Rio,",
                "L-3,8XYZ999,CA,2026-11-24T22:05:00-08:00,0.91,C2,Hwy 50,38.93,-119.97,E,,,",
                "L-4,,CA,2026-11-24T22:06:00-08:00,0.91,C2,Hwy 50,38.93,-119.97,E,,,",
            ]
        )
    )
    neighbour_csv = tmp_path / "neighbour.csv"
    neighbour_csv.write_text(
        csv_rows(
            [
                "N-1,7ABC123,CA,2026-11-24T23:30:00-08:00,0.95,D1,Stateline,38.96,-119.94,W,Toyota,Camry,",
            ]
        )
    )
    # Poison on the way in to the router and to a projector: each stage must park it and go on.
    poison = Producer({"bootstrap.servers": region.settings.bootstrap_servers})
    poison.produce(source_topic(region.local, Kind.ALPR_READ), b"not avro", b"p1")
    poison.produce(share_topic(region.county, Kind.ALPR_READ), b"\xc3\x01garbage", b"p2")
    assert poison.flush(10) == 0
    for ori, path in ((region.local, local_csv), (region.neighbour, neighbour_csv)):
        published = mutualaid_cli(region, "connect", "alpr", "--agency", ori, "--source", str(path))
        assert published.returncode == 0, published.stderr

    local, county, neighbour = region.local, region.county, region.neighbour
    everything = [(local, "L-1"), (local, "L-2"), (neighbour, "N-1")]
    wait_for(
        lambda: found(region, county, "7ABC123") == everything,
        60,
        "the county's index to hold both agencies' reads of 7ABC123",
    )
    assert found(region, county, "8XYZ999") == [(local, "L-3")]
    # The city receives the neighbour's reads; its own stay in its own systems.
    wait_for(
        lambda: found(region, local, "7ABC123") == [(neighbour, "N-1")],
        30,
        "the city's index to hold the neighbour's read",
    )
    # Nobody shares with the federal task force or with the neighbour: default deny.
    assert found(region, region.federal, "7ABC123") == []
    assert found(region, neighbour, "7ABC123") == []

    # The row without a plate is in the dead-letter topic, with its line; the rest flowed.
    bootstrap = region.settings.bootstrap_servers
    dead = dead_letters(bootstrap, Stage.PRODUCERS, lambda d: d["source_ori"] == local)
    assert [(d["error_type"], d["position"]) for d in dead] == [("missing_plate", "line 5")]

    for stage, topic_name in (
        (Stage.STREAMS, source_topic(region.local, Kind.ALPR_READ)),
        (Stage.CONSUMERS, share_topic(region.county, Kind.ALPR_READ)),
    ):
        parked = dead_letters(bootstrap, stage, lambda d, t=topic_name: d["source"] == t)
        assert [d["error_type"] for d in parked] == ["undecodable"]
        assert parked[0]["position"].startswith("partition ")

    # Searching is audited in the agency's own store, and refused without a reason.
    with sqlite3.connect(index_path(region.settings, county)) as db:
        audit = db.execute("select user, reason from search_audit").fetchall()
    assert ("det.rivera", "case 24-001") in audit
    # ... and published from there to audit.search by the county's projector.
    decode_search = AvroDeserializer(SchemaStore(), SEARCH_AUDIT)

    def searches(records: list) -> list[dict]:
        decoded = (decode_search(m.value(), SerializationContext(AUDIT_SEARCH)) for m in records)
        return [d for d in decoded if d["agency_ori"] == county]

    published = searches(
        read_topic(region.settings.bootstrap_servers, AUDIT_SEARCH, lambda r: bool(searches(r)))
    )
    assert {(d["user"], d["reason"]) for d in published} == {("det.rivera", "case 24-001")}
    assert json.loads(published[0]["query_json"])["plate"] in ("7ABC123", "8XYZ999")
    refused = mutualaid_cli(region, "search", "--agency", county, "--plate", "7ABC123")
    assert refused.returncode == 3
    assert "refused: every search needs a reason" in refused.stderr
