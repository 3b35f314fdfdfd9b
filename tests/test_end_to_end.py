"""CSV -> connector -> router -> projectors -> search: real processes on a real broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumers.index import open_index
from consumers.index.query import Criteria
from mutualaid.events import new_envelope, record_key
from mutualaid.serde import (
    SEARCH_AUDIT,
    SHARED_EVENT,
    AvroDeserializer,
    AvroSerializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import AUDIT_SEARCH, Kind, Stage, share_topic, source_topic
from producers import samples
from support.brokers import dead_letters, read_topic
from support.indexes import both_index_backends, index_rows
from support.processes import mutualaid_cli, running_stages, wait_for
from support.regions import Region

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
@both_index_backends
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
    # Record ids are the camera's id and the vendor's read id.
    everything = [(local, "C1/L-1"), (local, "C2/L-2"), (neighbour, "D1/N-1")]
    wait_for(
        lambda: found(region, county, "7ABC123") == everything,
        60,
        "the county's index to hold both agencies' reads of 7ABC123",
    )
    assert found(region, county, "8XYZ999") == [(local, "C2/L-3")]
    # The city receives the neighbour's reads, beside its own (from its own topics).
    wait_for(
        lambda: found(region, local, "7ABC123") == everything,
        30,
        "the city's index to hold the neighbour's read and its own",
    )
    # Nobody shares with the federal task force or with the neighbour: default deny. The
    # neighbour holds only its own read.
    assert found(region, region.federal, "7ABC123") == []
    assert found(region, neighbour, "7ABC123") == [(neighbour, "D1/N-1")]

    # The row without a plate is in the dead-letter topic, with its line; the rest flowed.
    bootstrap = region.settings.bootstrap_servers
    dead = dead_letters(bootstrap, Stage.PRODUCERS, lambda d: d["source_ori"] == local)
    assert [(d["error_type"], d["position"]) for d in dead] == [("missing_plate", "line 5")]

    for stage, topic_name in (
        (Stage.STREAMS, source_topic(region.local, Kind.ALPR_READ)),
        (Stage.CONSUMERS, share_topic(region.county, Kind.ALPR_READ)),
        # The city's projector reads its own source topic too, poison included.
        (Stage.CONSUMERS, source_topic(region.local, Kind.ALPR_READ)),
    ):
        parked = dead_letters(bootstrap, stage, lambda d, t=topic_name: d["source"] == t)
        assert [d["error_type"] for d in parked] == ["undecodable"]
        assert parked[0]["position"].startswith("partition ")

    # Searching is audited in the agency's own store, and refused without a reason.
    audit = index_rows(region.settings, county, 'select "user", reason from search_audit')
    assert ("det.rivera", "case 24-001") in audit
    # Whatever the backend, the indexes hold exactly what was shared with their agency, and
    # each agency's own records.
    held = "select source_ori, record_id from records where deleted = false order by record_id"
    city_reads = [(local, "C1/L-1"), (local, "C2/L-2"), (local, "C2/L-3")]
    assert index_rows(region.settings, county, held) == [*city_reads, (neighbour, "D1/N-1")]
    wait_for(
        lambda: (
            index_rows(region.settings, region.local, held) == [*city_reads, (neighbour, "D1/N-1")]
        ),
        30,
        "the city's index to hold its own reads and the neighbour's",
    )
    assert index_rows(region.settings, neighbour, held) == [(neighbour, "D1/N-1")]
    assert index_rows(region.settings, region.federal, held) == []
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


T0 = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)
SHARED_READ = AvroSerializer(SchemaStore(), SHARED_EVENT[Kind.ALPR_READ])


def publish_shared(region: Region, reads: list[dict]) -> None:
    """Shared reads straight onto the county's topic, all on partition 0, so that once the
    last is indexed every earlier one has been through the projector too."""
    topic = share_topic(region.county, Kind.ALPR_READ)
    producer = Producer({"bootstrap.servers": region.settings.bootstrap_servers})
    for read in reads:
        value = SHARED_READ(read, SerializationContext(topic))
        producer.produce(topic, value, record_key(read["envelope"]), partition=0)
    assert producer.flush(10) == 0


def shared_read(
    region: Region,
    record_id: str,
    plate: str | None,
    version: int,
    *,
    minutes: int,
    where: tuple[float, float] = (38.94, -119.98),
) -> dict:
    op = "UPSERT" if plate else "DELETE"
    envelope = new_envelope(
        source_ori=region.neighbour,
        source_system="test",
        kind=Kind.ALPR_READ,
        record_id=record_id,
        version=version,
        occurred_at=T0 + timedelta(minutes=minutes),
        op=op,
    )
    disclosure = {
        "partner_ori": region.county,
        "agreement_id": "neighbour-to-ca",
        "agreement_version": 1,
        "tier": "FULL",
    }
    body = {"plate": plate, "latitude": where[0], "longitude": where[1]} if plate else None
    return {"envelope": envelope, "disclosure": disclosure, "body": body}


def search_ids(region: Region, *criteria: str) -> list[str]:
    """Record ids the county's search returns, in the order returned."""
    result = mutualaid_cli(
        region, "search", "--agency", region.county, *criteria,
        "--reason", "case 24-002", "--user", "det.cho", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["record_id"] for line in result.stdout.splitlines()]


