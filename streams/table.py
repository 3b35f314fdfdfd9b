"""A stream stage's state: a table kept in memory per partition and in a compacted changelog
topic, so a restarted or rebalanced worker carries on from where the last one left.

Two tables use it: the router's holders (which partners hold each shared record, so a delete,
a seal or a narrowing reaches them: ``<router_id>-holders-changelog``) and the matcher's recent
alerts (its repeat window: ``<matcher_id>-recent-changelog``).

Partition ``p`` of a table holds the state of the records on partition ``p`` of the stage's
input topics (co-partitioned: ``streams.batchloop`` assigns them with the ``range``
assignor), and its changelog is partition ``p`` of the changelog topic. A worker reads a
partition's changelog back when it is assigned that partition (``load``), writes what a batch
changed at the end of the batch (``changes``), through the same producer as the batch's
outputs, and commits the batch's offsets only once both were acknowledged: the changelog is
never behind what is committed.

Keys and values are written as faust wrote them (the key as a JSON string, the value as
compact JSON, a deletion as a tombstone), so a stage upgraded from its faust table recovers
its entries, and a key keeps one form in the compacted topic across the upgrade (a delete
written under another key than faust's would leave faust's entry to outlive it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

from confluent_kafka import Consumer, TopicPartition

from mutualaid.errors import MutualaidError
from mutualaid.kafka import watermarks

log = logging.getLogger("mutualaid.table")
V = TypeVar("V")

READ_BATCH = 10_000
HOUR_MS = 3_600_000


class ChangelogUnreadable(MutualaidError):
    """A partition of a changelog could not be read back to its end, or holds a record that
    is not a table entry."""


class ChangelogTable(MutableMapping[str, V], Generic[V]):
    """The entries of the partitions assigned to this worker.

    ``at(p)`` says which partition the record being processed is on: reads and writes go to
    that partition's entries (a record's events are all on one partition). Iteration covers
    every assigned partition (the router's rechecks walk them all). Values must be JSON.

    ``expiry`` gives the moment (milliseconds since the epoch) after which an entry is no
    longer needed, or None for never; ``expire`` removes the entries past it, their
    tombstones among the ``changes``, so the table (in memory, and its changelog) holds what
    is still needed rather than everything ever written. Entries are filed by the hour they
    expire in, so ``expire`` looks only at the hours that are due.

    Each entry is kept as the bytes its changelog record holds (compact JSON) and decoded when
    read: a two-partner holders entry takes about 410 bytes so, with its key, against
    1,700-2,100 as Python dicts and lists, and a router holds one per record partners may
    still hold. Reading one costs a ``json.loads`` (a few microseconds); a plate read, new to
    the table, is a miss and costs nothing. A value read is a fresh copy: changing it changes
    nothing until it is written back.
    """

    def __init__(
        self, changelog_topic: str, expiry: Callable[[V], int | None] | None = None
    ) -> None:
        self.changelog_topic = changelog_topic
        self._parts: dict[int, dict[str, bytes]] = {}
        self._current = -1
        self._changed: dict[tuple[int, str], bytes | None] = {}
        self._expiry = expiry
        # partition -> hour -> keys whose entry expired in that hour when written (an entry
        # written again since is filed under its new hour too: looked at again when due).
        self._due: dict[int, dict[int, set[str]]] = {}

    @property
    def partitions(self) -> set[int]:
        return set(self._parts)

    def at(self, partition: int) -> None:
        if partition not in self._parts:
            # Routing a record of a partition whose table is not loaded would decide it as if
            # nobody held it, and write that to the changelog: never.
            raise KeyError(f"{self.changelog_topic} partition {partition} is not loaded")
        self._current = partition

    # MutableMapping, on the current partition (iteration: on all of them)
    def __getitem__(self, key: str) -> V:
        value: V = json.loads(self._parts[self._current][key])
        return value

    def __setitem__(self, key: str, entry: V) -> None:
        raw = _dumps(entry)
        self._parts[self._current][key] = raw
        self._changed[(self._current, key)] = raw
        self._file(self._current, key, entry)

    def __delitem__(self, key: str) -> None:
        del self._parts[self._current][key]
        self._changed[(self._current, key)] = None

    def __iter__(self) -> Iterator[str]:
        for entries in list(self._parts.values()):
            yield from list(entries)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._parts.values())

    def items(self) -> Iterator[tuple[str, V]]:  # type: ignore[override]
        for entries in list(self._parts.values()):
            for key, raw in list(entries.items()):
                yield key, json.loads(raw)

    def get(self, key: str, default: V | None = None) -> V | None:  # type: ignore[override]
        raw = self._parts[self._current].get(key)
        return default if raw is None else json.loads(raw)

    def changes(self) -> list[tuple[int, bytes, bytes | None]]:
        """What changed since the last call, as changelog records (partition, key, value);
        only the last state of each key, so a record changed twice in a batch is written once."""
        changed, self._changed = self._changed, {}
        return [
            (partition, json.dumps(key).encode(), raw) for (partition, key), raw in changed.items()
        ]

    def keep_only(self, partitions: set[int]) -> None:
        for partition in set(self._parts) - partitions:
            del self._parts[partition]
            self._due.pop(partition, None)

    def expire(self, now_ms: int) -> int:
        """Remove every entry whose expiry is at or before ``now_ms``; how many."""
        if self._expiry is None:
            return 0
        removed, hour = 0, now_ms // HOUR_MS
        for partition, hours in self._due.items():
            entries = self._parts.get(partition, {})
            for filed in sorted(h for h in hours if h <= hour):
                later = set()
                for key in hours.pop(filed):
                    raw = entries.get(key)
                    at = None if raw is None else self._expiry(json.loads(raw))
                    if raw is None or at is None or at // HOUR_MS != filed:
                        continue  # gone, or written since and filed elsewhere (or kept)
                    if at <= now_ms:
                        del entries[key]
                        self._changed[(partition, key)] = None
                        removed += 1
                    else:
                        later.add(key)  # later in this hour
                if later:
                    hours[filed] = later
        return removed

    def _file(self, partition: int, key: str, entry: V) -> None:
        at = None if self._expiry is None else self._expiry(entry)
        if at is not None:
            self._due.setdefault(partition, {}).setdefault(at // HOUR_MS, set()).add(key)

    def load(self, consumer: Consumer, partitions: set[int], timeout: float = 120.0) -> None:
        """Read the changelog of each partition not loaded yet from its start to its end; on
        failure none of them is loaded (ChangelogUnreadable)."""
        todo = sorted(partitions - set(self._parts))
        if not todo:
            return
        started = time.monotonic()
        try:
            count = self._read_back(consumer, todo, started + timeout)
        except BaseException:
            for partition in todo:
                self._parts.pop(partition, None)
                self._due.pop(partition, None)
            raise
        log.info(
            "%s: %d record(s) of partition(s) %s read back in %.1fs",
            self.changelog_topic,
            count,
            todo,
            time.monotonic() - started,
        )

    def _read_back(self, consumer: Consumer, todo: list[int], deadline: float) -> int:
        ends: dict[int, int] = {}
        for partition in todo:
            low, high = watermarks(consumer, TopicPartition(self.changelog_topic, partition))
            self._parts[partition] = {}
            self._due.pop(partition, None)
            if high > low:
                ends[partition] = high
        unread = set(ends)
        if not unread:
            return 0
        consumer.assign([TopicPartition(self.changelog_topic, p, 0) for p in sorted(unread)])
        count = 0
        try:
            while unread:
                if time.monotonic() > deadline:
                    raise ChangelogUnreadable(
                        f"{self.changelog_topic}: partitions {sorted(unread)} not read to their "
                        "end in time; is the broker up?"
                    )
                messages = consumer.consume(READ_BATCH, 0.5)
                for msg in messages:
                    number, offset = msg.partition(), msg.offset()
                    if msg.error() is not None or number is None or offset is None:
                        continue
                    self._apply(number, offset, msg.key(), msg.value())
                    count += 1
                    if offset + 1 >= ends[number]:
                        unread.discard(number)
                if not messages:
                    # The last records before the end can be gone (a compacted-away
                    # tombstone): then the fetch position, not a record, says the end is reached.
                    positions = consumer.position(
                        [TopicPartition(self.changelog_topic, p) for p in sorted(unread)]
                    )
                    unread -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
        finally:
            consumer.unassign()
        return count

    def _apply(
        self, partition: int, offset: int, raw_key: bytes | None, value: bytes | None
    ) -> None:
        if raw_key is None:
            return
        try:
            key = raw_key.decode()
            if key.startswith('"'):  # as written; a bare UTF-8 key is read too
                key = json.loads(key)
            entry = None if value is None else json.loads(value)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            # Skipping it would forget whom a record was shared with (the router could no
            # longer withdraw it): stop, and say where the record is.
            raise ChangelogUnreadable(
                f"{self.changelog_topic} partition {partition} offset {offset}: not a table "
                f"entry ({exc}); something other than this stage wrote to its changelog. "
                "Find who (the topic's ACLs should let only this stage write it), then delete "
                "the record's key with a tombstone or restore the topic"
            ) from None
        entries = self._parts[partition]
        if entry is None:
            entries.pop(key, None)
        else:
            assert value is not None
            entries[key] = value  # kept as written
            self._file(partition, key, entry)


# Built once: json.dumps builds an encoder per call when given separators.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _dumps(entry: Any) -> bytes:
    return _COMPACT.encode(entry).encode()
