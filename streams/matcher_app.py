"""The hit matcher's worker (the rules are in ``streams.matcher``): plate reads in, hit alerts
and their audit records out, through the batch loop every stream stage runs
(``streams.batchloop``: consume, process, produce, wait for the acknowledgements, commit).

Reads are consumed by a consumer group, so matchers scale out across the ALPR partitions.
Hotlists are not: every matcher needs every entry, so each reads the compacted hotlist topics
whole (a ``TopicFollower``), the way a Kafka Streams GlobalKTable does.

The hotlists are read to their end before the worker starts, so no read is matched against a
half-loaded list; later changes are applied between batches, every HOTLIST_POLL_SECONDS.

Repeat suppression lives in a changelog table (``recent``, ``streams.table``) so it survives a
restart. With several matchers, reads of one plate from different partitions may reach
different workers, and each may alert once per window: at most one extra alert per worker,
never a missed one.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import confluent_kafka

from mutualaid.agencies import Registry
from mutualaid.kafka import TopicFollower
from mutualaid.metrics import ALERT_LATENCY, HOTLIST_ENTRIES, serve_metrics
from mutualaid.policy import Policy
from mutualaid.serde import (
    HIT_ALERT,
    SOURCE_EVENT,
    DeserializationError,
    SerializationContext,
    codecs_for,
)
from mutualaid.settings import Settings
from mutualaid.topics import (
    Kind,
    TopicSpec,
    alerts_topic,
    changelog_topic,
    hotlist_topic,
    source_topic,
)
from streams.batchloop import BatchLoop
from streams.matcher import Hotlists, Matcher
from streams.router import Consumed, Output
from streams.table import ChangelogTable
from streams.worker import (
    AGREEMENTS_POLL_SECONDS,
    PolicyWatcher,
    audit_outbox,
    prepare_topics,
    reloaded,
)

log = logging.getLogger("mutualaid.matcher")

# Small batches: a batch's alerts leave together, once all of it is matched.
BATCH_SIZE = 200
# Between batches come the hotlist changes: an idle matcher looks at them this often.
POLL_SECONDS = 0.1
HOTLIST_POLL_SECONDS = 0.2
HOTLIST_POLLS_PER_TICK = 5


def load_hotlists(settings: Settings, registry: Registry) -> tuple[Hotlists, TopicFollower]:
    """Every agency's hotlist, read to its current end; the follower keeps it current."""
    codecs = codecs_for(settings)
    hotlists = Hotlists(codecs)

    def apply(msg: confluent_kafka.Message) -> None:
        hotlists.apply(msg.key(), msg.value(), msg.topic())

    topics = [hotlist_topic(ori) for ori in registry.oris]
    follower = TopicFollower(settings, topics, apply)
    started = time.monotonic()
    while not follower.caught_up.is_set():
        follower.poll()
    HOTLIST_ENTRIES.set(len(hotlists))
    # The loaded entries live as long as the process: out of the garbage collector's sight,
    # since each full collection would walk them all (~90 ms for a million on an idle core,
    # more on a loaded one), stalling every read in hand past the alert latency target.
    gc.freeze()
    log.warning(
        "hotlists loaded: %d entries from %d agencies in %.1fs",
        len(hotlists),
        len(topics),
        time.monotonic() - started,
    )
    return hotlists, follower


class MatcherWorker:
    """One matcher worker of the group ``matcher_id``: ``run`` until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        policy: Policy,
        hotlists: Hotlists,
        follower: TopicFollower,
    ) -> None:
        codecs = codecs_for(settings)
        self.matcher = Matcher(
            policy,
            hotlists,
            codecs,
            repeat_window=timedelta(seconds=settings.alert_repeat_seconds),
            misreads=settings.alert_misreads,
        )
        self.hotlists, self.follower = hotlists, follower
        self._decode = codecs.deserializer(SOURCE_EVENT[Kind.ALPR_READ])
        self._read_alert = codecs.deserializer(HIT_ALERT)
        self._alert_topics = {alerts_topic(ori) for ori in registry.oris}
        self.recent: ChangelogTable[list] = ChangelogTable(
            changelog_topic(settings.matcher_id, "recent")
        )
        self.watcher = PolicyWatcher(settings, registry, log)
        self._next_reload = 0.0
        self.loop = BatchLoop(
            settings,
            settings.matcher_id,
            [source_topic(ori, Kind.ALPR_READ) for ori in registry.oris],
            audit_outbox(settings, settings.matcher_id, log),
            self._match,
            log=log,
            tables=[self.recent],
            batch_size=BATCH_SIZE,
            poll_seconds=POLL_SECONDS,
            tick=self._tick,
            tick_seconds=HOTLIST_POLL_SECONDS,
            acknowledged=self._observe,
        )

    def run(self, stop: threading.Event) -> None:
        self.loop.run(stop)

    def _match(self, record: Consumed) -> list[Output]:
        ctx = SerializationContext(record.topic, record.partition, record.offset)
        try:
            event = self._decode(record.value, ctx)
        except DeserializationError:
            # The router dead-letters undecodable source records; a second letter would be noise.
            return []
        return [] if event is None else self.matcher.match(event, self.recent)

    def _observe(self, outputs: list[Output]) -> None:
        """Read-to-alert latency of the alerts the broker now has."""
        now = datetime.now(UTC)
        for out in outputs:
            if out.topic not in self._alert_topics:
                continue
            hit = self._read_alert(out.value, SerializationContext(out.topic))
            if hit is not None:
                ALERT_LATENCY.observe((now - hit["read_ingested_at"]).total_seconds())

    def _tick(self) -> None:
        """Between batches: hotlist changes (a few thousand records per tick, so a large reload
        cannot stall matching; the matcher never sees a list half-updated), and edited
        agreements each AGREEMENTS_POLL_SECONDS."""
        for _ in range(HOTLIST_POLLS_PER_TICK):
            if not self.follower.poll(0):
                break
        HOTLIST_ENTRIES.set(len(self.hotlists))
        now = time.monotonic()
        if now < self._next_reload:
            return
        self._next_reload = now + AGREEMENTS_POLL_SECONDS
        policy = self.watcher.poll()
        if policy is not None:
            self.matcher.policy = policy  # between two batches: each read decided under one
            log.warning(reloaded(policy))


def run_matcher(
    settings: Settings, registry: Registry, policy: Policy, stop: threading.Event
) -> None:
    """Create missing topics, load the hotlists, then match reads until ``stop`` is set."""
    changelog = TopicSpec(
        changelog_topic(settings.matcher_id, "recent"), settings.partitions, compacted=True
    )
    prepare_topics(settings, registry, [changelog])
    hotlists, follower = load_hotlists(settings, registry)
    worker = MatcherWorker(settings, registry, policy, hotlists, follower)
    serve_metrics(settings.metrics_port)
    worker.run(stop)
