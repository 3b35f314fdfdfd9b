"""The faust application that runs the router.

Delivery rule: a batch's offsets become committable only after every record the batch produced
was acknowledged by the broker. faust acks a ``take_events`` batch when the loop asks for the
next one, so the agent awaits all its sends before that. If a send fails, the process exits at
once, without faust's shutdown commit: the batch is then consumed again after restart, and
since outputs are keyed and versioned, partners see at worst a duplicate they ignore.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from pathlib import Path

import faust
from faust.streams import _current_event as faust_current_event

from mutualaid.agencies import Registry
from mutualaid.configfile import ConfigError
from mutualaid.crypto import load_hash_key, newest_public_key
from mutualaid.disclosure import MissingKey
from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.metrics import serve_metrics
from mutualaid.policy import Policy, load_policy
from mutualaid.serde import SchemaStore, registry_client
from mutualaid.settings import Settings
from mutualaid.topics import (
    RECORD_KINDS,
    TopicSpec,
    router_control_topic,
    source_topic,
    topics_for,
)
from streams.router import Consumed, Router

log = logging.getLogger("mutualaid.router")

BATCH_SIZE = 500
BATCH_WITHIN_SECONDS = 0.05
EXIT_DELIVERY_FAILED = 70
AGREEMENTS_POLL_SECONDS = 2.0


def create_app(settings: Settings, registry: Registry, policy: Policy) -> faust.App:
    datadir = settings.data_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)  # faust fails at start if it is missing
    app = faust.App(
        settings.router_id,
        broker=[f"kafka://{s}" for s in settings.bootstrap_servers.split(",")],
        store=settings.router_store,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_ms / 6000),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=False,
        datadir=str(datadir),
    )
    keys = {ori: newest_public_key(ori, settings.public_keys_dir) for ori in registry.oris}
    router = Router(
        policy,
        SchemaStore(),
        registry_client(settings.schema_registry_url),
        public_keys={ori: key for ori, key in keys.items() if key is not None},
        hash_key=load_hash_key(settings.hash_key_file),
        control_topic=router_control_topic(settings.router_id),
    )
    # Which partners hold each record, so deletes, seals and narrowing reach exactly them.
    holders = app.Table("holders", partitions=settings.partitions, key_type=str)
    sources = [source_topic(ori, kind) for ori in registry.oris for kind in RECORD_KINDS]
    sources.append(router.control_topic)  # rechecks after a narrowing, co-partitioned
    topic = app.topic(
        *sources, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    watched = [agreements_fingerprint(settings.agreements_dir)]

    @app.timer(AGREEMENTS_POLL_SECONDS)
    async def reload_agreements() -> None:
        """Pick up edited agreements between two events; a broken edit keeps the old ones."""
        current = agreements_fingerprint(settings.agreements_dir)
        if current == watched[0]:
            return
        watched[0] = current
        try:
            router.use_policy(load_policy(settings.agreements_dir, registry))
        except (ConfigError, MissingKey) as exc:
            log.error(
                "agreements changed but were NOT applied; still using the previous "
                "ones until this is fixed:\n%s",
                exc,
            )
            return
        rechecks = router.rechecks(holders)
        sent = [
            await app.producer.send(o.topic, o.key, o.value, o.partition, None, None)
            for o in rechecks
        ]
        await asyncio.gather(*sent)
        log.warning(
            "agreements reloaded: %s; %d shared record(s) to recheck",
            ", ".join(f"{a.id} v{a.version}" for a in router.policy.agreements),
            len(rechecks),
        )

    @app.agent(topic, name="route")
    async def route(stream: faust.Stream) -> None:
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN_SECONDS):
            pending = []
            for event in batch:
                # The table writes its changelog to the current event's partition (so the
                # state moves with the partition on rebalance), but take_events does not set
                # it per item. Set only the context variable the table reads: the stream's own
                # current_event is what take_events' background filler reads, and must not move.
                faust_current_event.set(weakref.ref(event))
                msg = event.message
                consumed = Consumed(msg.topic, msg.partition, msg.offset, msg.key, msg.value)
                for out in router.route(consumed, holders):
                    pending.append(
                        await app.producer.send(
                            out.topic, out.key, out.value, out.partition, None, None
                        )
                    )
            try:
                await asyncio.gather(*pending)
            except Exception:
                log.critical(
                    "broker did not acknowledge routed records; exiting so the batch "
                    "is consumed again after restart",
                    exc_info=True,
                )
                os._exit(EXIT_DELIVERY_FAILED)

    return app


def agreements_fingerprint(directory: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in directory.glob("*.yaml")
    )


def run_router(settings: Settings, registry: Registry, policy: Policy) -> None:
    """Create missing topics, then run the router until SIGTERM or Ctrl-C."""
    app = create_app(settings, registry, policy)  # refuses to start without the keys it needs
    admin = wait_for_broker(settings.bootstrap_servers)
    control = TopicSpec(router_control_topic(settings.router_id), settings.partitions)
    ensure_topics(
        admin,
        [*topics_for(registry.oris, settings.partitions), control],
        settings.replication_factor,
    )
    serve_metrics(settings.metrics_port)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()