@pytest.mark.broker
@both_index_backends
def test_the_projected_index_is_idempotent_ordered_and_searchable(
    region: Region, tmp_path: Path
) -> None:
    far = (40.5, -118.0)  # sentinels: nowhere near the searches below
    reads = [
        shared_read(region, "N-1", "7ABC123", 2, minutes=10),
        shared_read(region, "N-1", "7ABC999", 1, minutes=5),  # older version, arriving late
        shared_read(region, "N-2", "8XYZ111", 1, minutes=20),
        shared_read(region, "N-2", None, 2, minutes=20),  # withdrawn: a tombstone
        shared_read(region, "N-2", "8XYZ111", 1, minutes=20),  # a late copy cannot resurrect
        shared_read(region, "N-3", "8OS1Z3", 1, minutes=30, where=(38.60, -120.40)),
    ]
    stored = (
        "select source_ori, record_id, version, deleted, plate, plate_key, latitude, "
        "cast(body as text) from records where record_id like 'N-%' order by record_id"
    )

    def indexed(plate: str) -> bool:
        index = open_index(region.settings, region.county)  # searched unlogged: no audit row
        try:
            return bool(index.search(Criteria(plate=plate)))
        finally:
            index.close()

    publish_shared(region, [*reads, shared_read(region, "S-1", "ZZZ001", 1, minutes=0, where=far)])
    with running_stages(region, tmp_path, [region.county]):
        wait_for(lambda: indexed("ZZZ001"), 60, "the county's projector to index the first pass")
        before = index_rows(region.settings, region.county, stored)
        # The same events again, as a replay of the topic would bring them: nothing changes.
        publish_shared(
            region, [*reads, shared_read(region, "S-2", "ZZZ002", 1, minutes=0, where=far)]
        )
        wait_for(lambda: indexed("ZZZ002"), 60, "the county's projector to index the replay")
        assert index_rows(region.settings, region.county, stored) == before
    assert [(r[1], r[2], r[3], r[4]) for r in before] == [
        ("N-1", 2, False, "7ABC123"),
        ("N-2", 2, True, None),
        ("N-3", 1, False, "8OS1Z3"),
    ]

    assert search_ids(region, "--plate", "7ABC123") == ["N-1"]
    assert search_ids(region, "--plate", "7ABC999") == []  # the older version never landed
    assert search_ids(region, "--plate", "8XYZ111") == []  # withdrawn stays withdrawn
    assert search_ids(region, "--plate", "BO51Z3") == ["N-3"]  # the camera misread B as 8...
    assert search_ids(region, "--plate", "8O*") == ["N-3"]
    assert search_ids(region, "--near", "38.94,-119.98,5") == ["N-1"]
    assert search_ids(region, "--near", "38.60,-120.40,5") == ["N-3"]
    window = ["--since", (T0 + timedelta(minutes=8)).isoformat()]
    assert search_ids(region, "--near", "38.94,-119.98,100", *window) == ["N-3", "N-1"]
    window += ["--until", (T0 + timedelta(minutes=15)).isoformat()]
    assert search_ids(region, "--near", "38.94,-119.98,100", *window) == ["N-1"]

    refused = mutualaid_cli(region, "search", "--agency", region.county, "--plate", "7ABC123")
    assert (refused.returncode, refused.stdout) == (3, "")
    audit = index_rows(
        region.settings,
        region.county,
        'select "user", reason, query_json from search_audit order by id',
    )
    assert len(audit) == 9  # every search above but the refused one
    assert {(user, reason) for user, reason, _ in audit} == {("det.cho", "case 24-002")}
    assert json.loads(audit[3][2])["plate"] == "BO51Z3"
