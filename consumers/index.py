"""The search index an agency holds: one SQLite file with FTS5, written only by its projector.

Idempotent by construction: a row is keyed by (owner ORI, kind, record id) and only a higher
version replaces it, so replaying a topic changes nothing. A delete leaves a tombstone row with
its version, so an older upsert that arrives late cannot bring the record back.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from mutualaid.plates import normalize_plate, plate_key
from mutualaid.policy import distance_km

SCHEMA = """
create table if not exists records (
    id integer primary key,
    source_ori text not null,
    kind text not null,
    record_id text not null,
    version integer not null,
    deleted integer not null default 0,
    occurred_at text not null,
    tier text not null,
    contact text,
    agreement_id text not null,
    plate text,
    plate_key text,
    plate_state text,
    latitude real,
    longitude real,
    body text,
    incident_number text,
    retain_until text,
    unique (source_ori, kind, record_id)
);
create index if not exists records_plate on records (plate) where deleted = 0;
create index if not exists records_plate_key on records (plate_key) where deleted = 0;
create index if not exists records_incident on records (incident_number) where deleted = 0;
create index if not exists records_time on records (occurred_at) where deleted = 0;
create index if not exists records_retention on records (retain_until) where deleted = 0;
create virtual table if not exists records_text using fts5(text);
create table if not exists persons (
    id integer primary key,
    record integer not null references records (id),
    last_name text,
    first_name text,
    dob text
);
create index if not exists persons_record on persons (record);
create index if not exists persons_dob on persons (dob);
create virtual table if not exists person_names using fts5(name, tokenize='trigram');
create table if not exists search_audit (
    id integer primary key,
    at text not null,
    user text not null,
    reason text not null,
    query_json text not null,
    result_count integer not null,
    published integer not null default 0
);
"""


@dataclass(frozen=True)
class Hit:
    """One record as a search returns it: enough to show it, cite the agreement that let it in,
    and (for a pointer, whose body is None) say whom to call."""

    source_ori: str
    kind: str
    record_id: str
    version: int
    occurred_at: datetime
    tier: str
    contact: str | None
    body: dict | None
    agreement_id: str


def _strings(value: Any) -> list[str]:
    """Every string inside a body, for free-text search whatever the kind's schema."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot store {type(value).__name__} in an index body")


@dataclass(frozen=True)
class Criteria:
    """What to look for; every criterion given must match (AND)."""

    plate: str | None = None  # misread-tolerant; * and ? are wildcards
    name: str | None = None  # "last" or "first last"; tolerant of small misspellings
    dob: str | None = None  # YYYY-MM-DD
    incident_number: str | None = None
    text: str | None = None  # words anywhere in the record (FTS5 syntax)
    since: datetime | None = None
    until: datetime | None = None
    source_ori: str | None = None
    kind: str | None = None
    near: tuple[float, float, float] | None = None  # latitude, longitude, km
    limit: int = 100

    def is_empty(self) -> bool:
        return not any(
            (self.plate, self.name, self.dob, self.incident_number, self.text, self.near)
        )


def _location(body: dict) -> tuple[float | None, float | None]:
    where = body.get("location") if isinstance(body.get("location"), dict) else body
    return where.get("latitude"), where.get("longitude")


def _name_similarity(wanted: str, first: str | None, last: str | None) -> float:
    wanted_parts = wanted.lower().split()
    have = [(first or "").lower(), (last or "").lower()]
    if len(wanted_parts) == 1:
        return SequenceMatcher(None, wanted_parts[0], have[1]).ratio()
    return SequenceMatcher(None, " ".join(wanted_parts), " ".join(have)).ratio()


FORMAT_VERSION = 3


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _newer(envelope: dict, row: sqlite3.Row) -> bool:
    """Higher versions win; at the same version a delete (a recall) wins over the copy."""
    if envelope["version"] != row["version"]:
        return envelope["version"] > row["version"]
    return envelope["op"] == "DELETE" and not row["deleted"]


def _set_aside_old_format(path: Path) -> None:
    """An index in an older format is renamed (kept: it holds search audit rows) and rebuilt."""
    if not path.exists():
        return
    with sqlite3.connect(path) as db:
        version = db.execute("pragma user_version").fetchone()[0]
    if version != FORMAT_VERSION:
        path.rename(path.with_name(f"{path.name}.format{version}"))
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)


NAME_SIMILARITY = 0.8


