"""Hotlists: NCIC-style extracts and local BOLOs, published to the compacted ``hotlist.<ori>``.

An extract is a snapshot of an agency's NCIC entries (stolen vehicles and plates, wanted,
AMBER, missing persons, protection orders), exported as CSV with one entry per line::

    ncic_number,plate,state,plate_type,reason,entered,expires,vehicle_year,vehicle_make,...

Loading one publishes every entry and removes the entries an earlier extract published that
this one no longer has (cleared or cancelled in NCIC). BOLOs are added and removed one at a
time and are never touched by an extract. The topic is compacted and keyed by entry, so it
always holds each entry's latest state; the matcher reads it whole.

Versions are the publishing time in milliseconds: a reload or an edit always supersedes.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from confluent_kafka import Message, Producer

from mutualaid.deadletter import DeadLetters
from mutualaid.errors import UsageError
from mutualaid.events import new_envelope, record_key
from mutualaid.kafka import DeliveryTracker, TopicFollower, produce, producer_config
from mutualaid.plates import normalize_plate
from mutualaid.serde import (
    SOURCE_EVENT,
    SerializationContext,
    codecs_for,
)
from mutualaid.settings import Settings
from mutualaid.topics import Kind, Stage, check_ori, hotlist_topic
from producers.contract import Rejected
from producers.parsing import epoch_millis, text

REASONS = (
    "stolen_vehicle",
    "stolen_plate",
    "wanted",
    "amber",
    "missing_person",
    "protection_order",
    "bolo",
)
EXTRACT_SYSTEM = "hotlist-ncic"
BOLO_SYSTEM = "hotlist-bolo"
COLUMNS = (
    "ncic_number",
    "plate",
    "state",
    "plate_type",
    "reason",
    "entered",
    "expires",
    "vehicle_year",
    "vehicle_make",
    "vehicle_model",
    "vehicle_color",
    "caution",
    "notes",
)
REQUIRED_COLUMNS = ("ncic_number", "plate", "reason")


class ExtractError(UsageError, ValueError):
    """The extract as a whole cannot be read (wrong header, not UTF-8)."""


@dataclass
class Extract:
    entries: list[dict] = field(default_factory=list)
    rejected: list[tuple[str, Rejected, bytes]] = field(default_factory=list)  # position, why, raw


@dataclass(frozen=True)
class LoadReport:
    published: int
    removed: int
    rejected: int


def reason_of(value: object) -> str:
    """'Stolen Vehicle', 'stolen-vehicle' and 'STOLEN_VEHICLE' all name one reason."""
    name = (text(value) or "").lower().replace(" ", "_").replace("-", "_")
    if name not in REASONS:
        raise Rejected("bad_reason", f"reason {value!r} is not one of {', '.join(REASONS)}")
    return name


def day_or_instant(value: object, column: str, *, end_of_day: bool) -> datetime | None:
    """An ISO 8601 instant with an offset, or a date; an expiry date means through that day."""
    raw = text(value)
    if raw is None:
        return None
    try:
        if len(raw) == 10:
            day = datetime.combine(date.fromisoformat(raw), time(), tzinfo=UTC)
            return day + timedelta(days=1) if end_of_day else day
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise Rejected(
            "bad_timestamp", f"{column} {raw!r} is not a date (2026-12-31) or ISO 8601 instant"
        ) from None
    if at.tzinfo is None:
        raise Rejected("bad_timestamp", f"{column} {raw!r} has no UTC offset, e.g. Z or -08:00")
    return at


def entry_body(row: dict[str, str | None]) -> dict:
    """One extract line (or BOLO) as a ``mutualaid.hotlist.Entry``; Rejected if unusable."""
    plate = normalize_plate(row.get("plate") or "")
    if not plate:
        raise Rejected("missing_plate", "plate is empty; every hotlist entry needs a plate")
    year = text(row.get("vehicle_year"))
    if year is not None and not (year.isdigit() and len(year) == 4):
        raise Rejected("bad_year", f"vehicle_year {year!r} is not a four-digit year")
    state = text(row.get("state"))
    return {
        "plate": plate,
        "plate_state": state.upper() if state else None,
        "plate_type": text(row.get("plate_type")),
        "reason": reason_of(row.get("reason")),
        "ncic_number": text(row.get("ncic_number")),
        "entered_at": day_or_instant(row.get("entered"), "entered", end_of_day=False),
        "expires_at": day_or_instant(row.get("expires"), "expires", end_of_day=True),
        "vehicle_year": int(year) if year else None,
        "vehicle_make": text(row.get("vehicle_make")),
        "vehicle_model": text(row.get("vehicle_model")),
        "vehicle_color": text(row.get("vehicle_color")),
        "caution": text(row.get("caution")),
        "notes": text(row.get("notes")),
    }


def entry_event(
    ori: str, record_id: str, body: dict | None, system: str, position: str | None, now: datetime
) -> dict:
    """An upsert (body) or removal (None) of one entry, versioned by the publishing time."""
    envelope = new_envelope(
        source_ori=ori,
        source_system=system,
        kind=Kind.HOTLIST_ENTRY,
        record_id=record_id,
        version=epoch_millis(now),
        occurred_at=(body or {}).get("entered_at") or now,
        op="UPSERT" if body is not None else "DELETE",
        source_position=position,
        now=now,
    )
    return {"envelope": envelope, "body": body}


def read_extract(path: Path, ori: str, now: datetime) -> Extract:
    """Parse an extract; a bad line is rejected with its reason, the rest still load."""
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractError(f"{path}: byte {exc.start} is not UTF-8; export as UTF-8") from None
    lines = content.splitlines(keepends=True)
    reader = csv.DictReader(io.StringIO(content))
    header = [h.strip() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if unknown or missing:
        raise ExtractError(
            f"{path}, line 1 (header): "
            + (f"unknown column(s) {', '.join(unknown)}; " if unknown else "")
            + (f"missing column(s) {', '.join(missing)}; " if missing else "")
            + f"the columns are {', '.join(COLUMNS)} ({', '.join(REQUIRED_COLUMNS)} required)"
        )
    reader.fieldnames = header
    extract = Extract()
    for row in reader:
        position = f"{path.name}:{reader.line_num}"
        try:
            if None in row:
                raise Rejected(
                    "bad_row", f"{len(header) + len(row[None])} values, header has {len(header)}"
                )
            ncic = text(row.get("ncic_number"))
            if ncic is None:
                raise Rejected("missing_ncic_number", "ncic_number is empty; NCIC entries need one")
            body = entry_body(row)
        except Rejected as rejected:
            raw = lines[reader.line_num - 1] if reader.line_num <= len(lines) else ""
            extract.rejected.append((position, rejected, raw.encode()))
            continue
        extract.entries.append(entry_event(ori, ncic, body, EXTRACT_SYSTEM, position, now))
    return extract


class HotlistPublisher:
    """Publishes entries (and dead letters) and waits until the broker acknowledged them all."""

    def __init__(self, settings: Settings) -> None:
        codecs = codecs_for(settings)
        self._encode = codecs.serializer(SOURCE_EVENT[Kind.HOTLIST_ENTRY])
        self._dead_letters = DeadLetters(self._produce, codecs, Stage.PRODUCERS)
        self._producer = Producer(producer_config(settings))
        self._acks = DeliveryTracker()

    def publish(self, events: Iterable[dict]) -> int:
        count = 0
        for event in events:
            envelope = event["envelope"]
            topic = hotlist_topic(envelope["source_ori"])
            self._produce(
                topic, record_key(envelope), self._encode(event, SerializationContext(topic))
            )
            if event["body"] is None:
                # The removal first (the matcher and any audit see who removed what), then the
                # tombstone that lets compaction forget the entry.
                self._produce(topic, record_key(envelope), None)
            count += 1
        self._acks.wait(self._producer)
        return count

    def dead_letters(
        self, ori: str, source: str, rejected: list[tuple[str, Rejected, bytes]]
    ) -> None:
        for position, why, raw in rejected:
            self._dead_letters.rejected(
                why, source=source, position=position, payload=raw, source_ori=ori
            )
        self._acks.wait(self._producer)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        produce(self._producer, topic, key, value, self._acks)


def current_entries(settings: Settings, ori: str) -> dict[str, dict]:
    """The agency's entries as the topic holds them now: record id -> latest event."""
    # With the process's registry: what the publisher wrote with it, this reads with it.
    decode = codecs_for(settings).deserializer(SOURCE_EVENT[Kind.HOTLIST_ENTRY])
    entries: dict[str, dict] = {}
    topic = hotlist_topic(ori)

    def apply(msg: Message) -> None:
        record_id = msg.key().decode().split("/", 1)[1]
        value = msg.value()
        event = None if value is None else decode(value, SerializationContext(topic))
        if event is None or event["body"] is None:
            entries.pop(record_id, None)
        else:
            entries[record_id] = event

    follower = TopicFollower(settings, [topic], apply)
    try:
        while not follower.caught_up.is_set():
            follower.poll()
    finally:
        follower.close()
    return entries


