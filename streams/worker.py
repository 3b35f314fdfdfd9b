"""What the stream stages share besides their loop (``streams.batchloop``): how a stage sends
its outputs (``Outbox``), follows edited agreements (``PolicyWatcher``) and creates its
topics."""

from __future__ import annotations

import logging
from typing import Protocol

from confluent_kafka import Producer

from mutualaid.agencies import Registry, load_registry
from mutualaid.auditlog import AuditSigner
from mutualaid.configfile import ConfigError, yaml_files
from mutualaid.kafka import (
    DeliveryTracker,
    ensure_topics,
    produce,
    stage_producer_config,
    wait_for_broker,
)
from mutualaid.policy import Policy, load_policy_from
from mutualaid.settings import Settings
from mutualaid.topics import AUDIT_DISSEMINATION, TopicSpec, topics_for

AGREEMENTS_POLL_SECONDS = 2.0
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
    """A worker's outputs, through one idempotent librdkafka producer (``acks=all``, batched
    and compressed: ``stage_producer_config``), audit records chained and signed per batch."""

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


def audit_outbox(settings: Settings, stage: str, log: logging.Logger) -> Outbox:
    """An Outbox that signs the stage's audit.dissemination records as ``stage`` (its key
    loaded now: no key, no start), unless ``audit_signing`` is off."""
    if not settings.audit_signing:
        log.warning("audit_signing is off: audit records are written unsigned")
        return Outbox(settings, log)
    return Outbox(settings, log, AuditSigner(settings, stage), frozenset({AUDIT_DISSEMINATION}))


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
