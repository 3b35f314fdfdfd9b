"""The router's worker: consume source events, route them (``streams.router``), produce what
they give, then commit. On librdkafka alone, without faust.

Why not faust: measured on one 2-core machine (``./run bench``), a faust agent that only
forwards raw bytes moves ~4,800 events/s, where a confluent-kafka consume-produce loop moves
~40,000; the router ran at ~750/s inside faust and the target is 10,000/s. faust also needed a
commit gate, a stall watchdog and wrapped internals to keep it from committing records it never
routed across a rebalance (the matcher still runs on faust: ``streams.worker``). Here the
consumer does nothing on its own: offsets are committed by this loop alone.

One batch at a time:

1. take up to BATCH_SIZE records (a lone record is routed at once, never held for company);
2. route each; its outputs (shares, audit, dead letters, rechecks) go to the worker's
   ``Outbox`` (one idempotent librdkafka producer, ``acks=all``);
3. write what the batch changed in the holders table to its changelog, through that producer;
4. wait until the broker acknowledged all of it; if it refuses or does not answer, exit (70)
   without committing: the batch is routed again after restart;
5. commit the batch's offsets.

A crash anywhere loses nothing: what was not committed is routed again, and since outputs are
keyed and versioned (or carry deterministic ids), every index applies a repeat once.

Rebalances are eager, with the ``range`` assignor: every worker gets the same partition numbers
of every source topic and of the control topic, so a record's events and its rechecks meet the
worker that holds its table partition. A worker reads back the changelog of each partition it
is newly assigned before routing anything of it, and routes nothing of a partition no longer
assigned (records fetched before a revocation are dropped, for the new owner to read).

Recall: after every reload of the agreements, and after every assignment (for edits made while
the router was stopped, or by another router before a rebalance), the held records decided
under other agreements get a recheck on the control topic; each second the rechecks time alone
makes due (``Router.due_rechecks``) are posted too.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from mutualaid.agencies import Registry
from mutualaid.crypto import load_hash_key, newest_public_key
from mutualaid.disclosure import MissingKey
from mutualaid.kafka import (
    DeliveryFailed,
    commit_past,
    consumer_config,
    next_batch,
)
from mutualaid.kafkaclients import client_config
from mutualaid.metrics import serve_metrics
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
from streams.holders import HoldersTable
from streams.router import Consumed, Output, Router
from streams.sourcereader import SourceReader
from streams.worker import (
    EXIT_DELIVERY_FAILED,
    Outbox,
    PolicyWatcher,
    audit_outbox,
    prepare_topics,
    reloaded,
)

log = logging.getLogger("mutualaid.router")

BATCH_SIZE = 500
POLL_SECONDS = 0.5
TICK_SECONDS = 1.0


class RouterWorker:
    """One router worker of the group ``router_id``: ``run`` until ``stop`` is set."""

    def __init__(self, settings: Settings, registry: Registry, policy: Policy) -> None:
        self.settings = settings
        keys = {ori: newest_public_key(ori, settings.public_keys_dir) for ori in registry.oris}
        self.router = Router(
            policy,
            codecs_for(settings),
            public_keys={ori: key for ori, key in keys.items() if key is not None},
            hash_key=load_hash_key(settings.hash_key_file),
            control_topic=router_control_topic(settings.router_id),
            read_source=SourceReader(settings, f"{settings.router_id}-recall"),
            sealer=sealer_for(settings),
        )  # refuses to start without the keys it needs (MissingKey)
        unsealed = self.router.unsealed_partners()
        if settings.share_sealing != "off" and unsealed:
            log.warning(
                "share_sealing: no public key for %s: their share topics get clear copies "
                "until one is installed in %s",
                ", ".join(unsealed),
                settings.public_keys_dir,
            )
        self.outbox: Outbox = audit_outbox(settings, settings.router_id, log)
        self.holders = HoldersTable(holders_changelog_topic(settings.router_id))
        self.topics = [source_topic(ori, kind) for ori in registry.oris for kind in RECORD_KINDS]
        self.topics.append(self.router.control_topic)  # rechecks, co-partitioned
        self.watcher = PolicyWatcher(settings, registry, log)
        self._consumer = Consumer(
            consumer_config(
                settings,
                settings.router_id,
                # Co-partitioned assignment: see the module's docstring.
                **{"partition.assignment.strategy": "range"},
            )
        )
        # Assigned partitions directly, never committing: reads the holders changelog back.
        self._changelog = Consumer(
            client_config(
                settings,
                **{
                    "group.id": f"{settings.router_id}-holders-reader",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                },
            )
        )
        self._assigned: set[tuple[str, int]] = set()
        self._unscanned = True  # rechecks due once the table is loaded
        self._next_tick = 0.0

    def run(self, stop: threading.Event) -> None:
        self._consumer.subscribe(
            self.topics, on_assign=self._assign, on_revoke=self._revoke, on_lost=self._revoke
        )
        try:
            while not stop.is_set():
                self.step()
        except DeliveryFailed:
            log.critical(
                "broker did not acknowledge records; exiting so the batch is consumed again "
                "after restart",
                exc_info=True,
            )
            os._exit(EXIT_DELIVERY_FAILED)  # no commit, no orderly leave: routed again
        finally:
            self._consumer.close()
            self._changelog.close()

    def step(self) -> int:
        """Route one batch and commit it once all it produced is acknowledged. Returns the
        number of records routed."""
        self._tick()
        batch = [m for m in next_batch(self._consumer, BATCH_SIZE, POLL_SECONDS) if self._ours(m)]
        if not batch:
            return 0
        for msg in batch:
            partition = msg.partition()
            assert partition is not None  # _ours checked it
            self.holders.at(partition)
            consumed = Consumed(msg.topic(), partition, msg.offset(), msg.key(), msg.value())
            for out in self.router.route(consumed, self.holders):
                self.outbox.send(out)
        for partition, key, value in self.holders.changes():
            self.outbox.send(Output(self.holders.changelog_topic, key, value, partition))
        self.outbox.flush()
        commit_past(self._consumer, batch, log)
        return len(batch)

    def _ours(self, msg: Message) -> bool:
        """A record to route: no error, and of a partition still assigned here."""
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer: %s", error.str())
            return False
        return (msg.topic(), msg.partition()) in self._assigned

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = {(tp.topic, tp.partition) for tp in partitions}
        numbers = {tp.partition for tp in partitions}
        self.holders.keep_only(numbers)
        self.holders.load(self._changelog, numbers)
        self._unscanned = True
        log.info("assigned partitions %s", sorted(numbers))

    def _revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Everything routed is committed by now (callbacks run inside the consumer's poll,
        # between batches): nothing to finish, only stop routing these.
        self._assigned -= {(tp.topic, tp.partition) for tp in partitions}

    def _tick(self) -> None:
        """Once a second: apply edited agreements, post the rechecks they and time make due."""
        now = time.monotonic()
        if now < self._next_tick:
            return
        self._next_tick = now + TICK_SECONDS
        policy = self.watcher.poll()
        if policy is not None:
            try:
                self.router.use_policy(policy)
            except MissingKey as exc:
                self.watcher.refused(exc)
            else:
                rechecks = self.router.rechecks(self.holders)
                self._post(rechecks)
                log.warning(reloaded(policy))
                log.warning(
                    "%d shared record(s) to recheck against the new agreements", len(rechecks)
                )
                self._unscanned = False
        if self._unscanned and self.holders.partitions:
            self._unscanned = False
            rechecks = self.router.rechecks(self.holders)
            self._post(rechecks)
            if rechecks:
                log.warning(
                    "%d shared record(s) were decided under other agreements: rechecking them",
                    len(rechecks),
                )
        due = self.router.due_rechecks(self.holders)
        if due:
            self._post(due)
            log.warning("%d shared record(s) to recheck: a decision changed with time", len(due))

    def _post(self, rechecks: list[Output]) -> None:
        for out in rechecks:
            self.outbox.send(out)
        self.outbox.flush()


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


def run_router(
    settings: Settings, registry: Registry, policy: Policy, stop: threading.Event
) -> None:
    """Create missing topics, then run the router until ``stop`` is set."""
    worker = RouterWorker(settings, registry, policy)
    control = TopicSpec(router_control_topic(settings.router_id), settings.partitions)
    changelog = TopicSpec(
        holders_changelog_topic(settings.router_id), settings.partitions, compacted=True
    )
    prepare_topics(settings, registry, [control, changelog])
    serve_metrics(settings.metrics_port)
    worker.run(stop)
