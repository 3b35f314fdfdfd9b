"""A stage's changelog table (streams/table.py, the router's holders and the matcher's recent
alerts): per partition, written to its changelog only as a batch's last state per key, and read
back by the worker newly assigned a partition, including what the faust tables of earlier
versions wrote; a record that is not a table entry stops the read, naming where it is."""

from __future__ import annotations

import json
import tracemalloc
import uuid

import faust
import pytest
from confluent_kafka import Consumer, Producer

from mutualaid.kafka import (
    DeliveryTracker,
    ensure_topics,
    produce,
    producer_config,
    wait_for_broker,
)
from mutualaid.kafkaclients import client_config
from mutualaid.settings import Settings
from mutualaid.topics import TopicSpec
from streams.router import FORGET_AFTER_MS, HoldersEntry, holders_expiry
from streams.table import ChangelogTable, ChangelogUnreadable
from support.brokers import Broker


def entry(partition: int, *partners: str) -> HoldersEntry:
    return {
        "partition": partition,
        "offset": 1,
        "version": 1,
        "labels": [],
        "policy": "p",
        "partners": {p: ["a", 1] for p in partners},
    }


def test_a_partition_not_loaded_cannot_be_routed() -> None:
    table = ChangelogTable("t")
    with pytest.raises(KeyError, match="partition 3 is not loaded"):
        table.at(3)


def test_a_batch_writes_only_the_last_state_of_each_key_on_its_partition() -> None:
    table = ChangelogTable("t")
    table._parts.update({0: {}, 1: {}})  # as ``load`` leaves two empty partitions
    table.at(0)
    table["alpr.read/A/1"] = entry(0, "X")
    table["alpr.read/A/1"] = entry(0, "X", "Y")
    table["alpr.read/A/2"] = entry(0, "X")
    table.at(1)
    table["alpr.read/A/3"] = entry(1, "Y")
    table.at(0)
    table.pop("alpr.read/A/2")
    assert table.get("alpr.read/A/3") is None  # lives on partition 1
    written = {(p, json.loads(k)): v and json.loads(v) for p, k, v in table.changes()}
    assert written == {
        (0, "alpr.read/A/1"): entry(0, "X", "Y"),
        (0, "alpr.read/A/2"): None,
        (1, "alpr.read/A/3"): entry(1, "Y"),
    }
    assert table.changes() == []
    assert sorted(table) == ["alpr.read/A/1", "alpr.read/A/3"]
    table.keep_only({1})
    assert sorted(table) == ["alpr.read/A/3"] and table.partitions == {1}


def test_entries_past_their_expiry_are_removed_and_their_tombstones_written() -> None:
    hour = 3_600_000
    table: ChangelogTable[HoldersEntry] = ChangelogTable("t", expiry=holders_expiry)
    table._parts.update({0: {}, 1: {}})

    def held(until: int | None, partition: int = 0) -> HoldersEntry:
        made = entry(partition, "X")
        if until is not None:
            made["held_until"] = until - FORGET_AFTER_MS  # so it expires at ``until``
        return made

    table.at(0)
    table["gone"] = held(10 * hour + 5)
    table["later-that-hour"] = held(10 * hour + 50)
    table["kept-longer"] = held(10 * hour + 5)
    table["kept-longer"] = held(30 * hour)  # written again: filed under its new hour
    table["no-limit"] = held(None)
    table["deleted"] = held(9 * hour)
    del table["deleted"]
    table.at(1)
    table["other-partition"] = held(2 * hour, partition=1)
    table.changes()  # the batch that wrote them
    assert table.expire(10 * hour + 10) == 2
    assert sorted(table) == ["kept-longer", "later-that-hour", "no-limit"]
    written = {(p, json.loads(k)): v for p, k, v in table.changes()}
    assert written == {(0, "gone"): None, (1, "other-partition"): None}
    assert table.expire(10 * hour + 10) == 0  # nothing more due yet
    assert table.expire(10 * hour + 50) == 1
    assert table.expire(40 * hour) == 1
    assert sorted(table) == ["no-limit"]
    # A table without an expiry keeps everything.
    plain: ChangelogTable[HoldersEntry] = ChangelogTable("t")
    plain._parts.update({0: {}})
    plain.at(0)
    plain["a"] = held(hour)
    assert plain.expire(100 * hour) == 0


