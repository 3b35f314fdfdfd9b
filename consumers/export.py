"""Everything an agency has, out of mutualaid in open formats: no lock-in.

``mutualaid export --agency ORI --out DIR`` writes, for the agency:

- ``own/<kind>.avro`` and ``.ndjson``: every event its connectors published (``src.<ori>.*``),
- ``received/<kind>.avro`` and ``.ndjson``: every record partners shared with it
  (``share.<ori>.*``), as received: fields a partner sealed stay sealed to the agency's own keys
  (records the router sealed whole are opened with them; one that does not open is left out
  and counted),
- ``own/rms.record.nibrs/``: its own RMS records also as NIBRS IEPD 4.2 submissions, one file per
  event (``consumers.nibrs_xml``), with a ``SHA256SUMS`` file,
- ``audit/dissemination.*``: every sharing decision about its own records,
- ``audit/search.*``: every search of its index (who, why, what, how many results),
- ``agreements.yaml`` (every agreement it is owner or partner of) and ``registry.yaml`` (its own
  entry and those of the agencies those agreements name),
- ``manifest.json``: for each file its format, schema, record count, size and SHA-256.

Avro files are object container files with their schema embedded (readable by any Avro tool);
NDJSON holds the same records one per line, times as ISO 8601, bytes as base64. Records are
streamed from the topics to both files at once, so memory stays flat in the record count.
``--since``/``--until`` narrow by when a record occurred (or was decided or searched).

``mutualaid import`` rebuilds an agency's index from ``received/*.avro`` the way the projector
builds it from the topics (same decryption, same versioning), e.g. into a new backend.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import fastavro
import yaml
from confluent_kafka import Message

from consumers.index import open_index
from consumers.nibrs_xml import NotNibrs, submission
from consumers.opening import ShareReader
from mutualaid.agencies import Registry
from mutualaid.crypto import load_keyring
from mutualaid.kafka import TopicFollower
from mutualaid.policy import Policy
from mutualaid.sealing import UnsealError
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    SEARCH_AUDIT,
    SHARED_EVENT,
    SOURCE_EVENT,
    SerializationContext,
    codecs_for,
)
from mutualaid.settings import Settings
from mutualaid.topics import (
    AUDIT_DISSEMINATION,
    AUDIT_SEARCH,
    RECORD_KINDS,
    Kind,
    check_ori,
    share_topic,
    source_topic,
)

log = logging.getLogger("mutualaid.export")
FORMAT = "mutualaid-export/1"
PROGRESS_EVERY = 50_000
# librdkafka prefetches up to 100,000 records or 64 MiB per partition by default: reading a
# topic whole, the export's memory would grow with the record count up to that. A few MiB
# per partition keeps it flat and still ahead of the writing.
BOUNDED_PREFETCH = {"queued.min.messages": 2000, "queued.max.messages.kbytes": 4096}


@dataclass(frozen=True)
class Part:
    """One topic's records into one pair of files."""

    path: str  # without suffix, e.g. "own/alpr.read"
    topic: str
    schema: str
    keep: Callable[[dict], bool]
    when: Callable[[dict], datetime]
    shared: Kind | None = None  # a share topic of this kind: records sealed whole are opened
    nibrs: bool = False  # also one NIBRS XML submission per record


@dataclass
class Written:
    path: str
    format: str
    schema: str | None
    records: int = 0
    bytes: int = 0
    sha256: str = ""


@dataclass
class Window:
    since: datetime | None = None
    until: datetime | None = None

    def holds(self, at: datetime) -> bool:
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)


def _occurred(event: dict) -> datetime:
    return event["envelope"]["occurred_at"]


def parts(ori: str) -> list[Part]:
    out = []
    for kind in RECORD_KINDS:
        own = source_topic(ori, kind)
        nibrs = kind == Kind.RMS_RECORD
        out.append(Part(f"own/{kind}", own, SOURCE_EVENT[kind], _always, _occurred, nibrs=nibrs))
        out.append(
            Part(
                f"received/{kind}",
                share_topic(ori, kind),
                SHARED_EVENT[kind],
                _always,
                _occurred,
                shared=kind,
            )
        )
    out.append(
        Part(
            "audit/dissemination",
            AUDIT_DISSEMINATION,
            AUDIT_DISSEMINATION_SCHEMA,
            lambda r: r["source_ori"] == ori,
            lambda r: r["decided_at"],
        )
    )
    out.append(
        Part(
            "audit/search",
            AUDIT_SEARCH,
            SEARCH_AUDIT,
            lambda r: r["agency_ori"] == ori,
            lambda r: r["searched_at"],
        )
    )
    return out


