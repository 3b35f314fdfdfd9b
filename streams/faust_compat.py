"""Every place mutualaid leans on faust's or aiokafka's internals, kept apart with its reason.

Both are pinned in pyproject.toml to the versions checked here, and tests/test_faust_compat.py
fails when an upgrade changes what these rely on:

- ``set_current_event``: faust's tables write their changelog to the partition of the event
  being processed, found through the private context variable ``faust.streams._current_event``.
  ``Stream.take_events`` does not set it per item of a batch; the router and the matcher do.
- ``bound_fetch_wait``: faust passes aiokafka ``fetch_max_wait_ms=1500`` and has no setting
  for it, so the consumer's constructor is wrapped to pass ``FETCH_MAX_WAIT_MS`` instead.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import aiokafka
from faust.streams import _current_event
from faust.types import EventT

from mutualaid.kafka import FETCH_WAIT_MAX_MS

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
