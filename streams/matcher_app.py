"""The faust application that runs the hit matcher (the rules are in ``streams.matcher``).

Reads are consumed by a consumer group, so matchers scale out across the ALPR partitions.
Hotlists are not: every matcher needs every entry, so each reads the compacted hotlist topics
whole (a ``TopicFollower``), the way a Kafka Streams GlobalKTable does. A faust GlobalTable
would copy those topics into a changelog that repeats them; the hotlist topic already is one.

The hotlists are read to their end before the worker starts, so no read is matched against a
half-loaded list; later changes are applied between batches, on the event loop.

Repeat suppression lives in a faust table (``recent``) so it survives a restart. With several
matchers, reads of one plate from different partitions may reach different workers, and each
may alert once per window: at most one extra alert per worker, never a missed one.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import confluent_kafka
import faust
from faust.types import Message

from mutualaid.agencies import Registry
from mutualaid.kafka import TopicFollower
from mutualaid.metrics import ALERT_LATENCY, HOTLIST_ENTRIES
from mutualaid.policy import Policy
from mutualaid.serde import (
    HIT_ALERT,
    SOURCE_EVENT,
    DeserializationError,
    SerializationContext,
    codecs_for,
)
from mutualaid.settings import Settings
from mutualaid.topics import Kind, alerts_topic, hotlist_topic, source_topic
from streams.matcher import Hotlists, Matcher
from streams.router import Output
from streams.worker import (
    audit_outbox,
    new_app,
    prepare_topics,
    process_in_batches,
    run_worker,
    watch_agreements,
)

log = logging.getLogger("mutualaid.matcher")

# Small batches: a hit should reach dispatch in well under a second, not wait for a full one.
BATCH_SIZE = 200
BATCH_WITHIN_SECONDS = 0.01
HOTLIST_POLL_SECONDS = 0.2
HOTLIST_POLLS_PER_TICK = 5


def load_hotlists(settings: Settings, registry: Registry) -> tuple[Hotlists, TopicFollower]:
    """Every agency's hotlist, read to its current end; the follower keeps it current."""
    codecs = codecs_for(settings)
    hotlists = Hotlists(codecs)

    def apply(msg: confluent_kafka.Message) -> None:  # a TopicFollower's, not faust's
        hotlists.apply(msg.key(), msg.value(), msg.topic())

    topics = [hotlist_topic(ori) for ori in registry.oris]
    follower = TopicFollower(settings, topics, apply)
    started = time.monotonic()
    while not follower.caught_up.is_set():
        follower.poll()
    HOTLIST_ENTRIES.set(len(hotlists))
    log.warning(
        "hotlists loaded: %d entries from %d agencies in %.1fs",
        len(hotlists),
        len(topics),
        time.monotonic() - started,
    )
    return hotlists, follower


def create_matcher_app(
    settings: Settings, registry: Registry, policy: Policy, hotlists: Hotlists
) -> tuple[faust.App, Matcher]:
    app = new_app(settings, settings.matcher_id)
    codecs = codecs_for(settings)
    matcher = Matcher(
        policy,
        hotlists,
        codecs,
        repeat_window=timedelta(seconds=settings.alert_repeat_seconds),
        misreads=settings.alert_misreads,
    )
    decode = codecs.deserializer(SOURCE_EVENT[Kind.ALPR_READ])
    read_alert = codecs.deserializer(HIT_ALERT)
    outbox = audit_outbox(settings, settings.matcher_id, log)
    recent = app.Table("recent", partitions=settings.partitions, key_type=str)
    reads = app.topic(
        *[source_topic(ori, Kind.ALPR_READ) for ori in registry.oris],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    alert_topics = {alerts_topic(ori) for ori in registry.oris}

    async def use(new: Policy) -> None:
        matcher.policy = new

    watch_agreements(app, settings, registry, use, log)

    def handle(msg: Message) -> list[Output]:
        ctx = SerializationContext(msg.topic, msg.partition, msg.offset)
        try:
            event = decode(msg.value, ctx)
        except DeserializationError:
            # The router dead-letters undecodable source records; a second letter would be noise.
            return []
        return [] if event is None else matcher.match(event, recent)

    def observe(outputs: list[Output]) -> None:
        now = datetime.now(UTC)
        for out in outputs:
            if out.topic not in alert_topics:
                continue
            hit = read_alert(out.value, SerializationContext(out.topic))
            if hit is not None:
                ALERT_LATENCY.observe((now - hit["read_ingested_at"]).total_seconds())

    @app.agent(reads, name="match")
    async def match(stream: faust.Stream) -> None:
        await process_in_batches(
            outbox, stream, handle, BATCH_SIZE, BATCH_WITHIN_SECONDS, acknowledged=observe
        )

    return app, matcher


def run_matcher(settings: Settings, registry: Registry, policy: Policy) -> None:
    """Create missing topics, load the hotlists, then match reads until SIGTERM or Ctrl-C."""
    prepare_topics(settings, registry, [])
    hotlists, follower = load_hotlists(settings, registry)
    app, _ = create_matcher_app(settings, registry, policy, hotlists)

    @app.timer(HOTLIST_POLL_SECONDS)
    async def follow_hotlists() -> None:
        # On the loop, between batches: the matcher never sees a list half-updated. A few
        # thousand records per tick, so a large reload cannot stall matching.
        for _ in range(HOTLIST_POLLS_PER_TICK):
            if not follower.poll(0):
                break
        HOTLIST_ENTRIES.set(len(hotlists))

    run_worker(app, settings)
