"""The projector: one agency's share topics, and its own source topics (``consumers.own``),
into the search index that agency holds.

Offsets are committed only after the index transaction holding the batch has committed, and
the index ignores any version it already has, so a crash at any point replays at most one
batch and changes nothing the second time.

A record the router sealed whole (``share_sealing``) is opened first, and one that does not
open is dead-lettered with why and where it was, never indexed. Sealed fields are opened with
the agency's private keys before indexing, or, with
``index_keep_encrypted``, checked to open and then kept sealed as they arrived. The consumer
group is named after the index's epoch: a new index, or one emptied because that setting
changed, has no committed offsets and is rebuilt from the start of the topics.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, Message, Producer

from consumers.index import open_index
from consumers.opening import ShareReader, open_shared
from consumers.own import NotOwn, own_copy
from mutualaid.auditlog import AuditSigner, search_audit_stage
from mutualaid.crypto import DecryptionError, load_keyring
from mutualaid.deadletter import DeadLetters
from mutualaid.kafka import (
    DeliveryFailed,
    DeliveryTracker,
    commit_past,
    consumer_config,
    next_batch,
    produce,
    producer_config,
)
from mutualaid.metrics import DECRYPT_FAILURES, END_TO_END, EVENTS_IN, INDEX_PURGED, INDEX_WRITES
from mutualaid.sealing import UnsealError
from mutualaid.serde import (
    SEARCH_AUDIT,
    SOURCE_EVENT,
    DeserializationError,
    SerializationContext,
    codecs_for,
)
from mutualaid.settings import Settings
from mutualaid.topics import (
    AUDIT_SEARCH,
    RECORD_KINDS,
    Stage,
    check_ori,
    share_topic,
    source_topic,
)

log = logging.getLogger("mutualaid.projector")

BATCH_SIZE = 500
POLL_SECONDS = 0.5
PURGE_EVERY_SECONDS = 60.0


class Projector:
    def __init__(self, settings: Settings, agency_ori: str) -> None:
        self.agency_ori = check_ori(agency_ori)
        self.index = open_index(settings, self.agency_ori)
        self.keyring = load_keyring(self.agency_ori, settings.private_keys_dir)
        self.keep_sealed = settings.index_keep_encrypted
        layout = self.index.layout()
        if layout.keeps_sealed != self.keep_sealed:
            if self.index.count():
                log.warning(
                    "index_keep_encrypted is now %s: emptying %s's index and rebuilding it "
                    "from the topics",
                    self.keep_sealed,
                    self.agency_ori,
                )
            layout = self.index.reset(self.keep_sealed)
        self._next_purge = 0.0  # at start, then every PURGE_EVERY_SECONDS
        self._topics = {share_topic(self.agency_ori, kind): kind for kind in RECORD_KINDS}
        # Its own records: no agreement needed (consumers.own).
        self._own_topics = {source_topic(self.agency_ori, kind): kind for kind in RECORD_KINDS}
        codecs = codecs_for(settings)
        self._reader = ShareReader(codecs, self.keyring)  # opens records sealed whole
        self._decode_own = {kind: codecs.deserializer(SOURCE_EVENT[kind]) for kind in RECORD_KINDS}
        self._dead_letters = DeadLetters(self._send, codecs, Stage.CONSUMERS)
        self._encode_search = codecs.serializer(SEARCH_AUDIT)
        group = f"mutualaid-projector-{self.agency_ori.lower()}-{layout.epoch}"
        self._consumer = Consumer(consumer_config(settings, group))
        self._producer = Producer(producer_config(settings))  # dead letters, search audits
        self._delivery = DeliveryTracker()
        # The search audit is signed by the agency's projector, which publishes it.
        self._signer = (
            AuditSigner(settings, search_audit_stage(self.agency_ori))
            if settings.audit_signing
            else None
        )

    def subscribe(self) -> None:
        """Join the agency's consumer group for its share and own source topics (the join
        completes in step)."""
        self._consumer.subscribe(
            [*self._topics, *self._own_topics],
            on_assign=lambda _, parts: log.info(
                "assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in parts)
            ),
        )

    def run(self, stop: threading.Event) -> None:
        self.subscribe()
        try:
            while not stop.is_set():
                self.step()
        finally:
            self._consumer.close()
            self.index.close()

    def step(self) -> int:
        """Consume one batch, make it durable in the index, then commit. Returns rows changed."""
        self._publish_searches()
        self._purge_if_due()
        messages = next_batch(self._consumer, BATCH_SIZE, POLL_SECONDS)
        if not messages:
            return 0
        events = [e for e in (self._decoded(m) for m in messages) if e is not None]
        changed = self.index.apply(events)
        self._delivery.wait(self._producer)
        self._commit(messages)
        self._observe(events, changed)
        log.info("indexed %d of %d record(s) read; committed", changed, len(messages))
        return changed

    def _purge_if_due(self) -> None:
        """Records past their agreement's retention leave the index on a schedule."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        purged = self.index.purge_expired(datetime.now(UTC))
        if purged:
            INDEX_PURGED.labels(agency=self.agency_ori).inc(purged)
            log.info("purged %d record(s) past their retention", purged)

    def _publish_searches(self) -> None:
        """Empty the index's search-log outbox into audit.search; marked only once acked."""
        rows = self.index.unpublished_searches()
        for n, row in enumerate(rows):
            record = {
                "agency_ori": self.agency_ori,
                "search_id": row.id,
                "user": row.user,
                "reason": row.reason,
                "query_json": row.query_json,
                "result_count": row.result_count,
                "searched_at": row.at,
                "result_owners": list(row.result_owners),
            }
            value = self._encode_search(record, SerializationContext(AUDIT_SEARCH))
            key = f"{self.agency_ori}/{row.id}".encode()
            partition, headers = (
                (None, None)
                if self._signer is None
                # The last one signed: its signature vouches for the rest through the chain.
                else self._signer.seal(AUDIT_SEARCH, key, value, sign=n == len(rows) - 1)
            )
            produce(self._producer, AUDIT_SEARCH, key, value, self._delivery, partition, headers)
        if rows:
            try:
                self._delivery.wait(self._producer)
            except DeliveryFailed:
                # Unmarked, these rows go again; their chain links on from what did arrive.
                if self._signer is not None:
                    self._signer.resync()
                raise
            self.index.mark_published([row.id for row in rows])

    def _decoded(self, msg: Message) -> dict | None:
        if msg.error() is not None:
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("consume error on %s: %s", msg.topic(), msg.error())
            return None
        own = msg.topic() in self._own_topics  # one of its own source topics
        kind = (self._own_topics if own else self._topics)[msg.topic()]
        EVENTS_IN.labels(stage="consumers", kind=str(kind)).inc()
        if msg.value() is None:
            # Withdrawals travel as DELETE events; a null value only lets compaction drop the key.
            return None
        ctx = SerializationContext(msg.topic(), msg.partition(), msg.offset())
        try:
            if own:
                event = self._decode_own[kind](msg.value(), ctx)
            else:
                event = self._reader.decode(kind, msg.value(), ctx)
        except DeserializationError as exc:
            self._dead(msg, "undecodable", str(exc))
            return None
        except UnsealError as exc:
            DECRYPT_FAILURES.labels(agency=self.agency_ori).inc()
            self._dead(msg, "unseal_failed", f"sealed record not indexed: {exc}")
            return None
        if own:
            return self._own(msg, event)
        if event["disclosure"]["partner_ori"] != self.agency_ori:
            self._dead(
                msg,
                "wrong_partner",
                f"addressed to {event['disclosure']['partner_ori']} "
                f"but found on {msg.topic()}; not indexed",
            )
            return None
        return self._opened(msg, event)

    def _own(self, msg: Message, event: dict) -> dict | None:
        """One of the agency's own source events as its index keeps it (``consumers.own``)."""
        try:
            return own_copy(event, self.agency_ori)
        except NotOwn as exc:
            self._dead(msg, "wrong_owner", f"{exc}; not indexed")
            return None

    def _opened(self, msg: Message, event: dict) -> dict | None:
        """The event with its sealed fields decrypted back into the body (or, keeping them
        sealed, as it came), or None if they cannot be opened (wrong key, tampering): counted,
        dead-lettered, never indexed half."""
        try:
            return open_shared(event, self.keyring, self.keep_sealed)
        except DecryptionError:
            sealed = event["disclosure"]["sealed"]
            DECRYPT_FAILURES.labels(agency=self.agency_ori).inc()
            self._dead(
                msg,
                "decrypt_failed",
                f"sealed fields (key {sealed['key_id']}) do not "
                f"open with {self.agency_ori}'s keys {self.keyring.key_ids}: wrong key, "
                "or the record was altered",
            )
            return None

    def _dead(self, msg: Message, error_type: str, reason: str) -> None:
        self._dead_letters.message(msg, error_type, reason)

    def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._producer.produce(topic, value, key, on_delivery=self._delivery)
        self._delivery.sent()

    def _commit(self, messages: list[Message]) -> None:
        commit_past(self._consumer, messages, log)

    def _observe(self, events: list[dict], changed: int) -> None:
        now = datetime.now(UTC)
        for event in events:
            envelope = event["envelope"]
            END_TO_END.labels(kind=envelope["kind"]).observe(
                (now - envelope["ingested_at"]).total_seconds()
            )
        if changed:
            INDEX_WRITES.labels(agency=self.agency_ori).inc(changed)
