"""What the router and the matcher share: how a faust app is configured, started and kept on
the current agreements."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import weakref
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

import aiokafka
import faust
from faust.streams import _current_event as faust_current_event
from faust.types import Message

from mutualaid.agencies import Registry
from mutualaid.configfile import ConfigError
from mutualaid.disclosure import MissingKey
from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.lag import LAG_INTERVAL_SECONDS, show_lag
from mutualaid.metrics import serve_metrics
from mutualaid.policy import Policy, load_policy
from mutualaid.settings import Settings
from mutualaid.topics import TopicSpec, topics_for

AGREEMENTS_POLL_SECONDS = 2.0
EXIT_DELIVERY_FAILED = 70


class Sendable(Protocol):
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None


async def process_in_batches(
    app: faust.App,
    stream: faust.Stream,
    handle: Callable[[Message], Sequence[Sendable]],
    batch_size: int,
    within: float,
    log: logging.Logger,
    acknowledged: Callable[[list[Sendable]], None] = lambda outputs: None,
) -> None:
    """Run ``handle`` on every consumed record and send what it returns, a batch at a time.

    A batch's offsets become committable when the loop asks for the next batch, so every send
    is awaited first. If the broker refuses one, the process exits at once, skipping faust's
    shutdown commit: the batch is consumed again after restart, and since outputs are keyed
    and versioned (or carry deterministic ids), consumers see at worst a duplicate they ignore.
    """
    async for batch in stream.take_events(batch_size, within=within):
        outputs: list[Sendable] = []
        pending = []
        for event in batch:
            # Tables write their changelog to the current event's partition (so state moves
            # with the partition on rebalance), but take_events does not set it per item. Set
            # only the context variable tables read: the stream's own current_event is what
            # take_events' background filler reads, and must not move.
            faust_current_event.set(weakref.ref(event))
            for out in handle(event.message):
                outputs.append(out)
                pending.append(
                    await app.producer.send(
                        out.topic, out.key, out.value, out.partition, None, None
                    )
                )
        try:
            await asyncio.gather(*pending)
        except Exception:
            log.critical(
                "broker did not acknowledge records; exiting so the batch is consumed again "
                "after restart",
                exc_info=True,
            )
            os._exit(EXIT_DELIVERY_FAILED)
        acknowledged(outputs)


# How long a fetch may wait at the broker for data. faust hard-codes 1500 ms for aiokafka and
# has no setting for it. Apache Kafka answers a waiting fetch as soon as data arrives, so there
# the value only bounds idle polling; the embedded Tansu broker holds the fetch for the whole
# wait, so it adds directly to every hop (a hit alert took ~0.5 s instead of ~0.1 s).
FETCH_MAX_WAIT_MS = 50


def _bound_fetch_wait() -> None:
    original = aiokafka.AIOKafkaConsumer.__init__
    if getattr(original, "_mutualaid_bounded", False):
        return

    @functools.wraps(original)
    def init(self: aiokafka.AIOKafkaConsumer, *args: object, **kwargs: object) -> None:
        kwargs["fetch_max_wait_ms"] = FETCH_MAX_WAIT_MS
        original(self, *args, **kwargs)

    init._mutualaid_bounded = True  # type: ignore[attr-defined]
    aiokafka.AIOKafkaConsumer.__init__ = init  # type: ignore[method-assign]


def new_app(settings: Settings, app_id: str) -> faust.App:
    _bound_fetch_wait()
    datadir = settings.data_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)  # faust fails at start if it is missing
    app = faust.App(
        app_id,
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
    export_lag(app)
    return app


def export_lag(app: faust.App) -> None:
    """mutualaid_consumer_lag for the app's group, from faust's monitor: per assigned partition,
    the fetch high watermark less the committed offset (known once the worker has committed
    there)."""

    @app.timer(LAG_INTERVAL_SECONDS)
    async def lag() -> None:
        monitor, assigned = app.monitor, app.consumer.assignment()
        committed = monitor.tp_committed_offsets
        show_lag(
            app.conf.id,
            {
                (tp.topic, tp.partition): max(0, end - committed[tp])
                for tp, end in monitor.tp_end_offsets.items()
                if tp in assigned and tp in committed
            },
        )


def agreements_fingerprint(directory: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in directory.glob("*.yaml")
    )


def watch_agreements(
    app: faust.App,
    settings: Settings,
    registry: Registry,
    use: Callable[[Policy], Awaitable[None]],
    log: logging.Logger,
) -> None:
    """Re-read the agreements when a file changes and hand the new policy to ``use``.

    ``use`` runs between two events (the loop is single-threaded), so each event is decided
    wholly under one version. If the files do not load, or ``use`` refuses the policy with
    MissingKey, the error is logged and the previous agreements stay in force.
    """
    watched = [agreements_fingerprint(settings.agreements_dir)]

    @app.timer(AGREEMENTS_POLL_SECONDS)
    async def reload_agreements() -> None:
        current = agreements_fingerprint(settings.agreements_dir)
        if current == watched[0]:
            return
        watched[0] = current
        try:
            policy = load_policy(settings.agreements_dir, registry)
            await use(policy)
        except (ConfigError, MissingKey) as exc:
            log.error(
                "agreements changed but were NOT applied; still using the previous "
                "ones until this is fixed:\n%s",
                exc,
            )
            return
        log.warning(
            "agreements reloaded: %s", ", ".join(f"{a.id} v{a.version}" for a in policy.agreements)
        )


def prepare_topics(settings: Settings, registry: Registry, extra: list[TopicSpec]) -> None:
    """Wait for the broker and create the topics that do not exist yet."""
    admin = wait_for_broker(settings.bootstrap_servers)
    specs = [*topics_for(registry.oris, settings.partitions, settings.retention), *extra]
    ensure_topics(admin, specs, settings.replication_factor)


def run_worker(app: faust.App, settings: Settings) -> None:
    """Serve metrics, then run ``app`` until SIGTERM or Ctrl-C."""
    serve_metrics(settings.metrics_port)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()
