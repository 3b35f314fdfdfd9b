"""Which source offsets a worker may commit: only those whose record, and every record before it
on that partition, was routed and delivered.

Why not faust's own acks: across a rebalance faust 0.15.3 with aiokafka 0.14.0 can commit past
records it never handed to the agent (tests/test_crash_under_load.py on Apache Kafka lost a
partition's worth of one owner's reads, never routed, lag 0). Seen with the gate in place:
after a second worker joined, the first was handed offset 124 of a partition committed at 93,
and offset 186 of partitions with nothing committed. How, read from their code (not traced
record by record): records fetched before a revocation reach faust's drain loop after the seek
to the committed offset and move its read offset ahead, so the records re-fetched below it are
dropped as already read and the jump is filed as a gap that counts as acknowledged; and where
nothing (or 0) is committed aiokafka does not seek at all, so the consumer goes on from its
fetch position past the records faust cleared from the agent's queue at the revocation, and
faust's check against the committed offset is skipped (``if committed_offset:``).

So the gate keeps, per partition, the next offset it expects (from the committed offset faust
seeks to at each assignment). A record at that offset is routed; one below it was routed
already and is skipped; one above it means records are missing, and the worker seeks back to
the expected offset instead of routing it. Offsets become committable only once the batch that
routed them was delivered (``done``), and never for a partition revoked since.

And a partition can stall: the consumer knows it goes past the expected offset, yet no record
of it reaches the agent (records re-fetched after a seek that faust drops as already read, or a
seek back that failed with nothing after it to ask again; seen in the crash test on Tansu as a
partition 81 records short of committed, for good). ``stalled`` names the partitions fetched
past what the gate expects that have shown it nothing for a while; the worker seeks them back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from faust.types import TP

log = logging.getLogger("mutualaid.commitgate")

# A gap seen this many times in a row at the same place, with a seek back between each, is
# real: the broker has no records there (retention removed them, or a transaction marker).
REAL_GAP_AFTER = 3

# A partition fetched past its expected offset with no record of it checked for this long is
# sought back. Longer than a full batch takes to pass through the agent under load, so a
# partition merely queued behind others is not sought needlessly (a needless seek costs only
# a re-fetch: what was routed is skipped, the rest goes on in order).
STALL_SECONDS = 10.0


@dataclass(eq=False)
class _Partition:
    expected: int  # the next offset to route
    committable: int  # every offset below it was routed and delivered
    gap: tuple[int, int] = (-1, 0)  # (offset seen above `expected`, times seen in a row)
    warned: int = -1  # the expected offset last warned about: one warning per episode
    seen: float = 0.0  # when a record of the partition was last checked (or it started)


@dataclass(frozen=True)
class Verdict:
    """What to do with one record: ``route`` it, or else seek ``tp`` back to ``seek_to``."""

    route: bool
    seek_to: int | None = None


@dataclass
class CommitGate:
    topics: set[str] = field(default_factory=set)  # the topics whose commits the gate decides
    clock: Callable[[], float] = time.monotonic
    _parts: dict[TP, _Partition] = field(default_factory=dict)
    _batch: list[tuple[TP, _Partition, int]] = field(default_factory=list)

    def gates(self, tp: TP) -> bool:
        return tp.topic in self.topics

    def start(self, tp: TP, offset: int) -> None:
        """Consumption of ``tp`` (re)starts at ``offset``: what was pending there is void."""
        self._parts[tp] = _Partition(offset, offset, seen=self.clock())

    def revoke(self, tp: TP) -> None:
        self._parts.pop(tp, None)

    def check(self, tp: TP, offset: int) -> Verdict:
        part = self._parts.get(tp)
        if part is None:
            # Not started yet: a record fetched for a new assignment can reach the agent a
            # moment before the seek to the committed offset (seen on a restarted router: the
            # one read on a partition arrived 8 ms early and was never read again). Seek back
            # to it, so it comes again once the gate knows where the partition starts. A
            # partition not (or no longer) assigned here is left alone by the seek.
            return Verdict(route=False, seek_to=offset)
        part.seen = self.clock()
        if offset < part.expected:  # a record routed already, read again
            return Verdict(route=False)
        if offset > part.expected:
            seen, times = part.gap
            times = times + 1 if seen == offset else 1
            part.gap = (offset, times)
            if times < REAL_GAP_AFTER:
                if part.warned != part.expected:
                    part.warned = part.expected
                    log.warning(
                        "%s[%d]: got offset %d while %d was expected (records the consumer "
                        "skipped, e.g. across a rebalance); not routing it, seeking back to %d",
                        tp.topic, tp.partition, offset, part.expected, part.expected,
                    )  # fmt: skip
                return Verdict(route=False, seek_to=part.expected)
            log.warning(
                "%s[%d]: offsets %d-%d are not on the broker; going on from %d",
                tp.topic, tp.partition, part.expected, offset - 1, offset,
            )  # fmt: skip
        part.expected, part.gap = offset + 1, (-1, 0)
        self._batch.append((tp, part, offset + 1))
        return Verdict(route=True)

    def done(self) -> None:
        """Everything routed since the last call was delivered: make it committable, unless
        its partition was revoked or restarted meanwhile."""
        batch, self._batch = self._batch, []
        for tp, part, upto in batch:
            if self._parts.get(tp) is part and upto > part.committable:
                part.committable = upto

    def abort(self) -> dict[TP, int]:
        """The batch routed since the last ``done`` will not be delivered (its handler raised):
        void it, so that nothing of it becomes committable, and have every partition it
        touched expect again its first record not committable. Returns those offsets, to
        seek to: each record of the batch is routed again (the outputs already sent for some
        repeat, which every index applies once), none is skipped. Without this, the record
        whose handling raised counted as routed (seen on a three-node cluster: the router's
        table raised for a changelog not yet in its metadata, faust restarted the agent, and
        that read was committed and never shared)."""
        batch, self._batch = self._batch, []
        rewound: dict[TP, int] = {}
        for tp, part, _ in batch:
            if self._parts.get(tp) is part:
                part.expected, part.gap = part.committable, (-1, 0)
                rewound[tp] = part.committable
        return rewound

    def stalled(self, positions: Mapping[TP, int | None]) -> dict[TP, int]:
        """The partitions to seek back, and where to: those the consumer knows go past the
        expected offset (``positions``: per partition its next fetch offset or last high
        watermark, None if unknown) that have had no record checked for ``STALL_SECONDS``.
        Each is named again only after another such wait."""
        now, found = self.clock(), dict[TP, int]()
        if self._batch:
            # A batch is out for delivery: the agent is not taking records, so a silent
            # partition says nothing (seen while a broker node died: delivery took 10 s+).
            for part in self._parts.values():
                part.seen = now
            return found
        for tp, part in self._parts.items():
            if not self.gates(tp):
                continue  # a table's changelog, read by faust's recovery, not the agent
            position = positions.get(tp)
            silent = now - part.seen >= STALL_SECONDS
            if position is not None and position > part.expected and silent:
                part.seen = now
                found[tp] = part.expected
        return found

    def committable(self) -> dict[TP, int]:
        return {tp: part.committable for tp, part in self._parts.items()}
