"""The search index an agency holds: one SQLite file with FTS5, written only by its projector.

Idempotent by construction: a row is keyed by (owner ORI, kind, record id) and only a higher
version replaces it, so replaying a topic changes nothing. A delete leaves a tombstone row with
its version, so an older upsert that arrives late cannot bring the record back.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mutualaid.plates import normalize_plate

# Characters ALPR cameras confuse, folded onto one of each pair.
_MISREADS = str.maketrans({"O": "0", "I": "1", "B": "8", "S": "5", "Z": "2"})

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
    unique (source_ori, kind, record_id)
);
create index if not exists records_plate on records (plate) where deleted = 0;
create index if not exists records_plate_key on records (plate_key) where deleted = 0;
create virtual table if not exists records_text using fts5(text);
create table if not exists search_audit (
    at text not null,
    user text not null,
    reason text not null,
    query_json text not null,
    result_count integer not null
);
"""


def plate_key(plate: str) -> str:
    """A key that survives common misreads: '8O5ZIS' and 'B05215' share one."""
    return normalize_plate(plate).translate(_MISREADS)


@dataclass(frozen=True)
class Hit:
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


class SqliteIndex:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # WAL lets searches read while the projector writes; synchronous=FULL makes a
        # committed batch survive power loss, which offsets are committed on the strength of.
        self._db.row_factory = sqlite3.Row
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")
        self._db.execute("pragma busy_timeout=10000")
        self._db.executescript(SCHEMA)

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
            "select id, version from records where source_ori=? and kind=? and record_id=?", key
        ).fetchone()
        if row is not None and row[1] >= env["version"]:
            return 0
        deleted = env["op"] == "DELETE"
        plate = None if deleted or not body else body.get("plate")
        values = {
            "version": env["version"],
            "deleted": int(deleted),
            "occurred_at": env["occurred_at"].astimezone(UTC).isoformat(),
            "tier": disclosure["tier"],
            "contact": disclosure["contact"],
            "agreement_id": disclosure["agreement_id"],
            "plate": plate,
            "plate_key": plate_key(plate) if plate else None,
            "plate_state": None if deleted or not body else body.get("plate_state"),
            "latitude": None if deleted or not body else body.get("latitude"),
            "longitude": None if deleted or not body else body.get("longitude"),
            "body": None if deleted or body is None else json.dumps(body, default=_json_default),
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
            self._db.execute("delete from records_text where rowid=?", (rowid,))
        if not deleted and body:
            self._db.execute(
                "insert into records_text (rowid, text) values (?, ?)",
                (rowid, " ".join(_strings(body))),
            )
        return 1

    def search_plate(self, plate: str, *, limit: int = 100) -> list[Hit]:
        """Exact matches first, then likely misreads, then wildcard (* ?) matches; newest first."""
        if "*" in plate or "?" in plate:
            pattern = re.sub(r"[^0-9A-Z*?]", "", plate.upper()).replace("*", "%").replace("?", "_")
            rows = self._db.execute(
                "select * from records where deleted=0 and plate like ? "
                "order by occurred_at desc limit ?",
                (pattern, limit),
            ).fetchall()
        else:
            wanted = normalize_plate(plate)
            rows = self._db.execute(
                "select *, case when plate=? then 0 else 1 end as rank from records "
                "where deleted=0 and plate_key=? order by rank, occurred_at desc limit ?",
                (wanted, plate_key(wanted), limit),
            ).fetchall()
        return [self._hit(r) for r in rows]

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

    def count(self) -> int:
        return self._db.execute("select count(*) from records where deleted=0").fetchone()[0]

    def record_search(self, user: str, reason: str, query: dict, result_count: int) -> None:
        """The agency's own log of who searched what, and why."""
        if not user.strip() or not reason.strip():
            raise ValueError("a search is logged only with a user and a reason")
        self._db.execute(
            "insert into search_audit values (?, ?, ?, ?, ?)",
            (datetime.now(UTC).isoformat(), user, reason, json.dumps(query), result_count),
        )

    def close(self) -> None:
        self._db.close()
