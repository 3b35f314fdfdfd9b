"""The commit gate (streams/commitgate.py): a worker commits only offsets it routed and
delivered, in order per partition, whatever faust hands it across a rebalance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.commitgate import REAL_GAP_AFTER, STALL_SECONDS, CommitGate, Verdict
from streams.faust_compat import commit_gate
from streams.worker import process_in_batches

SRC = TP("src.ca0990100.alpr.read", 0)


def gate_at(offset: int) -> CommitGate:
    gate = CommitGate(topics={SRC.topic})
    gate.start(SRC, offset)
    return gate


def test_offsets_become_committable_only_once_delivered() -> None:
    gate = gate_at(10)
    assert [gate.check(SRC, n).route for n in (10, 11, 12)] == [True, True, True]
    assert gate.committable() == {SRC: 10}  # routed, not yet delivered
    gate.done()
    assert gate.committable() == {SRC: 13}


def test_a_record_ahead_of_the_expected_one_is_not_routed_and_seeks_back() -> None:
    # What faust did after a rebalance: a stale record far ahead of the committed offset.
    gate = gate_at(100)
    assert gate.check(SRC, 400) == Verdict(route=False, seek_to=100)
    assert gate.check(SRC, 401) == Verdict(route=False, seek_to=100)
    gate.done()
    assert gate.committable() == {SRC: 100}  # nothing skipped over
    assert gate.check(SRC, 100).route  # the records re-read from the seek go on in order
    assert not gate.check(SRC, 99).route  # read again: routed already
    gate.done()
    assert gate.committable() == {SRC: 101}


def test_a_gap_seen_again_at_the_same_place_after_each_seek_is_taken_as_real() -> None:
    gate = gate_at(5)
    for _ in range(REAL_GAP_AFTER - 1):
        assert gate.check(SRC, 9) == Verdict(route=False, seek_to=5)
    assert gate.check(SRC, 9).route
    gate.done()
    assert gate.committable() == {SRC: 10}


def test_a_batch_delivered_after_its_partition_was_revoked_or_restarted_commits_nothing() -> None:
    gate = gate_at(0)
    assert gate.check(SRC, 0).route and gate.check(SRC, 1).route
    gate.revoke(SRC)
    gate.done()
    assert gate.committable() == {}
    assert not gate.check(SRC, 2).route  # not assigned here any more: not routed
    gate.start(SRC, 0)  # assigned back: it starts again from the committed offset
    assert gate.check(SRC, 0).route
    gate.start(SRC, 0)  # re-sought before delivery: the pending record is void
    gate.done()
    assert gate.committable() == {SRC: 0}


def test_a_record_before_its_partition_started_is_sought_back_to_and_routed_after() -> None:
    # A restarted router: the one read on a partition reached the agent 8 ms before the seek
    # to the committed offset started that partition in the gate.
    gate = CommitGate(topics={SRC.topic})
    assert gate.check(SRC, 0) == Verdict(route=False, seek_to=0)  # not lost: read again
    gate.start(SRC, 0)
    assert gate.check(SRC, 0).route
    gate.done()
    assert gate.committable() == {SRC: 1}


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_partition_fetched_past_what_it_expects_and_silent_is_named_stalled() -> None:
    # The crash test on Tansu: records routed in a batch voided by a rebalance, then re-fetched
    # and dropped before the agent; the partition sat 81 records short of committed for good.
    clock = FakeClock()
    gate = CommitGate(topics={SRC.topic}, clock=clock)
    gate.start(SRC, 100)
    assert gate.stalled({SRC: 181}) == {}  # just started: records may be on their way
    clock.now += STALL_SECONDS - 1
    assert gate.stalled({SRC: 181}) == {}
    clock.now += 1
    assert gate.stalled({SRC: 181}) == {SRC: 100}
    assert gate.stalled({SRC: 181}) == {}  # named again only after another wait
    clock.now += STALL_SECONDS
    assert gate.stalled({SRC: 181}) == {SRC: 100}


def test_a_partition_caught_up_or_still_flowing_is_not_stalled() -> None:
    clock = FakeClock()
    other = TP(SRC.topic, 1)
    gate = CommitGate(topics={SRC.topic}, clock=clock)
    gate.start(SRC, 100)
    gate.start(other, 0)
    clock.now += STALL_SECONDS * 3
    assert gate.check(SRC, 100).route  # a record arrives: the partition is alive
    # `other` fetched no further than it expects, or its position is unknown: not stalled.
    assert gate.stalled({SRC: 181, other: 0}) == {}
    assert gate.stalled({SRC: 181, other: None}) == {}
    clock.now += STALL_SECONDS
    assert gate.stalled({SRC: 101, other: None}) == {}  # everything fetched was routed
    gate.revoke(SRC)
    assert gate.stalled({SRC: 181}) == {}  # not assigned here any more


def test_only_the_gated_topics_can_stall() -> None:
    # faust seeks every assigned partition, a table's changelog too; its recovery reads that
    # changelog, not the agent, so it is never "stalled".
    clock = FakeClock()
    changelog = TP("router-holders-changelog", 0)
    gate = CommitGate(topics={SRC.topic}, clock=clock)
    gate.start(changelog, 0)
    clock.now += STALL_SECONDS
    assert gate.stalled({changelog: 500}) == {}


def test_nothing_is_stalled_while_a_batch_is_out_for_delivery() -> None:
    # A broker node dying: the agent waits on its batch's delivery for longer than the stall
    # wait, so its partitions are silent because it is busy, not because records went astray.
    clock = FakeClock()
    gate = CommitGate(topics={SRC.topic}, clock=clock)
    gate.start(SRC, 100)
    assert gate.check(SRC, 100).route  # routed; its batch is being delivered
    clock.now += STALL_SECONDS * 2
    assert gate.stalled({SRC: 300}) == {}
    gate.done()  # delivered: the wait starts again from now
    clock.now += STALL_SECONDS - 1
    assert gate.stalled({SRC: 300}) == {}
    clock.now += 1
    assert gate.stalled({SRC: 300}) == {SRC: 101}


def test_a_batch_whose_handling_raised_is_routed_again_from_its_first_record() -> None:
    # The router's table raised on the batch's third record: nothing of the batch may become
    # committable, and all three records must reach the agent again (the one that raised too).
    other = TP(SRC.topic, 1)
    gate = gate_at(7)
    gate.start(other, 3)
    assert gate.check(SRC, 7).route and gate.check(other, 3).route and gate.check(SRC, 8).route
    assert gate.abort() == {SRC: 7, other: 3}
    gate.done()  # the next batch's delivery must not carry the aborted one with it
    assert gate.committable() == {SRC: 7, other: 3}
    assert gate.check(SRC, 9) == Verdict(route=False, seek_to=7)  # fetched on past it: seek
    assert [gate.check(SRC, n).route for n in (7, 8, 9)] == [True, True, True]
    gate.done()
    assert gate.committable() == {SRC: 10, other: 3}
    assert gate.abort() == {}  # nothing pending: nothing to route again


class FakeApp:
    """Stands in for a faust App and its consumer in process_in_batches: the loop's own logic
    (what it routes, commits and seeks) is under test here, not faust; the real stages run it
    on both brokers in tests/test_crash_under_load.py and tests/test_kafka_cluster.py."""

    def __init__(self) -> None:
        self.sought: list[dict[TP, int]] = []
        self.consumer = self

    def assignment(self) -> set[TP]:
        return {SRC}

    async def seek_wait(self, offsets: dict[TP, int]) -> None:
        self.sought.append(offsets)


class FakeEvent:  # a class, not a SimpleNamespace: tables keep a weak reference to the event
    def __init__(self, offset: int) -> None:
        self.message = SimpleNamespace(tp=SRC, offset=offset)


class FakeStream:
    def __init__(self, app: FakeApp, batches: list[list[int]]) -> None:
        self.app, self.batches = app, batches
        self.channel = SimpleNamespace(topics=[SRC.topic])

    async def take_events(self, size: int, within: float) -> AsyncIterator[list[FakeEvent]]:
        for offsets in self.batches:
            yield [FakeEvent(n) for n in offsets]


class FakeOutbox:
    def __init__(self) -> None:
        self.sent: list[int] = []

    def send(self, out: int) -> None:
        self.sent.append(out)

    async def delivered(self) -> None:
        pass


def test_the_batch_loop_routes_a_failed_batch_again_and_commits_only_what_was_delivered() -> None:
    app = FakeApp()
    gate = commit_gate(app)  # type: ignore[arg-type]
    gate.start(SRC, 0)
    outbox = FakeOutbox()
    failures = [2]  # handling offset 2 raises once, as the table did for its changelog

    def handle(message: Any) -> list[int]:
        if message.offset in failures:
            failures.remove(message.offset)
            raise RuntimeError("changelog topic not in the metadata yet")
        return [message.offset]

    async def run(batches: list[list[int]]) -> None:
        stream = FakeStream(app, batches)
        await process_in_batches(outbox, stream, handle, 10, 0.1)  # type: ignore[arg-type]

    with pytest.raises(RuntimeError):
        asyncio.run(run([[0, 1, 2, 3]]))
    assert gate.committable() == {SRC: 0} and app.sought == [{SRC: 0}]
    # faust restarts the agent: the consumer, sought back, hands the batch over again.
    asyncio.run(run([[0, 1, 2, 3], [4]]))
    assert gate.committable() == {SRC: 5}
    assert outbox.sent == [0, 1, 0, 1, 2, 3, 4]  # 0 and 1 repeat; none is missing
