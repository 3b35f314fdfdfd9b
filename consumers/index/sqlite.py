"""An agency's search index in one SQLite file with FTS5: the embedded default.

Idempotent by construction: a row is keyed by (owner ORI, kind, record id) and only a higher
version replaces it, so replaying a topic changes nothing. A delete leaves a tombstone row with
its version, so an older upsert that arrives late cannot bring the record back.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumers.index.query import Criteria, Hit, Query, Term, TextQuery, prepare, to_hit
from consumers.index.records import (
    CONTENT_COLUMNS,
    KEY_COLUMNS,
    RECORD_COLUMNS,
    Held,
    IndexedRecord,
    Layout,
    LoggedSearch,
    RecordKey,
    indexed,
    latest,
    new_epoch,
    owners_of,
    search_log_entry,
)
from mutualaid.private import private_dir, private_file

SCHEMA = """
create table if not exists records (
    id integer primary key,
    source_ori text not null,
    kind text not null,
    record_id text not null,
    version integer not null,
    revision integer not null default 0,
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
    sealed text,
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
create index if not exists persons_last_name on persons (last_name);
create virtual table if not exists person_names using fts5(name, tokenize='trigram');
create table if not exists pointer_keys (
    record integer not null references records (id),
    key text not null
);
create index if not exists pointer_keys_key on pointer_keys (key);
create index if not exists pointer_keys_record on pointer_keys (record);
create table if not exists search_audit (
    id integer primary key,
    at text not null,
    user text not null,
    reason text not null,
    query_json text not null,
    result_count integer not null,
    published integer not null default 0,
    result_owners text not null default '[]'
);
create table if not exists layout (
    id integer primary key check (id = 1),
    epoch text not null,
    keeps_sealed integer not null
);
"""

FORMAT_VERSION = 6
_INSERT = (
    f"insert into records ({', '.join(RECORD_COLUMNS)}) "
    f"values ({', '.join('?' * len(RECORD_COLUMNS))})"
)
_UPDATE = (
    "update records set "
    + ", ".join(f"{c}=?" for c in RECORD_COLUMNS[len(KEY_COLUMNS) :])
    + " where id=?"
)


def _iso(value: datetime | None) -> str | None:
    """Times are ISO 8601 text in UTC, so that text order is time order."""
    return value.astimezone(UTC).isoformat() if value is not None else None


def _stored(record: IndexedRecord) -> list[Any]:
    """The record's column values as SQLite keeps them."""
    values = record.columns() | {
        "deleted": int(record.deleted),
        "occurred_at": _iso(record.occurred_at),
        "retain_until": _iso(record.retain_until),
    }
    return list(values.values())


def _set_aside_old_format(path: Path) -> None:
    """An index in an older format is renamed (kept: it holds search audit rows) and rebuilt.
    Version 0 is a file another process is creating this moment, so it is left alone."""
    if not path.exists():
        return
    with closing(sqlite3.connect(path)) as db:
        version = db.execute("pragma user_version").fetchone()[0]
    if version not in (0, FORMAT_VERSION):
        kept = path.rename(path.with_name(f"{path.name}.format{version}"))
        private_file(kept)  # an older version may have left it readable by others
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))


def _fts5(text: TextQuery) -> str:
    """A parsed text query in FTS5 syntax; every word quoted, so none is read as an operator."""

    def term(t: Term) -> str:
        return '"' + " ".join(t.words) + '"' + (" *" if t.prefix else "")

    return " OR ".join("(" + " AND ".join(term(t) for t in terms) + ")" for terms in text)