class SqliteIndex:
    """One agency's index, one SQLite file. A single projector writes it; searches read it
    concurrently (WAL). Tombstones are rows with deleted=1 and no body, plate or text."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _set_aside_old_format(path)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # WAL lets searches read while the projector writes. synchronous=FULL, not NORMAL:
        # under NORMAL+WAL a commit survives a crash of the process but not a power loss, and
        # the projector commits its Kafka offsets as soon as apply() returns, so a batch lost
        # that way would never be replayed. FULL costs one fsync of the WAL per batch.
        self._db.row_factory = sqlite3.Row
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")
        self._db.execute("pragma busy_timeout=10000")
        self._db.executescript(SCHEMA)
        self._db.execute(f"pragma user_version={FORMAT_VERSION}")

    def apply(self, events: Sequence[dict]) -> int:
        """Apply a batch of shared events in one transaction; returns rows changed."""
        if not events:
            return 0
        changed = 0
        self._db.execute("begin immediate")
        try:
            for event in events:
                changed += self._apply_one(event)
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        return changed

    def _apply_one(self, event: dict) -> int:
        env, disclosure, body = event["envelope"], event["disclosure"], event["body"]
        key = (env["source_ori"], env["kind"], env["record_id"])
        row = self._db.execute(
            "select id, version, deleted from records "
            "where source_ori=? and kind=? and record_id=?",
            key,
        ).fetchone()
        if row is not None and not _newer(env, row):
            return 0
        deleted = env["op"] == "DELETE"
        # A pointer says only that the record exists and whom to call: even if a body came
        # with it, the index must not make withheld data searchable.
        body = None if deleted or disclosure["tier"] == "POINTER" else body
        plate = body.get("plate") if body else None
        latitude, longitude = _location(body) if body else (None, None)
        values = {
            "version": env["version"],
            "deleted": int(deleted),
            "occurred_at": env["occurred_at"].astimezone(UTC).isoformat(),
            "tier": disclosure["tier"],
            "contact": disclosure["contact"],
            "agreement_id": disclosure["agreement_id"],
            "plate": plate,
            "plate_key": plate_key(plate) if plate else None,
            "plate_state": body.get("plate_state") if body else None,
            "latitude": latitude,
            "longitude": longitude,
            "body": json.dumps(body, default=_json_default) if body else None,
            "incident_number": body.get("incident_number") if body else None,
            "retain_until": _iso(disclosure.get("retain_until")),
        }
        if row is None:
            columns = ["source_ori", "kind", "record_id", *values]
            rowid = self._db.execute(
                f"insert into records ({', '.join(columns)}) "
                f"values ({', '.join('?' * len(columns))})",
                (*key, *values.values()),
            ).lastrowid
        else:
            rowid = row[0]
            self._db.execute(
                f"update records set {', '.join(f'{c}=?' for c in values)} where id=?",
                (*values.values(), rowid),
            )
            self._clear(rowid)
        if body:
            self._db.execute(
                "insert into records_text (rowid, text) values (?, ?)",
                (rowid, " ".join(_strings(body))),
            )
            for person in body.get("persons") or []:
                self._add_person(rowid, person)
        return 1

    def _clear(self, rowid: int) -> None:
        """Drop a record's text and person entries (before an update, a delete or a purge)."""
        self._db.execute("delete from records_text where rowid=?", (rowid,))
        for (person,) in self._db.execute("select id from persons where record=?", (rowid,)):
            self._db.execute("delete from person_names where rowid=?", (person,))
        self._db.execute("delete from persons where record=?", (rowid,))

    def _add_person(self, rowid: int, person: dict) -> None:
        first, last = person.get("first_name"), person.get("last_name")
        person_id = self._db.execute(
            "insert into persons (record, last_name, first_name, dob) values (?, ?, ?, ?)",
            (rowid, last, first, person.get("dob")),
        ).lastrowid
        name = " ".join(n for n in (first, last) if n)
        if name:
            self._db.execute(
                "insert into person_names (rowid, name) values (?, ?)", (person_id, name)
            )

    def search(self, c: Criteria) -> list[Hit]:
        """Records matching every criterion: exact plates first, then misreads; newest first."""
        where, args, rank, rank_args = ["r.deleted = 0"], [], "", []
        if c.plate and ("*" in c.plate or "?" in c.plate):
            # GLOB, not LIKE: it is case-sensitive (plates are stored upper case), so SQLite can
            # answer a prefix pattern such as 7AB* from the plate index instead of a scan.
            where.append("r.plate glob ?")
            args.append(re.sub(r"[^0-9A-Z*?]", "", c.plate.upper()))
        elif c.plate:
            wanted = normalize_plate(c.plate)
            where.append("r.plate_key = ?")
            args.append(plate_key(wanted))
            rank, rank_args = "case when r.plate = ? then 0 else 1 end, ", [wanted]
        if c.incident_number:
            where.append("r.incident_number = ?")
            args.append(c.incident_number.strip())
        if c.text:
            where.append("r.id in (select rowid from records_text where records_text match ?)")
            args.append(c.text)
        if c.dob:
            where.append("r.id in (select record from persons where dob = ?)")
            args.append(c.dob)
        if c.name:
            # Candidates share a trigram with the surname; similarity then decides.
            surname = c.name.split()[-1].lower()
            grams = {surname[i : i + 3] for i in range(len(surname) - 2)} or {surname}
            where.append(
                "r.id in (select p.record from persons p join person_names n "
                "on n.rowid = p.id where person_names match ?)"
            )
            args.append(" OR ".join(f'"{g}"' for g in sorted(grams)))
        for column, op, value in (("occurred_at", ">=", c.since), ("occurred_at", "<=", c.until)):
            if value is not None:
                where.append(f"r.{column} {op} ?")
                args.append(value.astimezone(UTC).isoformat())
        for column, value in (("source_ori", c.source_ori), ("kind", c.kind)):
            if value:
                where.append(f"r.{column} = ?")
                args.append(value)
        if c.near:
            lat, lon, km = c.near
            dlat, dlon = km / 111.0, km / (111.0 * max(math.cos(math.radians(lat)), 0.01))
            where.append("r.latitude between ? and ? and r.longitude between ? and ?")
            args += [lat - dlat, lat + dlat, lon - dlon, lon + dlon]
        # SQL narrows with indexes; the exact distance and name tests run on what is left.
        rows = self._db.execute(
            f"select r.* from records r where {' and '.join(where)} "
            f"order by {rank}r.occurred_at desc",
            [*args, *rank_args],
        )
        hits = []
        for row in rows:
            if c.near and distance_km((row["latitude"], row["longitude"]), c.near[:2]) > c.near[2]:
                continue
            if c.name and not self._name_matches(row["id"], c.name):
                continue
            hits.append(self._hit(row))
            if len(hits) >= c.limit:
                break
        return hits

    def _name_matches(self, rowid: int, wanted: str) -> bool:
        people = self._db.execute(
            "select first_name, last_name from persons where record = ?", (rowid,)
        )
        return any(
            _name_similarity(wanted, first, last) >= NAME_SIMILARITY for first, last in people
        )

    @staticmethod
    def _hit(r: sqlite3.Row) -> Hit:
        return Hit(
            source_ori=r["source_ori"],
            kind=r["kind"],
            record_id=r["record_id"],
            version=r["version"],
            occurred_at=datetime.fromisoformat(r["occurred_at"]),
            tier=r["tier"],
            contact=r["contact"],
            body=json.loads(r["body"]) if r["body"] else None,
            agreement_id=r["agreement_id"],
        )

    def purge_expired(self, now: datetime) -> int:
        """Remove records past the retention their agreement gave them; tombstones stay, so a
        replay of the topic cannot bring them back. Returns how many were purged."""
        self._db.execute("begin immediate")
        try:
            expired = [
                row["id"]
                for row in self._db.execute(
                    "select id from records where deleted = 0 and retain_until < ?",
                    (now.astimezone(UTC).isoformat(),),
                )
            ]
            for rowid in expired:
                self._clear(rowid)
            self._db.executemany(
                "update records set deleted = 1, body = null, plate = null, "
                "plate_key = null where id = ?",
                [(i,) for i in expired],
            )
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        return len(expired)

    def count(self) -> int:
        """Records held (pointers included); tombstones are not records."""
        return self._db.execute("select count(*) from records where deleted=0").fetchone()[0]

    def record_search(self, user: str, reason: str, query: dict, result_count: int) -> None:
        """The agency's own log of who searched what, and why; also an outbox that the
        projector publishes to ``audit.search``, so searching works while the broker is down
        and the audit still arrives."""
        if not user.strip() or not reason.strip():
            raise ValueError("a search is logged only with a user and a reason")
        self._db.execute(
            "insert into search_audit (at, user, reason, query_json, result_count) "
            "values (?, ?, ?, ?, ?)",
            (
                datetime.now(UTC).isoformat(),
                user,
                reason,
                json.dumps(query, default=str),
                result_count,
            ),
        )

    def unpublished_searches(self, limit: int = 500) -> list[sqlite3.Row]:
        return self._db.execute(
            "select * from search_audit where published = 0 order by id limit ?", (limit,)
        ).fetchall()

    def mark_published(self, ids: list[int]) -> None:
        self._db.executemany(
            "update search_audit set published = 1 where id = ?", [(i,) for i in ids]
        )

    def close(self) -> None:
        """Every apply() has already committed; closing only releases the file."""
        self._db.close()
