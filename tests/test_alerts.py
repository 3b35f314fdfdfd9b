"""Hotlists to hit alerts on a real broker: `mutualaid hotlist ...` publishes, the matcher
process alerts exactly the entitled dispatch center, once per window, never for expired or
removed entries."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mutualaid.broker import EmbeddedBroker
from mutualaid.events import new_envelope
from mutualaid.processes import spawn, stop
from mutualaid.serde import (
    HIT_ALERT,
    AvroDeserializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import Kind, Stage, alerts_topic, hotlist_topic
from support.brokers import dead_letters, read_topic
from support.processes import mutualaid_cli, wait_for
from support.regions import FAR_AWAY, IN_CITY, Region, dispatch_region, publish_source

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def centers(tmp_path: Path, broker: EmbeddedBroker) -> Region:
    """Three dispatch centers far apart: the neighbour shares its reads with both CA centers,
    the county shares its hotlist with the city."""
    return dispatch_region(tmp_path, broker, alert_repeat_seconds=600)


def extract(path: Path, rows: list[str]) -> Path:
    header = "ncic_number,plate,state,plate_type,reason,entered,expires,vehicle_make,notes"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def publish_reads(
    region: Region, owner: str, reads: list[tuple[str, str, tuple, datetime]]
) -> None:
    """(record id, plate, where, taken) reads, all on partition 0 so the matcher sees them in
    this order: a later alert proves every earlier read was already judged."""
    events = [
        {
            "envelope": new_envelope(
                source_ori=owner,
                source_system="test",
                kind=Kind.ALPR_READ,
                record_id=record_id,
                version=1,
                occurred_at=taken,
            ),
            "body": {"plate": plate, "plate_state": "CA", "latitude": lat, "longitude": lon},
        }
        for record_id, plate, (lat, lon), taken in reads
    ]
    publish_source(region, Kind.ALPR_READ, events, owner=owner, partition=0)


def alerts_for(region: Region, center: str, count: int, timeout: float = 60) -> list[dict]:
    topic = alerts_topic(center)
    decode = AvroDeserializer(SchemaStore(), HIT_ALERT)
    records = read_topic(
        region.settings.bootstrap_servers, topic, lambda r: len(r) >= count, timeout
    )
    return [decode(m.value(), SerializationContext(topic)) for m in records]


def test_hotlist_commands_publish_replace_and_dead_letter(centers: Region, tmp_path: Path) -> None:
    city = centers.local
    first = extract(
        tmp_path / "ncic-1.csv",
        [
            "V1,7abc-123,CA,PC,Stolen Vehicle,2026-11-01,,TOYT,taken overnight",
            "V2,5XYZ999,CA,PC,wanted,2026-11-02,2030-01-31,,",
            "V3,,CA,PC,stolen_vehicle,2026-11-03,,,",  # no plate
            "V4,6DEF456,CA,PC,speeding,2026-11-03,,,",  # not a hotlist reason
        ],
    )
    loaded = mutualaid_cli(centers, "hotlist", "load", "--agency", city, str(first))
    assert loaded.returncode == 1, loaded.stderr
    assert "2 entries published, 0 removed" in loaded.stdout
    assert "2 lines rejected" in loaded.stdout
    letters = dead_letters(
        centers.settings.bootstrap_servers,
        Stage.PRODUCERS,
        lambda d: d["source_ori"] == city,
        timeout=10,
    )
    assert {(d["error_type"], d["position"]) for d in letters} == {
        ("missing_plate", "ncic-1.csv:4"),
        ("bad_reason", "ncic-1.csv:5"),
    }
    added = mutualaid_cli(centers, "hotlist", "add", "--agency", city, "--plate", "2BOL222")
    assert added.returncode == 0, added.stderr
    bolo = added.stdout.strip()
    assert bolo.startswith("BOLO-")

    # The next extract no longer lists V1: it is removed; the BOLO is not the extract's.
    second = extract(tmp_path / "ncic-2.csv", ["V2,5XYZ999,CA,PC,wanted,2026-11-02,2030-01-31,,"])
    reloaded = mutualaid_cli(centers, "hotlist", "load", "--agency", city, str(second))
    assert reloaded.returncode == 0, reloaded.stderr
    assert "1 entries published, 1 removed" in reloaded.stdout
    listed = mutualaid_cli(centers, "hotlist", "list", "--agency", city).stdout.splitlines()
    assert [line.split()[:3] for line in listed] == [
        [bolo, "2BOL222", "--"],
        ["V2", "5XYZ999", "CA"],
    ]
    assert "until 2030-02-01 00:00Z" in listed[1]  # an expiry date means through that day

    assert mutualaid_cli(centers, "hotlist", "remove", "--agency", city, bolo).returncode == 0
    assert mutualaid_cli(centers, "hotlist", "remove", "--agency", city, bolo).returncode == 1
    listed = mutualaid_cli(centers, "hotlist", "list", "--agency", city).stdout
    assert bolo not in listed
    # On the compacted topic a removal is a DELETE event followed by a tombstone.
    records = read_topic(
        centers.settings.bootstrap_servers, hotlist_topic(city), lambda r: len(r) >= 8
    )
    assert [m.value() is None for m in records].count(True) == 2


def test_matcher_alerts_the_entitled_center_once_per_window(
    centers: Region, tmp_path: Path
) -> None:
    city, county, neighbour = centers.local, centers.county, centers.neighbour
    yesterday = (NOW - timedelta(days=1)).date().isoformat()
    city_list = extract(
        tmp_path / "city.csv",
        [
            "V1,7ABC123,CA,PC,stolen_vehicle,2026-11-01,,TOYT,taken overnight",
            f"OLD,1OLD111,CA,PC,stolen_vehicle,2026-01-01,{yesterday},,",
        ],
    )
    assert (
        mutualaid_cli(centers, "hotlist", "load", "--agency", city, str(city_list)).returncode == 0
    )
    bolo = mutualaid_cli(centers, "hotlist", "add", "--agency", city, "--plate", "2BOL222")
    assert (
        mutualaid_cli(
            centers, "hotlist", "remove", "--agency", city, bolo.stdout.strip()
        ).returncode
        == 0
    )
    county_list = extract(tmp_path / "county.csv", ["C1,8XYZ789,CA,PC,amber,2026-11-20,,,"])
    assert (
        mutualaid_cli(centers, "hotlist", "load", "--agency", county, str(county_list)).returncode
        == 0
    )

    base = [sys.executable, "-m", "cli", "--config", str(centers.config_file)]
    log = tmp_path / "matcher.log"
    matcher = spawn([*base, "matcher"], log=log)
    try:
        wait_for(lambda: "hotlists loaded: 3 entries" in log.read_text(), 60, "the hotlists")
        publish_reads(
            centers,
            neighbour,
            [
                ("r1", "1OLD111", IN_CITY, NOW),  # expired yesterday
                ("r2", "2BOL222", IN_CITY, NOW),  # removed BOLO
                ("r3", "7ABC123", IN_CITY, NOW),  # the city's stolen vehicle
                ("r4", "7ABC123", IN_CITY, NOW + timedelta(minutes=2)),  # a repeat: quiet
                ("r5", "7ABC123", IN_CITY, NOW + timedelta(minutes=15)),  # past the window
                ("r6", "8XYZ789", FAR_AWAY, NOW),  # the county's AMBER entry, far from all
            ],
        )
        to_city = alerts_for(centers, city, 2)
        assert [(a["read_record_id"], a["entry_id"], a["match"]) for a in to_city] == [
            ("r3", "V1", "EXACT"),
            ("r5", "V1", "EXACT"),
        ]
        assert to_city[0]["entry"]["notes"] == "taken overnight"
        assert to_city[0]["read"]["latitude"] == IN_CITY[0]
        to_county = alerts_for(centers, county, 1)
        # r6 came last on the same partition: had the county been alerted for r3-r5, those
        # alerts would be on its topic before this one.
        assert [(a["read_record_id"], a["entry"]["reason"]) for a in to_county] == [("r6", "amber")]
        # And nothing more arrives for anyone (the city got nothing for r6: camera far away).
        assert len(alerts_for(centers, city, 3, timeout=3)) == 2
        assert alerts_for(centers, neighbour, 1, timeout=3) == []
    finally:
        stop(matcher, timeout=10)
