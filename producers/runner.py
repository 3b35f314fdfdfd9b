"""The shared connector runner: source items in, Avro events out, nothing lost or duplicated.

For every batch it maps each item with the connector's adapter, produces the events (or a dead
letter for an item the adapter rejects), waits until the broker has acknowledged all of them,
and only then saves the checkpoint. A crash between produce and checkpoint replays the batch;
replayed events carry the same record ids, versions and event ids, so downstream ignores them.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from confluent_kafka import Producer

from mutualaid.deadletter import dead_letter
from mutualaid.events import record_key
from mutualaid.kafka import DeliveryTracker, producer_config
from mutualaid.metrics import EVENTS_IN, EVENTS_OUT
from mutualaid.serde import (
    DEAD_LETTER,
    SOURCE_EVENT,
    AvroSerializer,
    SchemaStore,
    SerializationContext,
    registry_client,
)
from mutualaid.settings import Settings
from mutualaid.topics import Kind, Stage, dlq_topic, source_topic
from producers.checkpoint import CheckpointStore, FilePosition

BATCH_SIZE = 1000
FOLLOW_POLL_SECONDS = 0.5


class Rejected(Exception):
    """An item the adapter cannot turn into an event; it goes to dlq.producers."""

    def __init__(self, error_type: str, reason: str) -> None:
        self.error_type = error_type
        self.reason = reason
        super().__init__(f"{error_type}: {reason}")


@dataclass(frozen=True)
class SourceItem:
    """One raw item and the position just after it (where a resumed read starts)."""

    raw: bytes
    line: int
    after: FilePosition


class Adapter(Protocol):
    kind: Kind
    source_system: str

    def to_event(self, item: SourceItem) -> dict:
        """The event for this item, or raise Rejected."""
        ...


@dataclass
class Progress:
    read: int = 0
    published: int = 0
    rejected: int = 0
    started: float = field(default_factory=time.monotonic)

    def counts(self) -> dict[str, int]:
        return {"read": self.read, "published": self.published, "rejected": self.rejected}

    def line(self, name: str) -> str:
        rate = self.read / max(time.monotonic() - self.started, 1e-6)
        return (
            f"{name}: read {self.read:,}  published {self.published:,}  "
            f"rejected {self.rejected:,}  ({rate:,.0f}/s)"
        )


class LineFile:
    """A text export read line by line from a byte offset, header kept aside."""

    def __init__(self, path: Path, has_header: bool = True) -> None:
        self.path = path
        self.has_header = has_header
        with open(path, "rb") as f:
            head = f.read(4096)
        self.fingerprint = hashlib.sha256(head.split(b"\n", 1)[0] + head[:256]).hexdigest()[:16]
        first = head.split(b"\n", 1)[0] if has_header else b""
        self.header = first.rstrip(b"\r")
        self._body_start = len(first) + 1 if has_header else 0

    def start(self, checkpoint: FilePosition | None) -> FilePosition:
        if checkpoint is not None and checkpoint.fingerprint == self.fingerprint:
            return checkpoint
        return FilePosition(self.fingerprint, self._body_start, 1 if self.has_header else 0)

    def items(self, start: FilePosition, follow: Callable[[], bool]) -> Iterator[SourceItem]:
        """Lines from ``start``; while ``follow()`` is true, wait at the end for more."""
        with open(self.path, "rb") as f:
            f.seek(start.offset)
            line_no = start.line
            while True:
                raw = f.readline()
                if raw.endswith(b"\n") or (raw and not follow()):
                    line_no += 1
                    after = FilePosition(self.fingerprint, f.tell(), line_no)
                    if raw.strip():
                        yield SourceItem(raw.rstrip(b"\r\n"), line_no, after)
                    continue
                # End of file, or a line still being written: go back to its start and wait.
                f.seek(f.tell() - len(raw))
                if not follow():
                    return
                time.sleep(FOLLOW_POLL_SECONDS)


class Runner:
    """Runs one adapter over one file for one agency."""

    def __init__(
        self,
        settings: Settings,
        source_ori: str,
        adapter: Adapter,
        source: LineFile,
        *,
        name: str,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.adapter = adapter
        self.source = source
        self.name = name
        self.topic = source_topic(source_ori, adapter.kind)
        self.source_ori = source_ori
        self.checkpoints = CheckpointStore(settings.data_dir / "checkpoints")
        self.progress = Progress()
        self.on_progress = on_progress or (lambda _p: None)
        store = SchemaStore()
        registry = registry_client(settings.schema_registry_url)
        self._encode = AvroSerializer(store, SOURCE_EVENT[adapter.kind], registry)
        self._encode_dead = AvroSerializer(store, DEAD_LETTER, registry)
        self._producer = Producer(producer_config(settings))
        self._tracker = DeliveryTracker()

    def run(self, stop: threading.Event | None = None, follow: bool = False) -> Progress:
        """Publish from the checkpoint to the end (or until ``stop`` is set, with follow)."""
        stop = stop or threading.Event()
        position = self.source.start(self.checkpoints.load(self.name))
        batch: list[SourceItem] = []
        for item in self.source.items(position, follow=lambda: follow and not stop.is_set()):
            batch.append(item)
            if len(batch) >= BATCH_SIZE:
                self._publish(batch)
                batch = []
            if stop.is_set():
                break
        self._publish(batch)
        return self.progress

    def _publish(self, batch: list[SourceItem]) -> None:
        if not batch:
            return
        published = sum(self._produce_one(item) for item in batch)
        self._tracker.wait(self._producer)
        self.checkpoints.save(self.name, batch[-1].after, str(self.source.path))
        EVENTS_OUT.labels(stage="producers", kind=str(self.adapter.kind)).inc(published)
        self.progress.read += len(batch)
        self.progress.published += published
        self.progress.rejected += len(batch) - published
        self.on_progress(self.progress)

    def _produce_one(self, item: SourceItem) -> bool:
        """Produce the item's event and return True, or its dead letter and return False."""
        EVENTS_IN.labels(stage="producers", kind=str(self.adapter.kind)).inc()
        try:
            event = self.adapter.to_event(item)
        except Rejected as rejected:
            self._reject(item, rejected)
            return False
        value = self._encode(event, SerializationContext(self.topic))
        self._send(self.topic, record_key(event["envelope"]), value)
        return True

    def _reject(self, item: SourceItem, rejected: Rejected) -> None:
        topic = dlq_topic(Stage.PRODUCERS)
        letter = dead_letter(
            stage=Stage.PRODUCERS,
            reason=rejected.reason,
            error_type=rejected.error_type,
            source=f"{self.source.path} ({self.adapter.source_system})",
            position=f"line {item.line}",
            payload=item.raw,
            source_ori=self.source_ori,
        )
        self._send(
            topic,
            f"{self.source_ori}/{self.name}".encode(),
            self._encode_dead(letter, SerializationContext(topic)),
        )

    def _send(self, topic: str, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._tracker)
                self._tracker.sent()
                return
            except BufferError:
                # The local queue is full: let deliveries drain, then try again.
                self._producer.poll(0.1)