def _always(_: dict) -> bool:
    return True


def _json_value(value: Any) -> str:
    """What JSON has no type for, as NDJSON writes it: times as ISO 8601, bytes as base64.
    (Given to json.dumps as ``default``: the encoder walks the record in C, and calls this only
    for those values.)"""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"no JSON form for {type(value).__name__}")


def to_ndjson(record: dict) -> bytes:
    """One record as a line of NDJSON."""
    return (json.dumps(record, separators=(",", ":"), default=_json_value) + "\n").encode()


def _checksum(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a written file, read back in chunks (memory stays flat)."""
    digest = hashlib.sha256()
    with path.open("rb") as fo:
        while chunk := fo.read(1 << 20):
            digest.update(chunk)
    return path.stat().st_size, digest.hexdigest()


def topic_records(settings: Settings, topic: str) -> Iterator[Message]:
    """Every record on ``topic`` from its beginning to the end it had when reading began."""
    arrived: deque[Message] = deque()
    follower = TopicFollower(settings, [topic], arrived.append, config=BOUNDED_PREFETCH)
    try:
        while True:
            follower.poll(0.5)
            while arrived:
                yield arrived.popleft()
            if follower.caught_up.is_set():
                return
    finally:
        follower.close()


class Exporter:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        policy: Policy,
        ori: str,
        out: Path,
        window: Window,
        progress: IO[str] = sys.stderr,
    ) -> None:
        self.settings, self.registry, self.policy = settings, registry, policy
        self.ori, self.out, self.window, self.progress = check_ori(ori), out, window, progress
        self._codecs = codecs_for(settings)
        self.written: list[Written] = []
        self.unopened = 0  # sealed share records that did not open with the agency's keys
        self.nibrs_skipped: dict[str, int] = {}  # reason -> records NIBRS cannot carry

    def run(self) -> Path:
        started = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        for part in parts(self.ori):
            self._export(part)
        self._policy_files()
        manifest = {
            "format": FORMAT,
            "agency": self.ori,
            "exported_at": datetime.now(UTC).isoformat(),
            "since": self.window.since.isoformat() if self.window.since else None,
            "until": self.window.until.isoformat() if self.window.until else None,
            "notes": [
                "Avro files are object container files with the writer schema embedded.",
                "NDJSON holds the same records: times in ISO 8601, bytes in base64.",
                "received/: fields partners sealed stay sealed to this agency's keys.",
            ],
            "files": [vars(w) for w in self.written],
            "nibrs_skipped": self.nibrs_skipped,
        }
        path = self.out / "manifest.json"
        path.write_text(json.dumps(manifest, indent=2) + "\n")
        total = sum(w.records for w in self.written if w.format == "avro")
        print(
            f"exported {total:,} records for {self.ori} to {self.out} "
            f"in {time.monotonic() - started:.1f}s; manifest {path}",
            file=self.progress,
        )
        if self.unopened:
            print(
                f"  {self.unopened:,} sealed record(s) on its share topics did not open with "
                f"{self.ori}'s keys and were left out (see the warnings above)",
                file=self.progress,
            )
        return path

    def _decoder(self, part: Part) -> Callable[[bytes, SerializationContext], dict | None]:
        if part.shared is None:
            return self._codecs.deserializer(part.schema)
        kind = part.shared
        keyring = load_keyring(self.ori, self.settings.private_keys_dir)
        reader = ShareReader(codecs_for(self.settings), keyring)

        def opened(value: bytes, ctx: SerializationContext) -> dict | None:
            try:
                return reader.decode(kind, value, ctx)
            except UnsealError as exc:
                self.unopened += 1
                log.warning("%s: not exported: %s", ctx.where(), exc)
                return None

        return opened

    def _export(self, part: Part) -> None:
        decode = self._decoder(part)
        schema = self._codecs.store.get(part.schema)
        avro_path = self.out / f"{part.path}.avro"
        json_path = self.out / f"{part.path}.ndjson"
        avro_path.parent.mkdir(parents=True, exist_ok=True)
        avro_out = Written(str(avro_path.relative_to(self.out)), "avro", part.schema)
        json_out = Written(str(json_path.relative_to(self.out)), "ndjson", part.schema)
        nibrs = _NibrsFiles(self, part.path) if part.nibrs else None
        with avro_path.open("wb") as avro_file, json_path.open("wb") as json_file:

            def records() -> Iterator[dict]:
                for msg in topic_records(self.settings, part.topic):
                    value = msg.value()
                    if value is None:
                        continue  # a tombstone: only lets compaction drop the key
                    ctx = SerializationContext.of(msg)
                    record = decode(value, ctx)
                    if record is None or not part.keep(record):
                        continue
                    if not self.window.holds(part.when(record)):
                        continue
                    json_file.write(to_ndjson(record))
                    json_out.records += 1
                    if nibrs is not None:
                        nibrs.write(record)
                    if json_out.records % PROGRESS_EVERY == 0:
                        print(f"  {part.path}: {json_out.records:,}", file=self.progress)
                    yield record

            fastavro.writer(avro_file, schema, records(), codec="deflate")
        avro_out.records = json_out.records
        for w, path in ((avro_out, avro_path), (json_out, json_path)):
            w.bytes, w.sha256 = _checksum(path)
            self.written.append(w)
        if nibrs is not None:
            self.written.append(nibrs.close())
        print(f"  {part.path}: {json_out.records:,} records", file=self.progress)

    def _policy_files(self) -> None:
        mine = [
            a
            for a in self.policy.agreements
            if a.owner == self.ori or self.ori in self.policy.partners_of(a)
        ]
        named = {self.ori}
        for a in mine:
            named |= {a.owner, *self.policy.partners_of(a)}
        files = {
            "agreements.yaml": {
                "agreements": [a.model_dump(mode="json") for a in sorted(mine, key=lambda a: a.id)]
            },
            "registry.yaml": {
                "agencies": [
                    a.model_dump(mode="json")
                    for a in sorted(self.registry.agencies, key=lambda a: a.ori)
                    if a.ori in named
                ]
            },
        }
        for name, content in files.items():
            data = yaml.safe_dump(content, sort_keys=False).encode()
            (self.out / name).write_bytes(data)
            self.written.append(
                Written(name, "yaml", None, 0, len(data), hashlib.sha256(data).hexdigest())
            )


class _NibrsFiles:
    """One part's records as NIBRS submissions, numbered in the order read. The manifest lists
    the directory by its ``SHA256SUMS`` (size and SHA-256 of that file, the number of
    submissions as records), which names every submission with its own SHA-256."""

    def __init__(self, exporter: Exporter, path: str) -> None:
        self.exporter, self.at = exporter, datetime.now(UTC)
        self.relative = f"{path}.nibrs"
        self.directory = exporter.out / self.relative
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sums = (self.directory / "SHA256SUMS").open("w")
        self.written = Written(
            f"{self.relative}/SHA256SUMS", "nibrs-xml", "NIBRS IEPD 4.2 nibrs:Submission"
        )

    def write(self, event: dict) -> None:
        envelope = event["envelope"]
        try:
            data = submission(event, self.exporter.ori, self.at)
        except NotNibrs as exc:
            skipped = self.exporter.nibrs_skipped
            skipped[str(exc)] = skipped.get(str(exc), 0) + 1
            return
        self.written.records += 1
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in envelope["record_id"])
        name = f"{self.written.records:08d}-{safe}.v{envelope['version']}.xml"
        (self.directory / name).write_bytes(data)
        self.sums.write(f"{hashlib.sha256(data).hexdigest()}  {name}\n")

    def close(self) -> Written:
        self.sums.close()
        self.written.bytes, self.written.sha256 = _checksum(self.directory / "SHA256SUMS")
        return self.written


def read_received(directory: Path) -> Iterator[dict]:
    """The shared events of an export, every kind, in the order they were received per kind."""
    for kind in RECORD_KINDS:
        path = directory / "received" / f"{kind}.avro"
        if not path.exists():
            continue
        with path.open("rb") as fo:
            # The received/ files hold shared events: records, so dicts.
            yield from cast(Iterator[dict], fastavro.reader(fo))


def import_index(
    settings: Settings,
    ori: str,
    directory: Path,
    open_event: Callable[[dict], dict | None],
    batch: int = 500,
) -> int:
    """Apply an export's received records to the agency's index; returns rows changed."""
    index = open_index(settings, check_ori(ori))
    changed = 0
    pending: list[dict] = []
    try:
        for event in read_received(directory):
            if event["disclosure"]["partner_ori"] != ori:
                continue
            opened = open_event(event)
            if opened is not None:
                pending.append(opened)
            if len(pending) >= batch:
                changed += index.apply(pending)
                pending = []
        if pending:
            changed += index.apply(pending)
    finally:
        index.close()
    return changed
