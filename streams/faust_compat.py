"""Every place mutualaid leans on faust's or aiokafka's internals, kept apart with its reason.

Both are pinned in pyproject.toml to the versions checked here, and tests/test_faust_compat.py
fails when an upgrade changes what these rely on:

- ``set_current_event``: faust's tables write their changelog to the partition of the event
  being processed, found through the private context variable ``faust.streams._current_event``.
  ``Stream.take_events`` does not set it per item of a batch; the matcher does.
- ``bound_fetch_wait``: faust passes aiokafka ``fetch_max_wait_ms=1500`` and has no setting
  for it, so the consumer's constructor is wrapped to pass ``FETCH_MAX_WAIT_MS`` instead.
- ``commit_gate``: faust's consumer commits what its acks allow, which can skip records across
  a rebalance (see ``streams.commitgate``); for the topics a gate holds, the consumer's
  ``seek_to_committed`` (run after each assignment), ``on_partitions_revoked`` and
  ``_filter_committable_offsets`` are wrapped so that the gate decides what is committed.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Mapping
from typing import Any

import aiokafka
from faust.streams import _current_event
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import Consumer as AiokafkaConsumer
from faust.types import TP, AppT, EventT

from mutualaid.kafka import FETCH_WAIT_MAX_MS
from streams.commitgate import CommitGate

# How long a fetch may wait at the broker for data. Apache Kafka answers a waiting fetch as
# soon as data arrives, so there the value only bounds idle polling; the embedded Tansu broker
# holds the fetch for the whole wait, so it adds directly to every hop (a hit alert took
# ~0.5 s instead of ~0.1 s). The same value as the librdkafka consumers'.
FETCH_MAX_WAIT_MS = FETCH_WAIT_MAX_MS


def set_current_event(event: EventT) -> None:
    """Make ``event`` the one tables write changelog records for (so state moves with the
    partition on rebalance). Only the context variable tables read is set: the stream's own
    ``current_event`` is what ``take_events``' background filler reads, and must not move."""
    _current_event.set(weakref.ref(event))


def bound_fetch_wait() -> None:
    """Make every aiokafka consumer created from now on wait at most FETCH_MAX_WAIT_MS."""
    original = aiokafka.AIOKafkaConsumer.__init__
    if getattr(original, "_mutualaid_bounded", False):
        return

    @functools.wraps(original)
    def init(self: aiokafka.AIOKafkaConsumer, *args: Any, **kwargs: Any) -> None:
        kwargs["fetch_max_wait_ms"] = FETCH_MAX_WAIT_MS
        original(self, *args, **kwargs)

    init._mutualaid_bounded = True  # type: ignore[attr-defined]
    aiokafka.AIOKafkaConsumer.__init__ = init


_gates: weakref.WeakKeyDictionary[AppT, CommitGate] = weakref.WeakKeyDictionary()


def commit_gate(app: AppT) -> CommitGate:
    """The gate deciding ``app``'s commits for the topics added to its ``topics``."""
    _gate_commits()
    return _gates.setdefault(app, CommitGate())


def fetch_positions(app: AppT) -> dict[TP, int | None]:
    """Per assigned partition, how far aiokafka knows the partition goes: the offset it will
    fetch next, or the high watermark of its last fetch if that is further (a partition no
    longer fetched still shows the records it was last told of); None while it knows neither.

    Read from aiokafka's subscription state, which its consumer thread owns: a plain read of
    values it replaces whole, for a heuristic that tolerates a stale answer (``stalled``).
    """
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None) if thread is not None else None
    subscription = getattr(getattr(consumer, "_subscription", None), "subscription", None)
    assignment = getattr(subscription, "assignment", None)
    if assignment is None:
        return {}
    positions: dict[TP, int | None] = {}
    for tp in list(assignment.tps):
        state = assignment.state_value(tp)
        if state is None:
            continue
        known = [state.position] if state.has_valid_position else []
        if state.highwater is not None:
            known.append(state.highwater)
        positions[TP(tp.topic, tp.partition)] = max(known) if known else None
    return positions


def _gate_of(consumer: Consumer) -> CommitGate | None:
    return _gates.get(consumer.app)


def _gate_commits() -> None:
    if getattr(AiokafkaConsumer.seek_to_committed, "_mutualaid_gated", False):
        return
    seek_to_committed = AiokafkaConsumer.seek_to_committed
    revoked = Consumer.on_partitions_revoked
    committable = Consumer._filter_committable_offsets

    @functools.wraps(seek_to_committed)
    async def seek(self: AiokafkaConsumer) -> Mapping[TP, int]:
        # Run after every assignment (perform_seek). The gate starts from what is returned,
        # before anything else runs on the loop: faust's _read_offset moves on as soon as
        # records flow. Nothing committed (None, or 0): aiokafka leaves the position where
        # it was, so the gate expects offset 0 and seeks back there if a later one comes.
        offsets = await seek_to_committed(self)
        gate = _gate_of(self)
        if gate is not None:
            for tp, offset in offsets.items():
                gate.start(TP(tp.topic, tp.partition), offset if offset and offset > 0 else 0)
        return offsets

    @functools.wraps(revoked)
    async def on_revoked(self: Consumer, tps: set[TP]) -> None:
        gate = _gate_of(self)
        if gate is not None:
            for tp in tps:
                gate.revoke(tp)
        await revoked(self, tps)

    @functools.wraps(committable)
    def filter_committable(self: Consumer, tps: Any) -> dict[TP, int]:
        gate = _gate_of(self)
        if gate is None:
            return committable(self, tps)
        offsets = committable(self, [tp for tp in tps if not gate.gates(tp)])
        for tp, offset in gate.committable().items():
            if gate.gates(tp):
                # faust's own ack lists for these are not used: keep them from growing.
                self._acked.pop(tp, None)
                self._acked_index.pop(tp, None)
                self._gap.pop(tp, None)
                if self._should_commit(tp, offset):
                    offsets[tp] = offset
        return offsets

    seek._mutualaid_gated = True  # type: ignore[attr-defined]
    AiokafkaConsumer.seek_to_committed = seek  # type: ignore[method-assign,assignment]
    Consumer.on_partitions_revoked = on_revoked  # type: ignore[method-assign]
    Consumer._filter_committable_offsets = filter_committable  # type: ignore[method-assign]
