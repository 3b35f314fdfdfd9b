"""An agency's search index in its own schema on a PostgreSQL server (psycopg 3).

Full text is a ``tsvector`` of the same words SQLite's FTS5 indexes; person names and plate
patterns are matched through ``pg_trgm`` GIN indexes. Version ordering, tombstones, the
search rules and result shaping are the shared ones (consumers.index.records and
consumers.index.query), so this backend answers exactly as the SQLite one does.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from consumers.index.base import IndexUnavailable
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
from mutualaid.text import words

# GIN indexes without a pending list (fastupdate off): the projector writes as it goes, and
# a pending list would make every search scan it, or the planner give up the index for a scan.
SCHEMA = """
create table if not exists records (
    id bigint generated always as identity primary key,
    source_ori text not null,
    kind text not null,
    record_id text not null,
    version bigint not null,
    revision bigint not null default 0,
    deleted boolean not null default false,
    occurred_at timestamptz not null,
    tier text not null,
    contact text,
    agreement_id text not null,
    plate text,
    plate_key text,
    plate_state text,
    latitude double precision,
    longitude double precision,
    body json,
    incident_number text,
    retain_until timestamptz,
    sealed text,
    words tsvector,
    unique (source_ori, kind, record_id)
);
alter table records add column if not exists sealed text;  -- schemas made before it was
alter table records add column if not exists revision bigint not null default 0;
create index if not exists records_plate on records using gin (plate gin_trgm_ops)
    with (fastupdate = off) where not deleted;
create index if not exists records_plate_key on records (plate_key) where not deleted;
create index if not exists records_incident on records (incident_number) where not deleted;
create index if not exists records_time on records (occurred_at) where not deleted;
create index if not exists records_retention on records (retain_until) where not deleted;
create index if not exists records_words on records using gin (words)
    with (fastupdate = off) where not deleted;
create table if not exists persons (
    record bigint not null references records (id),
    first_name text,
    last_name text,
    dob text,
    name text
);
create index if not exists persons_record on persons (record);
create index if not exists persons_dob on persons (dob);
create index if not exists persons_last_name on persons (last_name);
create index if not exists persons_name on persons using gin (name gin_trgm_ops)
    with (fastupdate = off);