def test_entries_are_kept_compact_and_a_read_is_a_copy() -> None:
    """A router holds one holders entry per record partners may still hold: kept as its
    changelog bytes, a two-partner entry takes about a quarter of what it takes as Python dicts
    and lists (~2,090 bytes, measured the same way), which bounds how many reads one worker can
    remember in a given memory."""
    fingerprint = "f" * 64

    def held(n: int) -> HoldersEntry:
        # As read back from a changelog or built per record: strings of its own, ints > 256.
        return json.loads(
            json.dumps(
                {
                    "partition": 3,
                    "offset": 1_000_000 + n,
                    "version": 1,
                    "labels": [],
                    "policy": fingerprint,
                    "revision": 1_765_000_000_000 + n,
                    "partners": {
                        "CA0990100": ["alpr-mutual-aid", 3, fingerprint, "SHARED"],
                        "CA0990200": ["alpr-mutual-aid", 3, fingerprint, "SHARED"],
                    },
                    "held_until": 1_767_000_000_000 + n,
                }
            )
        )

    count = 5_000
    keys = [f"alpr.read/NV0990300/{uuid.uuid4()}" for _ in range(count)]
    table: ChangelogTable[HoldersEntry] = ChangelogTable("t", expiry=holders_expiry)
    table._parts.update({3: {}})
    table.at(3)
    tracemalloc.start()
    try:
        for n, key in enumerate(keys):
            table[key] = held(n)  # kept by the table alone, as the router's are
        table.changes()  # the batch's changelog records, written and let go
        held_bytes = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held_bytes / count < 700, f"{held_bytes / count:.0f} bytes per entry"
    read = table[keys[0]]
    assert read == held(0)
    read["partners"].clear()
    assert table[keys[0]] == held(0)  # changed only when written back


def test_a_newly_assigned_worker_reads_back_every_partition_with_deletes_and_faust_keys(
    broker: Broker,
) -> None:
    settings = Settings(bootstrap_servers=broker.bootstrap_servers)
    topic = f"holders-{uuid.uuid4().hex[:8]}"
    ensure_topics(wait_for_broker(settings), [TopicSpec(topic, 4, compacted=True)], 1)
    producer, acks = Producer(producer_config(settings)), DeliveryTracker()
    first = ChangelogTable(topic)
    first._parts.update({p: {} for p in range(4)})
    for n in range(200):
        first.at(n % 4)
        first[f"alpr.read/A/{n}"] = entry(n % 4, "X")
    for n in range(0, 200, 10):
        first.at(n % 4)
        del first[f"alpr.read/A/{n}"]
    for partition, key, value in first.changes():
        produce(producer, topic, key, value, acks, partition)
    # What the faust table of an earlier router wrote, through faust's own serializers.
    faust_table = faust.App("compat", broker="kafka://127.0.0.1:1").Table("h", key_type=str)
    key, _ = faust_table.changelog_topic.prepare_key("alpr.read/A/faust", None)
    value, _ = faust_table.changelog_topic.prepare_value(entry(2, "Z"), None)
    # This router writes a record's entry byte for byte as faust did: one key per record in
    # the compacted topic across the upgrade.
    probe = ChangelogTable(topic)
    probe._parts[2] = {}
    probe.at(2)
    probe["alpr.read/A/faust"] = entry(2, "Z")
    assert probe.changes() == [(2, key, value)]
    produce(producer, topic, key, value, acks, 2)
    acks.wait(producer)

    reader = Consumer(client_config(settings, **{"group.id": "r", "auto.offset.reset": "earliest"}))
    try:
        second = ChangelogTable(topic)
        second.load(reader, {1, 2})
        assert second.partitions == {1, 2}
        expected = {f"alpr.read/A/{n}" for n in range(200) if n % 4 in (1, 2) and n % 10}
        assert set(second) == expected | {"alpr.read/A/faust"}
        second.at(2)
        assert second["alpr.read/A/faust"]["partners"] == {"Z": ["a", 1]}
        second.load(reader, {0, 1, 2, 3})  # only the two not loaded yet are read
        assert len(second) == 180 + 1
        # Read back with an expiry, entries are filed by it: those past it are removed.
        third = ChangelogTable(topic, expiry=lambda e: 1000 if e["partition"] == 3 else None)
        third.load(reader, {2, 3})
        assert third.expire(999) == 0
        assert third.expire(1000) == 50  # partition 3's
        on_2 = {f"alpr.read/A/{n}" for n in range(200) if n % 4 == 2 and n % 10}
        assert set(third) == on_2 | {"alpr.read/A/faust"}
    finally:
        reader.close()


def test_a_record_that_is_no_entry_stops_the_read_naming_where_it_is(broker: Broker) -> None:
    settings = Settings(bootstrap_servers=broker.bootstrap_servers)
    topic = f"holders-{uuid.uuid4().hex[:8]}"
    ensure_topics(wait_for_broker(settings), [TopicSpec(topic, 2, compacted=True)], 1)
    producer, acks = Producer(producer_config(settings)), DeliveryTracker()
    produce(producer, topic, b"alpr.read/A/bare", json.dumps(entry(0, "X")).encode(), acks, 0)
    produce(producer, topic, b'"alpr.read/A/2"', json.dumps(entry(1, "X")).encode(), acks, 1)
    produce(producer, topic, b'"alpr.read/A/3"', b"{not json", acks, 1)
    acks.wait(producer)
    reader = Consumer(client_config(settings, **{"group.id": "r", "auto.offset.reset": "earliest"}))
    try:
        table: ChangelogTable[HoldersEntry] = ChangelogTable(topic)
        table.load(reader, {0})  # a bare UTF-8 key (not JSON) is read as the key it spells
        table.at(0)
        assert table["alpr.read/A/bare"]["partners"] == {"X": ["a", 1]}
        with pytest.raises(ChangelogUnreadable, match=rf"{topic} partition 1 offset 1: not a"):
            table.load(reader, {0, 1})
        assert table.partitions == {0}  # partition 1 is not half loaded
    finally:
        reader.close()
