"""The router's worker: source events in, routed (``streams.router``), shares, audit records and
rechecks out, through the batch loop every stream stage runs (``streams.batchloop``: consume,
process, produce, wait for the broker's acknowledgements, commit).

Its table is the holders table (``streams.table``): which partners hold each shared record,
read back from its changelog when a partition is assigned. The control topic (rechecks) is
co-partitioned with the source topics, so a recheck meets the worker holding its record.

Recall: after every reload of the agreements, and after every assignment (for edits made while
the router was stopped, or by another router before a rebalance), the held records decided
under other agreements get a recheck on the control topic; each second the rechecks time alone
makes due (``Router.due_rechecks``) are posted too.
"""

from __future__ import annotations

import logging
import threading

from mutualaid.agencies import Registry
from mutualaid.crypto import KeyAgreements, load_hash_key, newest_public_key
from mutualaid.disclosure import MissingKey
from mutualaid.metrics import HOLDERS_ENTRIES, HOLDERS_FORGOTTEN, serve_metrics
from mutualaid.policy import Policy
from mutualaid.sealing import Sealer
from mutualaid.serde import codecs_for
from mutualaid.settings import Settings
from mutualaid.topics import (
    RECORD_KINDS,
    TopicSpec,
    changelog_topic,
    router_control_topic,
    source_topic,
)
from streams.batchloop import BatchLoop
from streams.router import HoldersEntry, Output, Router, holders_expiry
from streams.sourcereader import SourceReader
from streams.table import ChangelogTable
from streams.worker import (
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
            key_agreements=KeyAgreements(settings.seal_key_rotation_seconds),
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
        self.holders: ChangelogTable[HoldersEntry] = ChangelogTable(
            changelog_topic(settings.router_id, "holders"), expiry=holders_expiry
        )
        topics = [source_topic(ori, kind) for ori in registry.oris for kind in RECORD_KINDS]
        topics.append(self.router.control_topic)  # rechecks, co-partitioned
        self.watcher = PolicyWatcher(settings, registry, log)
        self.loop = BatchLoop(
            settings,
            settings.router_id,
            topics,
            self.outbox,
            lambda record: self.router.route(record, self.holders),
            log=log,
            tables=[self.holders],
            batch_size=BATCH_SIZE,
            poll_seconds=POLL_SECONDS,
            tick=self._tick,
            tick_seconds=TICK_SECONDS,
            assigned=self._assigned,
        )
        self._unscanned = True  # rechecks due once the table is loaded

    def run(self, stop: threading.Event) -> None:
        self.loop.run(stop)

    def _assigned(self, partitions: set[int]) -> None:
        self._unscanned = True

    def _tick(self) -> None:
        """Once a second: apply edited agreements, post the rechecks they and time make due."""
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
        # The batch loop writes their tombstones once the tick returns; lost in a crash, they
        # are forgotten again after the restart.
        forgotten = self.holders.expire(int(self.router.clock().timestamp() * 1000))
        if forgotten:
            HOLDERS_FORGOTTEN.inc(forgotten)
            log.info("forgot %d holders entries: every copy past its retention", forgotten)
        HOLDERS_ENTRIES.set(len(self.holders))

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
        changelog_topic(settings.router_id, "holders"), settings.partitions, compacted=True
    )
    prepare_topics(settings, registry, [control, changelog])
    serve_metrics(settings.metrics_port)
    worker.run(stop)
