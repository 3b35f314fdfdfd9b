"""The router's holders table: which partners hold each shared record, kept in memory per
partition and in a compacted changelog topic, so a restarted or rebalanced router knows whom a
delete, a seal or a narrowing must reach.

Partition ``p`` of the table holds the records whose source events are on partition ``p`` (the
source topics and the router's control topic are co-partitioned), and its changelog is
partition ``p`` of ``<router_id>-holders-changelog``. A worker reads a partition's changelog
back when it is assigned that partition (``load``), writes what a batch changed at the end of
the batch (``changes``), through the same producer as the batch's shares, and commits the
batch's source offsets only once both were acknowledged: the changelog is never behind what is
committed.

Keys and values are written as faust wrote them (the key as a JSON string, the entry as
compact JSON, a deletion as a tombstone), so a router upgraded from the faust table recovers
its entries, and a record keeps one key in the compacted topic across the upgrade (a delete
written under another key than faust's would leave faust's entry to outlive it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, MutableMapping

from confluent_kafka import Consumer, TopicPartition

from mutualaid.errors import MutualaidError
from mutualaid.kafka import watermarks
from streams.router import HoldersEntry

log = logging.getLogger("mutualaid.router")

READ_BATCH = 10_000


class ChangelogUnreadable(MutualaidError):
    """A partition of the holders changelog could not be read back to its end."""


class HoldersTable(MutableMapping[str, HoldersEntry]):
    """The entries of the partitions assigned to this worker.

    ``at(p)`` says which partition the record being routed is on: reads and writes go to that
    partition's entries (a record's events are all on one partition). Iteration covers every
    assigned partition, for the rechecks."""

    def __init__(self, changelog_topic: str) -> None:
        self.changelog_topic = changelog_topic
        self._parts: dict[int, dict[str, HoldersEntry]] = {}
        self._current = -1
        self._changed: dict[tuple[int, str], HoldersEntry | None] = {}

    @property
    def partitions(self) -> set[int]:
        return set(self._parts)

    def at(self, partition: int) -> None:
        if partition not in self._parts:
            # Routing a record of a partition whose table is not loaded would decide it as if
            # nobody held it, and write that to the changelog: never.
            raise KeyError(f"holders partition {partition} is not loaded")
        self._current = partition

    # MutableMapping, on the current partition (iteration: on all of them)
    def __getitem__(self, key: str) -> HoldersEntry:
        return self._parts[self._current][key]

    def __setitem__(self, key: str, entry: HoldersEntry) -> None:
        self._parts[self._current][key] = entry
        self._changed[(self._current, key)] = entry

    def __delitem__(self, key: str) -> None:
        del self._parts[self._current][key]
        self._changed[(self._current, key)] = None

    def __iter__(self) -> Iterator[str]:
        for entries in list(self._parts.values()):
            yield from list(entries)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._parts.values())

    def items(self) -> Iterator[tuple[str, HoldersEntry]]:  # type: ignore[override]
        for entries in list(self._parts.values()):
            yield from list(entries.items())

    def get(self, key: str, default: HoldersEntry | None = None) -> HoldersEntry | None:  # type: ignore[override]
        return self._parts[self._current].get(key, default)

    def changes(self) -> list[tuple[int, bytes, bytes | None]]:
        """What changed since the last call, as changelog records (partition, key, value);
        only the last state of each key, so a record changed twice in a batch is written once."""
        changed, self._changed = self._changed, {}
        return [
            (partition, json.dumps(key).encode(), None if entry is None else _dumps(entry))
            for (partition, key), entry in changed.items()
        ]

    def keep_only(self, partitions: set[int]) -> None:
        for partition in set(self._parts) - partitions:
            del self._parts[partition]

    def load(self, consumer: Consumer, partitions: set[int], timeout: float = 120.0) -> None:
        """Read the changelog of each partition not loaded yet from its start to its end."""
        todo = sorted(partitions - set(self._parts))
        if not todo:
            return
        started = time.monotonic()
        ends: dict[int, int] = {}
        for partition in todo:
            low, high = watermarks(consumer, TopicPartition(self.changelog_topic, partition))
            self._parts[partition] = {}
            if high > low:
                ends[partition] = high
        unread = set(ends)
        if unread:
            consumer.assign([TopicPartition(self.changelog_topic, p, 0) for p in sorted(unread)])
        deadline = started + timeout
        count = 0
        while unread:
            if time.monotonic() > deadline:
                for partition in todo:
                    self._parts.pop(partition, None)
                raise ChangelogUnreadable(
                    f"{self.changelog_topic}: partitions {sorted(unread)} not read to their end "
                    f"within {timeout:.0f}s; is the broker up?"
                )
            messages = consumer.consume(READ_BATCH, 0.5)
            for msg in messages:
                number, offset = msg.partition(), msg.offset()
                if msg.error() is not None or number is None or offset is None:
                    continue
                self._apply(number, msg.key(), msg.value())
                count += 1
                if offset + 1 >= ends[number]:
                    unread.discard(number)
            if not messages:
                # The last records before the end can be gone (a compacted-away tombstone):
                # then the fetch position, not a record, says the end is reached.
                positions = consumer.position(
                    [TopicPartition(self.changelog_topic, p) for p in sorted(unread)]
                )
                unread -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
        if ends:
            consumer.unassign()
        log.info(
            "holders: %d changelog record(s) of partition(s) %s read back in %.1fs",
            count,
            todo,
            time.monotonic() - started,
        )

    def _apply(self, partition: int, raw_key: bytes | None, value: bytes | None) -> None:
        if raw_key is None:
            return
        key = raw_key.decode()
        if key.startswith('"'):  # as written; a bare UTF-8 key is read too
            key = json.loads(key)
        entries = self._parts[partition]
        if value is None:
            entries.pop(key, None)
        else:
            entries[key] = json.loads(value)


def _dumps(entry: HoldersEntry) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode()
