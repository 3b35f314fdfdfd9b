"""How a stream stage sends its outputs (``Outbox``) and follows edited agreements
(``PolicyWatcher``), which the router and the matcher share; and how the matcher's faust app
is configured, started and kept from committing what it has not processed."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import faust
from aiokafka.errors import IllegalStateError
from confluent_kafka import Producer
from faust.types import TP, AppT, Message

from mutualaid.agencies import Registry, load_registry
from mutualaid.auditlog import AuditSigner
from mutualaid.configfile import ConfigError, yaml_files
from mutualaid.disclosure import MissingKey
from mutualaid.kafka import (
    DeliveryFailed,
    DeliveryTracker,
    ensure_topics,
    produce,
    stage_producer_config,
    wait_for_broker,
)
from mutualaid.kafkaclients import faust_options
from mutualaid.lag import LAG_INTERVAL_SECONDS, show_lag
from mutualaid.metrics import serve_metrics
from mutualaid.policy import Policy, load_policy_from
from mutualaid.settings import Settings
from mutualaid.topics import AUDIT_DISSEMINATION, TopicSpec, topics_for
from streams.commitgate import STALL_SECONDS
from streams.faust_compat import bound_fetch_wait, commit_gate, fetch_positions, set_current_event

AGREEMENTS_POLL_SECONDS = 2.0
METADATA_MAX_AGE_MS = 10_000
EXIT_DELIVERY_FAILED = 70
# How long a batch's outputs may take to be acknowledged before the worker gives up and exits.
# librdkafka reports every record by then: a queued one fails after stage_producer_config's
# delivery.timeout.ms (30 s), but one already sent waits for its request's timeout (another
# 30 s) before it is retried or failed. At 45 s a worker exited on a record the broker was slow
# to answer (Tansu, on two busy cores) that librdkafka had not given up on.
DELIVERY_TIMEOUT_SECONDS = 75.0


class Sendable(Protocol):
    # Read-only, so that a frozen dataclass (streams.router.Output) is one.
    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def partition(self) -> int | None: ...


class Outbox:
    """A worker's outputs, through one librdkafka producer rather than faust's.

    faust's per-record produce path cost more than the routing itself (a faust agent writing
    four records per input moved ~2,000 inputs/s where librdkafka moves ~100,000), so faust is
    kept for what librdkafka does not give: group membership, rebalances and tables.
    """

    def __init__(
        self,
        settings: Settings,
        log: logging.Logger,
        signer: AuditSigner | None = None,
        audit_topics: frozenset[str] = frozenset(),
    ) -> None:
        self._producer = Producer(stage_producer_config(settings))
        self._acks = DeliveryTracker()
        self._log = log
        self._signer, self._audit_topics = signer, audit_topics
        self._audit: list[Sendable] = []  # this batch's audit records, sealed at its end

    def send(self, out: Sendable) -> None:
        if self._signer is not None and out.topic in self._audit_topics:
            self._audit.append(out)
            return
        produce(self._producer, out.topic, out.key, out.value, self._acks, out.partition)
        self._producer.poll(0)  # serve delivery reports as they come, keeping the queue short

    def _send_audit(self) -> None:
        """Chain every audit record of the batch and sign the last one per topic, whose
        signature vouches for the batch through the chain: one Ed25519 signature per batch
        rather than per record. Sealed in the order sent, which the idempotent producer keeps
        on the writer's partition. A record sealed but never delivered makes the worker exit
        (``delivered``); the restart links on from the last record that arrived."""
        assert self._signer is not None
        pending, self._audit = self._audit, []
        last = {out.topic: n for n, out in enumerate(pending)}
        for n, out in enumerate(pending):
            partition, headers = self._signer.seal(
                out.topic, out.key, out.value or b"", sign=last[out.topic] == n
            )
            produce(self._producer, out.topic, out.key, out.value, self._acks, partition, headers)

    def flush(self, timeout: float = DELIVERY_TIMEOUT_SECONDS) -> None:
        """Block until the broker acknowledged everything sent so far, or raise DeliveryFailed."""
        if self._audit:
            self._send_audit()
        self._acks.wait(self._producer, timeout)

    async def delivered(self, timeout: float = DELIVERY_TIMEOUT_SECONDS) -> None:
        """``flush``, off the event loop (for a faust worker).

        If the broker refused a record or did not answer, exit at once, skipping faust's
        shutdown commit: the batch is consumed again after restart, and since outputs are keyed
        and versioned (or carry deterministic ids), consumers see at worst a duplicate they
        ignore."""
        if self._audit:
            self._send_audit()  # on the loop, which alone appends to the batch's audit
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._acks.wait, self._producer, timeout)
        except DeliveryFailed:
            self._log.critical(
                "broker did not acknowledge records; exiting so the batch is consumed again "
                "after restart",
                exc_info=True,
            )
            os._exit(EXIT_DELIVERY_FAILED)


def audit_outbox(settings: Settings, stage: str, log: logging.Logger) -> Outbox:
    """An Outbox that signs the stage's audit.dissemination records as ``stage`` (its key
    loaded now: no key, no start), unless ``audit_signing`` is off."""
    if not settings.audit_signing:
        log.warning("audit_signing is off: audit records are written unsigned")
        return Outbox(settings, log)
    return Outbox(settings, log, AuditSigner(settings, stage), frozenset({AUDIT_DISSEMINATION}))


async def process_in_batches(
    outbox: Outbox,
    stream: faust.Stream,
    handle: Callable[[Message], Sequence[Sendable]],
    batch_size: int,
    within: float,
    acknowledged: Callable[[list[Sendable]], None] = lambda outputs: None,
) -> None:
    """Run ``handle`` on every consumed record and send what it returns, a batch at a time.

    A batch's offsets become committable (``CommitGate.done``) only once its outputs were
    acknowledged (``Outbox.delivered``, which exits if the broker refuses), and only up to the
    first record on each partition that was not routed: a record ahead of the one expected is
    not routed, and the partition is sought back to the expected one (``streams.commitgate``).
    """
    gate = commit_gate(stream.app)
    gate.topics.update(stream.channel.topics)  # type: ignore[attr-defined]
    async for batch in stream.take_events(batch_size, within=within):
        outputs: list[Sendable] = []
        seeks: dict[TP, int] = {}
        try:
            for event in batch:
                message = event.message
                verdict = gate.check(message.tp, message.offset)
                if not verdict.route:
                    if verdict.seek_to is not None:  # the lowest offset asked, per partition
                        lowest = min(seeks.get(message.tp, verdict.seek_to), verdict.seek_to)
                        seeks[message.tp] = lowest
                    continue
                set_current_event(event)  # take_events does not, and tables need it
                for out in handle(message):
                    outbox.send(out)
                    outputs.append(out)
        except BaseException as exc:
            # Not a bad record (those are dead-lettered inside ``handle``) but the stage's own
            # fault, e.g. a table whose changelog is not in the metadata yet: faust restarts
            # the agent, which must route this batch again from its first record.
            rewound = gate.abort()
            if rewound and isinstance(exc, Exception):
                where = ", ".join(f"{t.topic}[{t.partition}] {n}" for t, n in rewound.items())
                logging.getLogger("mutualaid.commitgate").warning(
                    "routing a batch failed (%r); routing it again from %s", exc, where
                )
                await seek_back(stream.app, rewound)
            raise
        await outbox.delivered()
        gate.done()
        acknowledged(outputs)
        if seeks:
            await seek_back(stream.app, seeks)


async def seek_back(app: AppT, offsets: dict[TP, int]) -> None:
    """Seek the consumer back to the records the gate still expects. Through ``seek_wait``,
    which runs on the consumer's own thread: ``seek`` from the event loop raced aiokafka's
    fetcher (KeyError in ``fetched_records``, which stopped the worker). A partition revoked
    meanwhile is left alone; if a seek fails, the next record ahead of the gap asks again."""
    assigned = app.consumer.assignment()
    offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
    if not offsets:
        return
    try:
        await app.consumer.seek_wait(offsets)
    except (TimeoutError, IllegalStateError) as exc:
        logging.getLogger("mutualaid.commitgate").warning(
            "seeking back to %s failed (%r); the next record ahead asks again", offsets, exc
        )


def new_app(settings: Settings, app_id: str) -> faust.App:
    bound_fetch_wait()
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
        # aiokafka refreshes its metadata when a request fails for invalid metadata, but not on
        # NodeNotReadyError: after a broker's death its producer kept sending the holders
        # changelog to the dead leader until the 5-minute default age ran out, and the router
        # stalled (tests/test_kafka_cluster.py). A refresh every 10 s finds the new leaders.
        producer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
        producer_acks=-1,
        web_enabled=False,
        datadir=str(datadir),
        **faust_options(settings),  # TLS and SASL from the kafka setting
    )
    export_lag(app)
    unstall_gated_partitions(app)
    return app


def unstall_gated_partitions(app: faust.App) -> None:
    """Seek back any partition the commit gate sees stalled (``CommitGate.stalled``): fetched
    past the record it expects, with nothing reaching the agent."""

    @app.timer(STALL_SECONDS / 2)
    async def unstall() -> None:
        gate = commit_gate(app)
        if not gate.topics:
            return  # no agent has started gating yet
        stalled = gate.stalled(fetch_positions(app))
        if stalled:
            logging.getLogger("mutualaid.commitgate").warning(
                "no record reached the agent for %.0fs on %s though the consumer knows of "
                "records there; seeking back",
                STALL_SECONDS,
                ", ".join(
                    f"{tp.topic}[{tp.partition}] to {n}" for tp, n in sorted(stalled.items())
                ),
            )
            await seek_back(app, stalled)


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


Fingerprint = tuple[tuple[str, str], ...]


def policy_fingerprint(settings: Settings) -> Fingerprint:
    """What the policy is read from, cheaply: each file's name, size and modification time (or
    why it cannot be seen), so an edit, a new file, a removal or a broken link is noticed."""
    entries = []
    files = [settings.agencies_file]
    for directory in (settings.agreements_dir, settings.rules_dir):
        files += yaml_files(directory)
    for path in files:
        try:
            stat = path.stat()
            seen = f"{stat.st_mtime_ns}/{stat.st_size}"
        except OSError as exc:  # a dangling link, or removed since the listing
            seen = f"error {exc.errno}"
        entries.append((str(path), seen))
    return tuple(entries)


class PolicyWatcher:
    """Reloads the policy when its files change; keeps the last good one when they do not load.

    ``poll`` returns the new policy to apply, or None. Whatever goes wrong reading the folders
    (a file removed between listing and reading, a dangling link, a permission, a half-written
    or invalid file) is logged with the file, field and fix, and the policy in force stays.
    Editor files (``.#a.yaml``, ``#a.yaml#``, ``a.yaml~``, ``.a.yaml.swp``, hidden files) are not
    part of the policy and are never read.
    """

    def __init__(self, settings: Settings, registry: Registry, log: logging.Logger) -> None:
        self.settings, self.registry, self.log = settings, registry, log
        self._seen = policy_fingerprint(settings)

    def poll(self) -> Policy | None:
        current = policy_fingerprint(self.settings)
        if current == self._seen:
            return None
        self._seen = current
        try:
            # The registry too: assurances are renewed there. Its ORIs must not change under a
            # running stage (topics are made at start), so a new agency still needs a restart.
            registry = load_registry(self.settings.agencies_file)
            if registry.oris != self.registry.oris:
                self.refused(
                    f"{self.settings.agencies_file}: agencies added or removed; restart the "
                    "stage to apply that (assurance and contact edits apply live)"
                )
                return None
            return load_policy_from(self.settings, registry)
        except ConfigError as exc:
            self.refused(exc)
        except OSError as exc:  # anything the loader did not name itself
            self.refused(f"{getattr(exc, 'filename', None) or 'agreements'}: {exc}")
        return None

    def refused(self, why: object) -> None:
        self.log.error(
            "agreements or rules changed but were NOT applied; still using the previous "
            "ones until this is fixed:\n%s",
            why,
        )


def watch_agreements(
    app: faust.App,
    settings: Settings,
    registry: Registry,
    use: Callable[[Policy], Awaitable[None]],
    log: logging.Logger,
) -> PolicyWatcher:
    """Re-read the agreements and rules when a file changes and hand the new policy to ``use``.

    ``use`` runs between two events (the loop is single-threaded), so each event is decided
    wholly under one version. If the files do not load, or ``use`` refuses the policy with
    MissingKey, the error is logged and the previous policy stays in force.
    """
    watcher = PolicyWatcher(settings, registry, log)

    @app.timer(AGREEMENTS_POLL_SECONDS)
    async def reload_agreements() -> None:
        policy = watcher.poll()
        if policy is None:
            return
        try:
            await use(policy)
        except MissingKey as exc:
            watcher.refused(exc)
            return
        log.warning(reloaded(policy))

    return watcher


def reloaded(policy: Policy) -> str:
    """What a stage logs when it starts deciding with a reloaded policy."""
    agreements = ", ".join(f"{a.id} v{a.version}" for a in policy.agreements)
    rules = ", ".join(r.ref for r in policy.rules) or "none"
    return f"agreements reloaded: {agreements}; rules: {rules}"


def prepare_topics(settings: Settings, registry: Registry, extra: list[TopicSpec]) -> None:
    """Wait for the broker and create the topics that do not exist yet."""
    admin = wait_for_broker(settings)
    specs = [*topics_for(registry.oris, settings.partitions, settings.retention), *extra]
    ensure_topics(admin, specs, settings.replication_factor)


def run_worker(app: faust.App, settings: Settings) -> None:
    """Serve metrics, then run ``app`` until SIGTERM or Ctrl-C."""
    serve_metrics(settings.metrics_port)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()