class SqliteIndex:
    """One agency's index, one SQLite file. A single projector writes it; searches read it
    concurrently (WAL). Tombstones are rows with deleted=1 and no body, plate or text."""

    def __init__(self, path: Path, hash_key: bytes | None = None) -> None:
        self._hash_key = hash_key
        # It holds partners' records, decrypted, and the agency's search log: owner only.
        private_dir(path.parent)
        _set_aside_old_format(path)
        private_file(path)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # WAL lets searches read while the projector writes. synchronous=FULL, not NORMAL:
        # under NORMAL+WAL a commit survives a crash of the process but not a power loss, and
        # the projector commits its Kafka offsets as soon as apply() returns, so a batch lost
        # that way would never be replayed. FULL costs one fsync of the WAL per batch.
        self._db.row_factory = sqlite3.Row
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")
        self._db.execute("pragma busy_timeout=10000")
        # One transaction, so another process opening the file meanwhile (a search while the
        # projector starts) sees no schema and version 0, or all of it and FORMAT_VERSION.
        self._db.executescript(
            f"begin immediate; {SCHEMA} pragma user_version={FORMAT_VERSION}; "
            "insert or ignore into layout (id, epoch, keeps_sealed) "
            f"values (1, '{new_epoch()}', 0); commit;"
        )
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Columns added since an index was made, added to it in place: the search log is the
        agency's own record and must survive, so this is no reason for a new format."""
        self._db.execute("begin immediate")
        try:
            columns = {r["name"] for r in self._db.execute("pragma table_info(search_audit)")}
            if "result_owners" not in columns:
                self._db.execute(
                    "alter table search_audit add column result_owners text not null default '[]'"
                )
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise

    def layout(self) -> Layout:
        row = self._db.execute("select epoch, keeps_sealed from layout").fetchone()
        return Layout(row["epoch"], bool(row["keeps_sealed"]))

    def reset(self, keeps_sealed: bool) -> Layout:
        """Forget every record (the search log stays) under a new epoch. Deleted pages are
        overwritten (secure_delete), so no opened field lingers in the file."""
        layout = Layout(new_epoch(), keeps_sealed)
        self._db.execute("pragma secure_delete=on")
        self._db.execute("begin immediate")
        try:
            for table in ("records_text", "person_names", "persons", "pointer_keys", "records"):
                self._db.execute(f"delete from {table}")
            self._db.execute(
                "update layout set epoch = ?, keeps_sealed = ?",
                (layout.epoch, int(layout.keeps_sealed)),
            )
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        self._db.execute("pragma wal_checkpoint(truncate)")
        return layout

    def apply(self, events: Sequence[dict]) -> int:
        """Apply a batch of shared events in one transaction; returns how many changed it."""
        if not events:
            return 0
        records = [indexed(e) for e in events]
        self._db.execute("begin immediate")
        try:
            held = self._held({r.key for r in records})
            changed, winners = latest(records, held)
            for record in winners:
                self._write(record, held.get(record.key))
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        return changed

    def _held(self, keys: Iterable[RecordKey]) -> dict[RecordKey, Held]:
        held = {}
        for key in keys:
            row = self._db.execute(
                "select id, version, revision, deleted from records "
                "where source_ori=? and kind=? and record_id=?",
                key,
            ).fetchone()
            if row is not None:
                held[key] = Held(row["id"], row["version"], row["revision"], bool(row["deleted"]))
        return held

    def _write(self, record: IndexedRecord, held: Held | None) -> None:
        if held is None:
            rowid = self._db.execute(_INSERT, _stored(record)).lastrowid
        else:
            rowid = held.row_id
            self._db.execute(_UPDATE, [*_stored(record)[len(KEY_COLUMNS) :], rowid])
            self._clear(rowid)
        if record.text:
            self._db.execute(
                "insert into records_text (rowid, text) values (?, ?)", (rowid, record.text)
            )
        self._db.executemany(
            "insert into pointer_keys (record, key) values (?, ?)",
            [(rowid, key) for key in record.match_keys],
        )
        for person in record.persons:
            person_id = self._db.execute(
                "insert into persons (record, last_name, first_name, dob) values (?, ?, ?, ?)",
                (rowid, person.last_name, person.first_name, person.dob),
            ).lastrowid
            if person.name:
                self._db.execute(
                    "insert into person_names (rowid, name) values (?, ?)",
                    (person_id, person.name),
                )

    def _clear(self, rowid: int) -> None:
        """Drop a record's text and person entries (before an update, a delete or a purge)."""
        self._db.execute("delete from records_text where rowid=?", (rowid,))
        for (person,) in self._db.execute("select id from persons where record=?", (rowid,)):
            self._db.execute("delete from person_names where rowid=?", (person,))
        self._db.execute("delete from persons where record=?", (rowid,))
        self._db.execute("delete from pointer_keys where record=?", (rowid,))

    def search(self, criteria: Criteria) -> list[Hit]:
        """Records matching every criterion: exact plates first, then misreads; newest first."""
        q = prepare(criteria, self._hash_key)
        sql, args = self._select(q)
        hits = []
        for row in self._db.execute(sql, args):
            # A pointer is here by its match keys, exact: no distance or name left to test.
            if (
                q.filters_rows
                and row["tier"] != "POINTER"
                and not q.keeps(row["latitude"], row["longitude"], self._people(row["id"]))
            ):
                continue
            hits.append(to_hit(row))
            if len(hits) >= q.limit:
                break
        return hits

    def _select(self, q: Query) -> tuple[str, list[Any]]:
        # What the record must contain; a pointer instead matches by its keys (see below).
        where, args, rank, rank_args = [], [], "", []
        if q.plate_pattern:
            # GLOB, not LIKE: it is case-sensitive (plates are stored upper case), so SQLite can
            # answer a prefix pattern such as 7AB* from the plate index instead of a scan.
            where.append("r.plate glob ?")
            args.append(q.plate_pattern)
        elif q.plate:
            where.append(f"r.plate_key in ({_marks(q.plate_keys)})")
            args += q.plate_keys
            rank, rank_args = "case when r.plate = ? then 0 else 1 end, ", [q.plate]
        if q.incident_numbers:
            where.append(f"r.incident_number in ({_marks(q.incident_numbers)})")
            args += q.incident_numbers
        if q.text:
            where.append("r.id in (select rowid from records_text where records_text match ?)")
            args.append(_fts5(q.text))
        if q.dobs:
            where.append(f"r.id in (select record from persons where dob in ({_marks(q.dobs)}))")
            args += q.dobs
        if q.name_grams:
            similar = (
                "r.id in (select p.record from persons p join person_names n "
                "on n.rowid = p.id where person_names match ?)"
            )
            args.append(" OR ".join('"' + g.replace('"', '""') + '"' for g in q.name_grams))
            if q.name_hashes:
                hashed = q.name_hashes.surname
                similar += " or r.id in (select record from persons where last_name in "
                similar += f"({_marks(hashed)}))"
                args += hashed
            where.append(f"({similar})")
        if q.box:
            where.append("r.latitude between ? and ? and r.longitude between ? and ?")
            args += list(q.box)
        content, content_args = where, args
        where, args = [], []
        for column, op, value in (("occurred_at", ">=", q.since), ("occurred_at", "<=", q.until)):
            if value is not None:
                where.append(f"r.{column} {op} ?")
                args.append(_iso(value))
        for column, value in (("source_ori", q.source_ori), ("kind", q.kind)):
            if value:
                where.append(f"r.{column} = ?")
                args.append(value)
        found = (
            f"select r.* from records r where {' and '.join(['r.deleted = 0', *content, *where])}"
        )
        found_args = [*content_args, *args]
        if q.pointer_keys:
            # Pointers, by their match keys: a second select, so that each can use its index.
            keys = [
                f"r.id in (select record from pointer_keys where key in ({_marks(group)}))"
                for group in q.pointer_keys
            ]
            pointed = " and ".join(["r.deleted = 0", "r.tier = 'POINTER'", *keys, *where])
            found = f"select * from ({found} union all select r.* from records r where {pointed}) r"
            found_args += [*(key for group in q.pointer_keys for key in group), *args]
        limit = "" if q.filters_rows else f" limit {q.limit:d}"
        sql = f"{found} order by {rank}r.occurred_at desc, r.source_ori, r.kind, r.record_id{limit}"
        args = found_args
        return sql, [*args, *rank_args]

    def _people(self, rowid: int) -> list[tuple[str | None, str | None]]:
        rows = self._db.execute(
            "select first_name, last_name from persons where record=?", (rowid,)
        )
        return [(first, last) for first, last in rows]

    def purge_expired(self, now: datetime) -> int:
        """Remove records past the retention their agreement gave them; tombstones stay, so a
        replay of the topic cannot bring them back. Returns how many were purged."""
        self._db.execute("begin immediate")
        try:
            expired = [
                row["id"]
                for row in self._db.execute(
                    "select id from records where deleted = 0 and retain_until < ?", (_iso(now),)
                )
            ]
            for rowid in expired:
                self._clear(rowid)
            cleared = ", ".join(f"{c} = null" for c in CONTENT_COLUMNS)
            self._db.executemany(
                f"update records set deleted = 1, {cleared} where id = ?", [(i,) for i in expired]
            )
            self._db.execute("commit")
        except BaseException:
            self._db.execute("rollback")
            raise
        return len(expired)

    def count(self) -> int:
        """Records held (pointers included); tombstones are not records."""
        return self._db.execute("select count(*) from records where deleted=0").fetchone()[0]

    def record_search(
        self,
        user: str,
        reason: str,
        query: dict,
        result_count: int,
        result_owners: Iterable[str] = (),
    ) -> None:
        """The agency's own log of who searched what, and why, and whose records it found;
        also an outbox that the projector publishes to ``audit.search``, so searching works
        while the broker is down and the audit still arrives."""
        self._db.execute(
            "insert into search_audit (at, user, reason, query_json, result_count, "
            "result_owners) values (?, ?, ?, ?, ?, ?)",
            (
                _iso(datetime.now(UTC)),
                *search_log_entry(user, reason, query),
                result_count,
                json.dumps(owners_of(result_owners)),
            ),
        )

    def unpublished_searches(self, limit: int = 500) -> list[LoggedSearch]:
        rows = self._db.execute(
            "select id, at, user, reason, query_json, result_count, result_owners "
            "from search_audit where published = 0 order by id limit ?",
            (limit,),
        )
        return [
            LoggedSearch(
                **dict(row)
                | {
                    "at": datetime.fromisoformat(row["at"]),
                    "result_owners": tuple(json.loads(row["result_owners"])),
                }
            )
            for row in rows
        ]

    def mark_published(self, ids: list[int]) -> None:
        self._db.executemany(
            "update search_audit set published = 1 where id = ?", [(i,) for i in ids]
        )

    def close(self) -> None:
        """Every apply() has already committed; closing only releases the file."""
        self._db.close()
