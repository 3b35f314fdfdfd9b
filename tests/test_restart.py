"""The router and the matcher stopped mid-stream and started again, on the real broker: their
tables (the router's holders, the matcher's recent alerts) come back from the changelogs (a
delete after the restart still reaches every holder; a repeat read inside the window stays
quiet), hotlists still match, nothing is lost."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Message

from mutualaid.broker import EmbeddedBroker
from mutualaid.processes import spawn, stop
from mutualaid.serde import HIT_ALERT, SHARED_EVENT, SerializationContext, codecs_for
from mutualaid.settings import Settings
from mutualaid.topics import Kind, alerts_topic, share_topic
from producers.hotlist import add_bolo
from support.brokers import read_topic
from support.events import alpr_event
from support.processes import wait_for
from support.regions import FAR_AWAY, IN_CITY, Region, dispatch_region, publish_source

NOW = datetime.now(UTC).replace(microsecond=0)
# Enough that the router is still on them when stopped (it stops first, as soon as the county
# holds 100 of them): it routed all of 4,000 before a SIGTERM reached it.
BATCH = 12_000
HIT_PLATE = "7ABC123"


@pytest.fixture
def centers(tmp_path: Path, broker: EmbeddedBroker) -> Region:
    return dispatch_region(tmp_path, broker, alert_repeat_seconds=600)


def bulk(owner: str, first: int, count: int) -> list[dict]:
    return [
        alpr_event(owner, f"B{n:05d}", f"{n:07d}", FAR_AWAY, at=NOW, plate_state="CA")
        for n in range(first, first + count)
    ]


def shared(
    settings: Settings, partner: str, done: Callable[[list[dict | None]], bool], timeout: float
) -> list[dict | None]:
    """What the partner's share topic holds, decoded (None: a tombstone), once ``done``."""
    topic = share_topic(partner, Kind.ALPR_READ)
    decode = codecs_for(settings).deserializer(SHARED_EVENT[Kind.ALPR_READ])

    decoded: list[dict | None] = []

    def events(records: list[Message]) -> list[dict | None]:
        # Only the records new since the last call: decoding all of them at every poll made
        # the wait quadratic, and it timed out on a busy machine with 40,000 reads.
        decoded.extend(
            decode(m.value(), SerializationContext(topic)) for m in records[len(decoded) :]
        )
        return decoded

    return events(read_topic(settings.bootstrap_servers, topic, lambda r: done(events(r)), timeout))


def received(events: list[dict | None]) -> tuple[set[str], list[str]]:
    """The record ids among ``events``, and the ops of H1 in order."""
    ids = {e["envelope"]["record_id"] for e in events if e is not None}
    h1 = [e["envelope"]["op"] for e in events if e and e["envelope"]["record_id"] == "H1"]
    return ids, h1


def alerted(settings: Settings, center: str, until: int, timeout: float = 60) -> list[str]:
    """The reads the center was alerted for, in order, once there are ``until`` of them.

    Delivery is at least once across a restart or rebalance, and an alert's id is derived from
    what it reports: a repeated id is the same alert again (consumers drop it), not a new hit.
    """
    topic = alerts_topic(center)
    decode = codecs_for(settings).deserializer(HIT_ALERT)

    def reads(records: list[Message]) -> list[str]:
        first: dict[str, str] = {}
        for m in records:
            alert = decode(m.value(), SerializationContext(topic))
            if alert is not None:
                first.setdefault(alert["alert_id"], alert["read_record_id"])
        return list(first.values())

    return reads(
        read_topic(settings.bootstrap_servers, topic, lambda r: len(reads(r)) >= until, timeout)
    )


@pytest.mark.broker
def test_router_and_matcher_restarted_mid_stream_recover_their_tables(
    centers: Region, tmp_path: Path
) -> None:
    s, city, county, neighbour = centers.settings, centers.local, centers.county, centers.neighbour
    add_bolo(s, city, {"plate": HIT_PLATE, "reason": "stolen_vehicle"})
    base = [sys.executable, "-m", "cli", "--config", str(centers.config_file)]

    def start(run: str) -> list:
        logs = tmp_path / run
        logs.mkdir()
        procs = [
            spawn([*base, stage], log=logs / f"{stage}.log") for stage in ("router", "matcher")
        ]
        wait_for(
            lambda: "hotlists loaded: 1 entries" in (logs / "matcher.log").read_text(),
            60,
            "hotlists",
        )
        return procs

    first = start("first")
    try:
        # The hit first, on partition 0, then a stream of reads the stages are still on when
        # they are stopped.
        publish_source(
            centers,
            Kind.ALPR_READ,
            [alpr_event(neighbour, "H1", HIT_PLATE, IN_CITY, at=NOW, plate_state="CA")],
            owner=neighbour,
            partition=0,
        )
        publish_source(centers, Kind.ALPR_READ, bulk(neighbour, 0, BATCH), owner=neighbour)
        assert alerted(s, city, 1) == ["H1"]
        shared(s, county, lambda events: len(events) >= 100, timeout=60)
    finally:
        for proc in first:
            stop(proc, timeout=20)
    mid = len(shared(s, county, lambda events: False, timeout=3))
    publish_source(centers, Kind.ALPR_READ, bulk(neighbour, BATCH, BATCH), owner=neighbour)

    second = start("second")
    try:
        # After the restart: a delete of the first record shared, a repeat of the hit plate
        # inside the window (quiet only if the matcher's table came back), then one past it.
        deleted = alpr_event(
            neighbour, "H1", HIT_PLATE, IN_CITY, at=NOW, version=2, op="DELETE", plate_state="CA"
        )
        later = [
            alpr_event(
                neighbour, "H2", HIT_PLATE, IN_CITY, at=NOW + timedelta(minutes=2), plate_state="CA"
            ),
            alpr_event(
                neighbour,
                "H3",
                HIT_PLATE,
                IN_CITY,
                at=NOW + timedelta(minutes=15),
                plate_state="CA",
            ),
        ]
        publish_source(centers, Kind.ALPR_READ, [deleted, *later], owner=neighbour, partition=0)
        expected = {"H1", "H2", "H3"} | {f"B{n:05d}" for n in range(2 * BATCH)}
        for partner in (city, county):

            def complete(events: list[dict | None]) -> bool:
                ids, h1 = received(events)
                return ids >= expected and h1[-1:] == ["DELETE"]

            ids, h1 = received(shared(s, partner, complete, timeout=240))
            assert ids == expected, f"{partner}: {len(expected - ids)} reads lost"
            assert h1[-1:] == ["DELETE"], f"{partner} still holds H1: {h1}"
        assert alerted(s, city, 2) == ["H1", "H3"]
        assert alerted(s, city, 3, timeout=3) == ["H1", "H3"]  # and H2 never
    finally:
        for proc in second:
            stop(proc, timeout=20)
    assert 100 <= mid < BATCH + 1, f"the first run shared {mid}: not stopped mid-stream"