def load_extract(
    settings: Settings, ori: str, path: Path, *, now: datetime | None = None
) -> LoadReport:
    """Publish an extract; entries an earlier extract published and this one lacks are removed."""
    ori = check_ori(ori)
    now = now or datetime.now(UTC)
    extract = read_extract(path, ori, now)
    publisher = HotlistPublisher(settings)
    publisher.dead_letters(ori, str(path), extract.rejected)
    listed = {e["envelope"]["record_id"] for e in extract.entries}
    gone = [
        entry_event(ori, record_id, None, EXTRACT_SYSTEM, path.name, now)
        for record_id, event in current_entries(settings, ori).items()
        if event["envelope"]["source_system"] == EXTRACT_SYSTEM and record_id not in listed
    ]
    publisher.publish([*extract.entries, *gone])
    return LoadReport(len(extract.entries), len(gone), len(extract.rejected))


def add_bolo(
    settings: Settings, ori: str, fields: dict[str, str | None], *, record_id: str | None = None
) -> str:
    """Publish one local BOLO; returns its id (given, or a new BOLO-<uuid>)."""
    ori = check_ori(ori)
    body = entry_body(fields)
    record_id = record_id or f"BOLO-{uuid.uuid4().hex[:12].upper()}"
    now = datetime.now(UTC)
    HotlistPublisher(settings).publish([entry_event(ori, record_id, body, BOLO_SYSTEM, None, now)])
    return record_id


def remove_entry(settings: Settings, ori: str, record_id: str) -> bool:
    """Remove one entry (BOLO or NCIC); False if the agency has no such entry."""
    ori = check_ori(ori)
    current = current_entries(settings, ori).get(record_id)
    if current is None:
        return False
    system = current["envelope"]["source_system"]
    now = datetime.now(UTC)
    HotlistPublisher(settings).publish([entry_event(ori, record_id, None, system, None, now)])
    return True
