"""The faust application that runs the router (the rules are in ``streams.router``).

Delivery rule (``streams.worker.process_in_batches``): a batch's offsets become committable
only after every record the batch produced was acknowledged by the broker. Outputs leave
through the worker's ``Outbox`` (librdkafka); faust keeps the group, rebalances and the table.

Recall: after every reload of the agreements, once at start (when the holders table is
recovered, for edits made while the router was stopped) and after every assignment, the held
records decided under other agreements get a recheck on the control topic; a timer also posts
the rechecks time alone makes due (``Router.due_rechecks``).
"""

from __future__ import annotations

import logging

import faust
from faust.types import Message

from mutualaid.agencies import Registry
from mutualaid.crypto import load_hash_key, newest_public_key
from mutualaid.policy import Policy
from mutualaid.sealing import Sealer
from mutualaid.serde import codecs_for
from mutualaid.settings import Settings
from mutualaid.topics import (
    RECORD_KINDS,
    TopicSpec,
    holders_changelog_topic,
    router_control_topic,
    source_topic,
)
from streams.router import Consumed, Output, Router
from streams.sourcereader import SourceReader
from streams.worker import (
    audit_outbox,
    new_app,
    prepare_topics,
    process_in_batches,
    run_worker,
    watch_agreements,
)

log = logging.getLogger("mutualaid.router")

BATCH_SIZE = 500
# A lone read waits at most this long for company; under load batches fill (500) first.
BATCH_WITHIN_SECONDS = 0.02
RECALL_POLL_SECONDS = 1.0


def create_app(settings: Settings, registry: Registry, policy: Policy) -> faust.App:
    app = new_app(settings, settings.router_id)
    keys = {ori: newest_public_key(ori, settings.public_keys_dir) for ori in registry.oris}
    codecs = codecs_for(settings)
    router = Router(
        policy,
        codecs,
        public_keys={ori: key for ori, key in keys.items() if key is not None},
        hash_key=load_hash_key(settings.hash_key_file),
        control_topic=router_control_topic(settings.router_id),
        read_source=SourceReader(settings, f"{settings.router_id}-recall"),
        sealer=sealer_for(settings),
    )
    unsealed = router.unsealed_partners()
    if settings.share_sealing != "off" and unsealed:
        log.warning(
            "share_sealing: no public key for %s: their share topics get clear copies until "
            "one is installed in %s",
            ", ".join(unsealed),
            settings.public_keys_dir,
        )
    outbox = audit_outbox(settings, settings.router_id, log)
    # Which partners hold each record, so deletes, seals and narrowing reach exactly them.
    # faust writes the changelog itself: written through the Outbox (librdkafka), a restarted
    # router lost records (tests/test_restart.py), so that speed-up is left out for now.
    holders = app.Table("holders", partitions=settings.partitions, key_type=str)
    sources = [source_topic(ori, kind) for ori in registry.oris for kind in RECORD_KINDS]
    sources.append(router.control_topic)  # rechecks after a narrowing, co-partitioned
    topic = app.topic(
        *sources, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    async def post(rechecks: list[Output]) -> None:
        for out in rechecks:
            outbox.send(out)
        await outbox.delivered()

    async def use(policy: Policy) -> None:
        router.use_policy(policy)
        rechecks = router.rechecks(holders)
        await post(rechecks)
        log.warning("%d shared record(s) to recheck against the new agreements", len(rechecks))

    watch_agreements(app, settings, registry, use, log)

    # Entries decided under other agreements than those loaded now (edited while the router
    # was stopped, or by another router before a rebalance) are rechecked once the table is
    # recovered: at start, and after every assignment.
    unscanned = [True]

    @app.on_partitions_assigned.connect
    async def assigned(*args: object, **kwargs: object) -> None:
        unscanned[0] = True

    @app.timer(RECALL_POLL_SECONDS)
    async def recall_due() -> None:
        if unscanned[0]:
            if await app.tables.wait_until_recovery_completed():
                return  # stopping
            unscanned[0] = False
            rechecks = router.rechecks(holders)
            await post(rechecks)
            if rechecks:
                log.warning(
                    "%d shared record(s) were decided under other agreements: rechecking them",
                    len(rechecks),
                )
        due = router.due_rechecks(holders)
        if due:
            await post(due)
            log.warning("%d shared record(s) to recheck: a decision changed with time", len(due))

    @app.agent(topic, name="route")
    async def route(stream: faust.Stream) -> None:
        def handle(msg: Message) -> list[Output]:
            consumed = Consumed(msg.topic, msg.partition, msg.offset, msg.key, msg.value)
            return router.route(consumed, holders)

        await process_in_batches(outbox, stream, handle, BATCH_SIZE, BATCH_WITHIN_SECONDS)

    return app


def sealer_for(settings: Settings) -> Sealer | None:
    """The router's sealer for ``share_sealing``; partners' public keys are read from
    public_keys_dir as they change (a new key is sealed to within a minute)."""
    if settings.share_sealing == "off":
        return None
    return Sealer(
        lambda ori: newest_public_key(ori, settings.public_keys_dir),
        rotate_seconds=settings.seal_key_rotation_seconds,
        required=settings.share_sealing == "required",
    )


def run_router(settings: Settings, registry: Registry, policy: Policy) -> None:
    """Create missing topics, then run the router until SIGTERM or Ctrl-C."""
    app = create_app(settings, registry, policy)  # refuses to start without the keys it needs
    control = TopicSpec(router_control_topic(settings.router_id), settings.partitions)
    changelog = TopicSpec(
        holders_changelog_topic(settings.router_id), settings.partitions, compacted=True
    )
    prepare_topics(settings, registry, [control, changelog])
    run_worker(app, settings)
