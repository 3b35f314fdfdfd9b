"""The shared connector runner: source items in, Avro events out, nothing lost.

The runner works over any ``Source`` (``producers.sources``): a line file, a drop directory of
documents, a SQL change poller. For every batch it maps each item with the connector's
adapter, produces the events (or a dead letter for an item the adapter rejects), waits until
the broker has acknowledged all of them, and only then saves the checkpoint.

After a crash the source is read again from the last checkpoint, and the events of at most
the batches that were in flight (``MAX_IN_FLIGHT`` + 1 batches) may already be on the topic.
Before publishing anything, the runner reads its topic from the offsets saved with the
checkpoint to the end and notes the event ids it finds (deterministic: owner, kind, record id,
version); the items that map to those are skipped. Each source record version is therefore
on the topic exactly once. Dead letters of rejected items may repeat; they carry positions.

An adapter may raise ``Skipped`` for an item that is valid but holds no record (a NIBRS zero
report: "nothing to report this month"): it is logged and counted, with no event and no dead
letter. An adapter that keeps per-record state (``StatefulAdapter``: the RMS connector's last
version and content digest of each record) has that state saved with the checkpoint, as it
stood after the checkpoint's last item, and restored from it: a restart maps the items after
the checkpoint exactly as the first run did, so they get the same versions and event ids.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from mutualaid.claims import claim, claimant
from mutualaid.deadletter import DeadLetters, Letter
from mutualaid.errors import UsageError
from mutualaid.events import record_key
from mutualaid.kafka import (
    DELIVERY_TIMEOUT_SECONDS,
    DeliveryFailed,
    DeliveryTracker,
    TopicFollower,
    end_offsets,
    produce,
    producer_config,
)
from mutualaid.metrics import EVENTS_IN, EVENTS_OUT
from mutualaid.serde import (
    SOURCE_EVENT,
    DeserializationError,
    SerializationContext,
    codecs_for,
)
from mutualaid.settings import Settings
from mutualaid.topics import Stage, source_topic
from producers.checkpoint import CheckpointStore, Position
from producers.contract import Adapter, Rejected, Skipped, SourceItem, StatefulAdapter
from producers.sources import Source

log = logging.getLogger("mutualaid.connector")

BATCH_SIZE = 1000
MAX_IN_FLIGHT = 2  # batches sent before the oldest must be acknowledged
# librdkafka reports every record delivered or failed within its own timeout: wait for that.
DELIVERY_TIMEOUT = DELIVERY_TIMEOUT_SECONDS + 5


@dataclass
class Progress:
    read: int = 0
    published: int = 0
    rejected: int = 0
    skipped: int = 0  # valid items holding no record (zero reports)
    started: float = field(default_factory=time.monotonic)

    def counts(self) -> dict[str, int]:
        counts = {"read": self.read, "published": self.published, "rejected": self.rejected}
        return {**counts, "skipped": self.skipped} if self.skipped else counts

    def line(self, name: str) -> str:
        rate = self.read / max(time.monotonic() - self.started, 1e-6)
        skipped = f"  skipped {self.skipped:,}" if self.skipped else ""
        return (
            f"{name}: read {self.read:,}  published {self.published:,}  "
            f"rejected {self.rejected:,}{skipped}  ({rate:,.0f}/s)"
        )


class _BatchAcks(DeliveryTracker):
    """One batch's deliveries still awaited, where the source stands after it, and the offset
    after the batch's last event in each partition of the connector's topic."""

    def __init__(self, after: Position, items: int, topic: str) -> None:
        super().__init__()
        self.after = after
        self.items = items
        self.published = 0
        self.skipped = 0
        self.topic = topic
        self.offsets: dict[int, int] = {}
        self.state: dict[str, Any] | None = None  # the adapter's, after the batch's last item

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        super().__call__(err, msg)
        if err is None and msg.topic() == self.topic:
            partition = msg.partition()
            self.offsets[partition] = max(self.offsets.get(partition, 0), msg.offset() + 1)


class ConnectorRunning(UsageError):
    """The connector is running already: a second one would publish every record twice."""

    prefix = "cannot start: "


class Runner:
    """Runs one adapter over one source for one agency."""

    def __init__(
        self,
        settings: Settings,
        source_ori: str,
        adapter: Adapter,
        source: Source,
        *,
        name: str,
        batch_size: int = BATCH_SIZE,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.adapter = adapter
        self.source = source
        self.name = name
        self.batch_size = batch_size
        self.topic = source_topic(source_ori, adapter.kind)
        self.source_ori = source_ori
        self.checkpoints = CheckpointStore(settings.data_dir / "checkpoints")
        self.progress = Progress()
        self.on_progress = on_progress or (lambda _p: None)
        codecs = codecs_for(settings)
        self._encode = codecs.serializer(SOURCE_EVENT[adapter.kind])
        self._dead_letters = DeadLetters(Letter, codecs, Stage.PRODUCERS)
        self._producer = Producer(producer_config(settings))
        self._in_flight: deque[_BatchAcks] = deque()
        self._settings = settings
        self._decode = codecs.deserializer(SOURCE_EVENT[adapter.kind])
        # Per partition, where this connector's events after the checkpoint can start.
        self._marks: dict[int, int] = {}
        self._already: set[str] = set()  # event ids found on the topic after the checkpoint
        self._state: dict[str, Any] | None = None  # a stateful adapter's, as last checkpointed
        self._events_in = EVENTS_IN.labels(stage="producers", kind=str(adapter.kind))

    def run(self, stop: threading.Event | None = None, follow: bool = False) -> Progress:
        """Publish from the checkpoint to the end (or until ``stop`` is set, with follow)."""
        stop = stop or threading.Event()
        self._claim()
        checkpoint = self.checkpoints.load(self.name)
        position = self.source.start(checkpoint)
        marks = self.checkpoints.topic_offsets(self.name)
        if isinstance(self.adapter, StatefulAdapter):
            saved = self.checkpoints.adapter_state(self.name) if checkpoint else None
            self.adapter.restore(saved)
            self._state = self.adapter.state()
        if checkpoint is None or marks is None:
            # Nothing of ours can be on the topic past its current end: note it before sending.
            self._marks = end_offsets(self._settings, self.topic)
            self.checkpoints.save(
                self.name, position, self.source.description, self._marks, self._state
            )
        else:
            self._marks = marks
            self._already = self._published_after(marks)
        batch: list[SourceItem] = []

        def at_end() -> bool:
            # The source has nothing more for now: make what it gave durable before waiting,
            # so a quiet source's last items are not held back until a batch fills up.
            nonlocal batch
            self._publish(batch)
            batch = []
            self._settle(everything=True)
            return follow and not stop.is_set()

        for item in self.source.items(position, follow=at_end):
            batch.append(item)
            if len(batch) >= self.batch_size:
                self._publish(batch)
                batch = []
            if stop.is_set():
                break
        self._publish(batch)
        self._settle(everything=True)
        return self.progress

    def _claim(self) -> None:
        """Claim the connector's name on this host (``mutualaid.claims``) for as long as this
        process runs: two connectors of one name read from one checkpoint and publish the
        same records twice, and the slower one's checkpoint write failed under the other."""
        path = self.checkpoints.directory / f"{self.name}.claim"
        if not claim(path):
            raise ConnectorRunning(
                f"connector {self.name} is already running (pid {claimant(path)}, checkpoint "
                f"{self.checkpoints.path(self.name)}); a second one would publish every record "
                "again. Stop it first, or give this source its own --name"
            )

    def _publish(self, batch: list[SourceItem]) -> None:
        """Produce a batch; checkpoint every earlier batch the broker has acknowledged since.

        Up to ``MAX_IN_FLIGHT`` batches are sent before the oldest must be acknowledged, so
        reading and mapping the next batch overlaps the broker's round trip for this one.
        """
        if not batch:
            return
        acks = _BatchAcks(batch[-1].after, len(batch), self.topic)
        self._in_flight.append(acks)
        acks.published = sum(self._produce_one(item, acks) for item in batch)
        if isinstance(self.adapter, StatefulAdapter):
            acks.state = self.adapter.state()
        self._producer.poll(0)
        if len(self._in_flight) > MAX_IN_FLIGHT:
            oldest, deadline = self._in_flight[0], time.monotonic() + DELIVERY_TIMEOUT
            while oldest.pending and time.monotonic() < deadline:
                self._producer.poll(0.01)
            if oldest.pending:
                raise DeliveryFailed(
                    f"{oldest.pending} records unacknowledged after {DELIVERY_TIMEOUT:.0f}s; "
                    "is the broker at bootstrap_servers up?"
                )
        self._settle(everything=False)

    def _settle(self, everything: bool, timeout: float = DELIVERY_TIMEOUT) -> None:
        """Checkpoint the acknowledged batches, oldest first; with ``everything``, wait for all.

        A batch is checkpointed only once it and every batch before it are acknowledged, so
        the checkpoint never passes an event the broker might not have.
        """
        if everything and self._in_flight:
            self._producer.flush(timeout)
        while self._in_flight and self._in_flight[0].pending == 0:
            acks = self._in_flight.popleft()
            if acks.errors:
                raise DeliveryFailed("broker refused records: " + "; ".join(acks.errors[:5]))
            self._marks.update(acks.offsets)
            if acks.state is not None:
                self._state = acks.state
            self.checkpoints.save(
                self.name, acks.after, self.source.description, self._marks, self._state
            )
            EVENTS_OUT.labels(stage="producers", kind=str(self.adapter.kind)).inc(acks.published)
            self.progress.read += acks.items
            self.progress.published += acks.published
            self.progress.skipped += acks.skipped
            self.progress.rejected += acks.items - acks.published - acks.skipped
            self.on_progress(self.progress)
        if everything and self._in_flight:
            raise DeliveryFailed(
                f"{sum(a.pending for a in self._in_flight)} records unacknowledged after "
                f"{timeout:.0f}s; is the broker at bootstrap_servers up?"
            )

    def _produce_one(self, item: SourceItem, acks: _BatchAcks) -> bool:
        """Produce the item's event and return True, or its dead letter and return False (also
        False, with nothing produced, for an item the adapter skipped)."""
        self._events_in.inc()
        try:
            event = self.adapter.to_event(item)
        except Rejected as rejected:
            self._reject(item, rejected, acks)
            return False
        except Skipped as skipped:
            log.info("%s: %s: %s; nothing published", self.name, item.position, skipped.reason)
            acks.skipped += 1
            return False
        if event["envelope"]["event_id"] in self._already:
            self._already.discard(event["envelope"]["event_id"])
            return True  # published before the crash, after the checkpoint
        value = self._encode(event, SerializationContext(self.topic))
        produce(self._producer, self.topic, record_key(event["envelope"]), value, acks)
        return True

    def _published_after(self, marks: dict[int, int]) -> set[str]:
        """Event ids on the topic from ``marks`` to its end: sent before a crash, unconfirmed."""
        found: set[str] = set()

        def note(msg: Message) -> None:
            try:
                event = self._decode(msg.value(), SerializationContext(self.topic))
            except DeserializationError:
                return  # not ours to judge; the router dead-letters it
            if event is not None:
                found.add(event["envelope"]["event_id"])

        start = {(self.topic, p): offset for p, offset in marks.items()}
        follower = TopicFollower(self._settings, [self.topic], note, start)
        try:
            while not follower.caught_up.is_set():
                follower.poll()
        finally:
            follower.close()
        if found:
            log.warning(
                "%s: %d events were published after the last checkpoint; they will not be "
                "published again",
                self.name,
                len(found),
            )
        return found

    def _reject(self, item: SourceItem, rejected: Rejected, acks: _BatchAcks) -> None:
        letter = self._dead_letters.rejected(
            rejected,
            source=f"{self.source.description} ({self.adapter.source_system})",
            position=item.position,
            payload=item.raw,
            source_ori=self.source_ori,
            key=f"{self.source_ori}/{self.name}".encode(),
        )
        produce(
            self._producer,
            *letter,
            acks,
        )