create table if not exists pointer_keys (
    record bigint not null references records (id),
    key text not null
);
create index if not exists pointer_keys_key on pointer_keys (key);
create index if not exists pointer_keys_record on pointer_keys (record);
create table if not exists search_audit (
    id bigint generated always as identity primary key,
    at timestamptz not null,
    "user" text not null,
    reason text not null,
    query_json text not null,
    result_count integer not null,
    published boolean not null default false,
    result_owners text[] not null default '{}'
);
-- schemas made before it was; their search log stays (no new format for a new column)
alter table search_audit add column if not exists result_owners text[] not null default '{}';
create index if not exists search_audit_outbox on search_audit (id) where not published;
create table if not exists layout (
    id integer primary key check (id = 1),
    epoch text not null,
    keeps_sealed boolean not null
);
"""

# The array type each records column travels in, for one multi-row upsert per batch.
_ARRAY_TYPES = {
    "version": "bigint[]",
    "revision": "bigint[]",
    "deleted": "boolean[]",
    "occurred_at": "timestamptz[]",
    "latitude": "float8[]",
    "longitude": "float8[]",
    "body": "json[]",
    "retain_until": "timestamptz[]",
}
_UPSERT = (
    f"insert into records ({', '.join(RECORD_COLUMNS)}, words) "
    f"select {', '.join(f'c.{c}' for c in RECORD_COLUMNS)}, to_tsvector('simple', c.words) "
    "from unnest("
    + ", ".join(f"%s::{_ARRAY_TYPES.get(c, 'text[]')}" for c in RECORD_COLUMNS)
    + ", %s::text[]) "
    + f"as c({', '.join(RECORD_COLUMNS)}, words) "
    "on conflict (source_ori, kind, record_id) do update set "
    + ", ".join(f"{c} = excluded.{c}" for c in (*RECORD_COLUMNS, "words") if c not in KEY_COLUMNS)
    + " returning id, source_ori, kind, record_id"
)
# Bodies are read back as the JSON text they were written as, key order included.
_COLUMNS = ", ".join("r.body::text as body" if c == "body" else f"r.{c}" for c in RECORD_COLUMNS)
_SETUP_LOCK = zlib.crc32(b"mutualaid index setup")


def _tsquery(text: TextQuery) -> str:
    """A parsed text query for to_tsquery: words are [^\\W_]+, so quoting them is safe."""

    def term(t: Term) -> str:
        lexemes = [f"'{w}'" for w in t.words]
        if t.prefix:
            lexemes[-1] += ":*"
        return " <-> ".join(lexemes)

    return " | ".join("(" + " & ".join(term(t) for t in terms) + ")" for terms in text)


def _like(pattern: str) -> str:
    """'7AB*' -> '7AB%'; plate patterns hold only A-Z, 0-9, * and ?."""
    return pattern.replace("*", "%").replace("?", "_")


def _contains(gram: str) -> str:
    """An ILIKE pattern for names containing ``gram``, with LIKE's own characters escaped."""
    return "%" + gram.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _where(url: str) -> str:
    """The server an URL names, without its password, for error messages."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparseable index_url)"
    host = parts.get("host") or "localhost"
    return f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or parts.get('user') or ''}"


class PostgresIndex:
    """One agency's index: one schema (named by ``schema``) on a PostgreSQL server.

    One connection, in autocommit mode: each apply() and purge is its own transaction, and
    commits with synchronous_commit on, so a batch is durable before the projector commits
    its offsets. A transaction-scoped advisory lock per schema keeps a second projector of the
    same agency (a rebalance overlap) from interleaving with the first, as SQLite's write
    lock does.
    """

    def __init__(self, url: str, schema: str, hash_key: bytes | None = None) -> None:
        self.schema = schema
        self._hash_key = hash_key
        self._lock = zlib.crc32(f"mutualaid index {schema}".encode())
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise IndexUnavailable(
                f"cannot connect to the PostgreSQL index at {_where(url)}: "
                f"{str(exc).strip()}. Check index_url and that the server is running"
            ) from None
        try:
            self._db.execute("set synchronous_commit to on")
            self._prepare_schema()
        except psycopg.Error as exc:
            self._db.close()
            raise IndexUnavailable(
                f"cannot set up schema {schema} on {_where(url)}: {str(exc).strip()}. "
                "The user needs CREATE on the database, and pg_trgm installed or installable"
            ) from None

    def _prepare_schema(self) -> None:
        """Point the search path at this agency's schema (so no statement names it), creating
        it on first use; pg_trgm once per database, shared by every agency's schema."""
        with self._db.transaction():
            if self._use_schema() and self._current():
                return
            # One lock for every agency: creating pg_trgm twice at once fails in the second.
            self._db.execute("select pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
            # And this schema's, taken by every transaction that writes its tables: SCHEMA's
            # CREATE INDEX takes the tables' locks in another order than a projector's TRUNCATE
            # or batch, and the two deadlocked (a search opening the index as its projector
            # started, tests/test_sealed_index.py in CI).
            self._db.execute("select pg_advisory_xact_lock(%s)", (self._lock,))
            if self._use_schema() and self._current():
                return  # made while this one waited
            self._db.execute("reset search_path")  # pg_trgm goes where the server's default says
            self._db.execute("create extension if not exists pg_trgm")
            self._db.execute(
                sql.SQL("create schema if not exists {}").format(sql.Identifier(self.schema))
            )
            self._use_schema()
            self._db.execute(SCHEMA)
            self._db.execute(
                "insert into layout (id, epoch, keeps_sealed) values (1, %s, false) "
                "on conflict do nothing",
                (new_epoch(),),
            )

    def _use_schema(self) -> bool:
        """Set the search path; whether the schema is there already (then nothing is created,
        so a search needs no rights to create anything)."""
        trgm = self._db.execute(
            "select extnamespace::regnamespace::text from pg_extension where extname = 'pg_trgm'"
        ).fetchone()
        path = [sql.Identifier(self.schema)] + ([sql.Identifier(trgm[0])] if trgm else [])
        self._db.execute(sql.SQL("set search_path to {}").format(sql.SQL(", ").join(path)))
        # Ready means made, and with every column added since: else SCHEMA runs (again) and
        # adds what is missing, once.
        ready = self._db.execute(
            "select to_regclass('layout') is not null and exists (select 1 from pg_attribute "
            "where attrelid = to_regclass('search_audit') and attname = 'result_owners' "
            "and not attisdropped)"
        ).fetchone()[0]
        return trgm is not None and ready

    def _current(self) -> bool:
        """Whether the schema has everything this version writes (else SCHEMA adds it)."""
        revision = self._db.execute(
            "select 1 from information_schema.columns where table_schema = %s "
            "and table_name = 'records' and column_name = 'revision'",
            (self.schema,),
        ).fetchone()
        keys = self._db.execute("select to_regclass('pointer_keys')").fetchone()[0]
        return revision is not None and keys is not None

    def layout(self) -> Layout:
        epoch, keeps_sealed = self._db.execute("select epoch, keeps_sealed from layout").fetchone()
        return Layout(epoch, keeps_sealed)

    def reset(self, keeps_sealed: bool) -> Layout:
        """Forget every record (the search log stays) under a new epoch; TRUNCATE gives the
        tables new files, so no opened field lingers in the old ones."""
        layout = Layout(new_epoch(), keeps_sealed)
        with self._db.transaction():
            self._db.execute("select pg_advisory_xact_lock(%s)", (self._lock,))
            # records first: TRUNCATE locks the tables in the order named, and every search
            # locks records before persons or pointer_keys (its outer FROM comes first). In
            # another order a search holding records and a reset holding persons each waited
            # for the other: the server aborted one, and a projector starting beside a search
            # exited (tests/test_sealed_index.py in CI).
            self._db.execute("truncate records, persons, pointer_keys")
            self._db.execute(
                "update layout set epoch = %s, keeps_sealed = %s",
                (layout.epoch, layout.keeps_sealed),
            )
        return layout

    def apply(self, events: Sequence[dict]) -> int:
        """Apply a batch of shared events in one transaction; returns how many changed it."""
        if not events:
            return 0
        records = [indexed(e) for e in events]
        with self._db.transaction():
            self._db.execute("select pg_advisory_xact_lock(%s)", (self._lock,))
            held = self._held({r.key for r in records})
            changed, winners = latest(records, held)
            if winners:
                self._write(winners, held)
        return changed

    def _held(self, keys: Iterable[RecordKey]) -> dict[RecordKey, Held]:
        owners, kinds, ids = zip(*keys, strict=True)
        rows = self._db.execute(
            "select r.source_ori, r.kind, r.record_id, r.id, r.version, r.revision, r.deleted "
            "from records r join unnest(%s::text[], %s::text[], %s::text[]) as k(o, t, i) "
            "on r.source_ori = k.o and r.kind = k.t and r.record_id = k.i",
            (list(owners), list(kinds), list(ids)),
        )
        return {(o, t, i): Held(row_id, v, r, d) for o, t, i, row_id, v, r, d in rows}

    def _write(self, winners: list[IndexedRecord], held: dict[RecordKey, Held]) -> None:
        """One upsert for the batch's winners, then their people afresh."""
        replaced = [held[r.key].row_id for r in winners if r.key in held]
        if replaced:
            self._db.execute("delete from persons where record = any(%s)", (replaced,))
            self._db.execute("delete from pointer_keys where record = any(%s)", (replaced,))
        columns = [[r.columns()[c] for r in winners] for c in RECORD_COLUMNS]
        text = [" ".join(words(r.text)) if r.text else None for r in winners]
        rows = self._db.execute(_UPSERT, (*columns, text)).fetchall()
        row_ids = {(o, t, i): row_id for row_id, o, t, i in rows}
        keys = [(row_ids[r.key], key) for r in winners for key in r.match_keys]
        if keys:
            self._db.execute(
                "insert into pointer_keys (record, key) select * from unnest(%s::bigint[], "
                "%s::text[])",
                ([row_id for row_id, _ in keys], [key for _, key in keys]),
            )
        people = [(row_ids[r.key], p) for r in winners for p in r.persons]
        if people:
            self._db.execute(
                "insert into persons (record, first_name, last_name, dob, name) "
                "select * from unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], "
                "%s::text[])",
                (
                    [row_id for row_id, _ in people],
                    [p.first_name for _, p in people],
                    [p.last_name for _, p in people],
                    [p.dob for _, p in people],
                    [p.name or None for _, p in people],
                ),
            )

    def search(self, criteria: Criteria) -> list[Hit]:
        """Records matching every criterion: exact plates first, then misreads; newest first."""
        q = prepare(criteria, self._hash_key)
        statement, args = self._select(q)
        if not q.filters_rows:
            return [to_hit(row) for row in self._rows(statement, args)]
        hits = []
        # A server-side cursor: rows that fail the distance or name test are skipped, and the
        # search stops reading as soon as it has its limit.
        with self._db.transaction(), self._db.cursor(name="search", row_factory=dict_row) as cur:
            cur.execute(statement, args)
            for row in cur:
                # A pointer is here by its match keys, exact: no distance or name to test.
                if row["tier"] == "POINTER" or q.keeps(
                    row["latitude"], row["longitude"], row.get("people") or []
                ):
                    hits.append(to_hit(row))
                    if len(hits) >= q.limit:
                        break
        return hits

    def _rows(self, statement: str, args: list[Any]) -> list[dict]:
        with self._db.cursor(row_factory=dict_row) as cur:
            return cur.execute(statement, args).fetchall()

    def _select(self, q: Query) -> tuple[str, list[Any]]:
        # What the record must contain; a pointer instead matches by its keys (see below).
        where: list[str] = []
        args: list[Any] = []
        rank, rank_args = "", []
        if q.plate_pattern:
            where.append("r.plate like %s")
            args.append(_like(q.plate_pattern))
        elif q.plate:
            where.append("r.plate_key = any(%s)")
            args.append(list(q.plate_keys))
            rank, rank_args = "r.plate <> %s, ", [q.plate]
        if q.incident_numbers:
            where.append("r.incident_number = any(%s)")
            args.append(list(q.incident_numbers))
        if q.text:
            where.append("r.words @@ to_tsquery('simple', %s)")
            args.append(_tsquery(q.text))
        if q.dobs:
            where.append("r.id in (select record from persons where dob = any(%s))")
            args.append(list(q.dobs))
        if q.name_grams:
            grams = " or ".join("name ilike %s" for _ in q.name_grams)
            args += [_contains(g) for g in q.name_grams]
            if q.name_hashes:
                grams += " or last_name = any(%s)"
                args.append(list(q.name_hashes.surname))
            where.append(f"r.id in (select record from persons where {grams})")
        if q.box:
            where.append("r.latitude between %s and %s and r.longitude between %s and %s")
            args += list(q.box)
        content, content_args = where, args
        where, args = [], []
        if q.since is not None:
            where.append("r.occurred_at >= %s")
            args.append(q.since)
        if q.until is not None:
            where.append("r.occurred_at <= %s")
            args.append(q.until)
        for column, value in (("source_ori", q.source_ori), ("kind", q.kind)):
            if value:
                where.append(f"r.{column} = %s")
                args.append(value)
        found = (
            f"select r.* from records r where {' and '.join(['not r.deleted', *content, *where])}"
        )
        found_args = [*content_args, *args]
        if q.pointer_keys:
            # Pointers, by their match keys: a second select, so that each can use its index.
            keys = [
                "r.id in (select record from pointer_keys where key = any(%s))"
                for _ in q.pointer_keys
            ]
            pointed = " and ".join(["not r.deleted", "r.tier = 'POINTER'", *keys, *where])
            found = f"{found} union all select r.* from records r where {pointed}"
            found_args += [*(list(group) for group in q.pointer_keys), *args]
        people = (
            ", (select json_agg(json_build_array(p.first_name, p.last_name)) "
            "from persons p where p.record = r.id) as people"
            if q.name
            else ""
        )
        limit = "" if q.filters_rows else f" limit {q.limit:d}"
        statement = (
            f"select r.id, {_COLUMNS}{people} from ({found}) r "
            f"order by {rank}r.occurred_at desc, "
            f'r.source_ori collate "C", r.kind collate "C", r.record_id collate "C"{limit}'
        )
        args = found_args
        return statement, [*args, *rank_args]

    def purge_expired(self, now: datetime) -> int:
        """Remove records past the retention their agreement gave them; tombstones stay, so a
        replay of the topic cannot bring them back. Returns how many were purged."""
        cleared = ", ".join(f"{c} = null" for c in (*CONTENT_COLUMNS, "words"))
        with self._db.transaction():
            self._db.execute("select pg_advisory_xact_lock(%s)", (self._lock,))
            expired = [
                row_id
                for (row_id,) in self._db.execute(
                    f"update records set deleted = true, {cleared} "
                    "where not deleted and retain_until < %s returning id",
                    (now.astimezone(UTC),),
                )
            ]
            if expired:
                self._db.execute("delete from persons where record = any(%s)", (expired,))
                self._db.execute("delete from pointer_keys where record = any(%s)", (expired,))
        return len(expired)

    def count(self) -> int:
        """Records held (pointers included); tombstones are not records."""
        return self._db.execute("select count(*) from records where not deleted").fetchone()[0]

    def record_search(
        self,
        user: str,
        reason: str,
        query: dict,
        result_count: int,
        result_owners: Iterable[str] = (),
    ) -> None:
        """The agency's own log of who searched what, and why, and whose records it found;
        also the outbox the projector publishes to ``audit.search``."""
        self._db.execute(
            'insert into search_audit (at, "user", reason, query_json, result_count, '
            "result_owners) values (%s, %s, %s, %s, %s, %s)",
            (
                datetime.now(UTC),
                *search_log_entry(user, reason, query),
                result_count,
                list(owners_of(result_owners)),
            ),
        )

    def unpublished_searches(self, limit: int = 500) -> list[LoggedSearch]:
        with self._db.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                'select id, at, "user", reason, query_json, result_count, result_owners '
                "from search_audit where not published order by id limit %s",
                (limit,),
            ).fetchall()
        return [
            LoggedSearch(**row | {"result_owners": tuple(row["result_owners"])}) for row in rows
        ]

    def mark_published(self, ids: list[int]) -> None:
        self._db.execute("update search_audit set published = true where id = any(%s)", (ids,))

    def close(self) -> None:
        """Every apply() has already committed; closing only releases the connection."""
        self._db.close()
