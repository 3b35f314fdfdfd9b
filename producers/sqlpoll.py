"""SQL change polling: rows of one table changed since the last poll, as CAD or RMS events.

The poller asks, with SQLAlchemy Core, for the rows after the checkpoint in (updated-at, primary
key) order::

    SELECT * FROM t WHERE (updated_at, id) > (:updated_at, :id) ORDER BY updated_at, id LIMIT n

and keeps the last row's (updated-at, id) as its checkpoint, so rows sharing one timestamp are
never skipped nor read twice. Each row becomes one event: record id = the primary key, version =
updated-at in epoch milliseconds, so every change is a higher version. A row whose ``deleted``
flag (or ``sealed``, ``expunged``: any column listed in ``delete_flags``) is true becomes a
DELETE, labelled with the flag's name unless it is ``deleted``.

Labels: ``labels`` names labels every row of the table carries, ``label_columns`` boolean columns
that add a label when true; all are checked against the vocabulary when the mapping loads (a
typo is an error with a did-you-mean, never a label that protects nothing). ``juvenile`` is
derived through ``mutualaid.labels.derive`` from the mapped ``persons[i].dob`` / ``persons[i].age``
columns, at the record's own date (``incident_date``, ``report_date``, ``reported_at`` or
``status_at``, else the row's updated-at).

Values are coerced to the record's Avro types (numbers, ISO dates for date strings, times for
timestamp fields); a value that does not fit is a dead letter naming the column. Times the
database returns without an offset (``timestamp without time zone``, SQLite) are read as UTC:
store UTC, or use ``timestamptz``.

What the table must give (the usual RMS/CAD audit columns): a primary key, and an updated-at
column that the database sets on every insert and update (a trigger or the application) and
that has an index with the key. Limits of polling, stated plainly: a row deleted outright
(``DELETE FROM``) is invisible: use a soft-delete flag, or have a trigger write a flagged row;
and a transaction that commits *after* a later-stamped one may be missed, so stamp
updated-at at commit, or poll a replica of committed rows only. Log-based capture (Debezium
on PostgreSQL's logical decoding) has neither limit and is the way to go past this.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import MetaData, Table, create_engine, select, tuple_
from sqlalchemy.engine import Engine

from mutualaid import labels as vocabulary
from mutualaid.configfile import load_model
from mutualaid.events import new_envelope
from mutualaid.serde import default_store
from mutualaid.topics import Kind, check_ori
from producers.checkpoint import Position, WatermarkPosition
from producers.contract import Rejected, SourceItem
from producers.parsing import epoch_millis

POLL_ROWS = 500
BODY_SCHEMA = {Kind.CAD_INCIDENT: "mutualaid.cad.Incident", Kind.RMS_RECORD: "mutualaid.rms.Record"}


class SqlMapping(BaseModel):
    """Which table and columns hold a record (a YAML file under deploy/mappings/sql/)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("sql", description="the layout's name")
    source_system: str = Field("sql", description="recorded on every event, e.g. rms-sql:acme")
    table: str | None = Field(None, description="table (or view) to poll; --table overrides")
    id_column: str = Field("id", description="the primary key: the record id")
    updated_column: str = Field("updated_at", description="set by the database on every change")
    delete_flags: list[str] = Field(
        ["deleted", "sealed", "expunged"],
        description="boolean columns that turn a row into a DELETE (those present are used)",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="field path -> column, e.g. persons[0].last_name: last_name; unset: every "
        "column named like a top-level field of the record",
    )
    labels: list[str] = Field(
        [], description="labels every row carries, e.g. [juvenile] for a juvenile-court table"
    )
    label_columns: dict[str, str] = Field(
        default_factory=dict,
        description="boolean column -> the label it adds when true, e.g. dv: domestic_violence",
    )

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, names: list[str]) -> list[str]:
        return vocabulary.check_all(names)

    @field_validator("label_columns")
    @classmethod
    def _known_column_labels(cls, columns: dict[str, str]) -> dict[str, str]:
        return {column: vocabulary.check(label) for column, label in columns.items()}

    @field_validator("delete_flags")
    @classmethod
    def _flags_are_labels(cls, flags: list[str]) -> list[str]:
        # A flag other than `deleted` labels the DELETE it causes: it must be a known label.
        for flag in flags:
            if flag != "deleted":
                vocabulary.check(flag)
        return flags


def load_sql_mapping(path: Path) -> SqlMapping:
    return load_model(path, SqlMapping)


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime | date) else str(value)


class SqlPoller:
    """A ``Source`` over one table's changed rows."""

    def __init__(
        self,
        url: str | Engine,
        table: str,
        mapping: SqlMapping,
        *,
        rows: int = POLL_ROWS,
        poll_seconds: float = 1.0,
    ) -> None:
        self.engine = create_engine(url) if isinstance(url, str) else url
        self.table = Table(table, MetaData(), autoload_with=self.engine)
        self.mapping = mapping
        self.rows = rows
        self.poll_seconds = poll_seconds
        for column in (mapping.id_column, mapping.updated_column):
            if column not in self.table.c:
                raise ValueError(
                    f"table {table!r} has no column {column!r}; its columns are "
                    f"{', '.join(self.table.c.keys())}: set id_column/updated_column"
                )

    @property
    def description(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"{url} table {self.table.name}"

    def start(self, checkpoint: Position | None) -> WatermarkPosition:
        if isinstance(checkpoint, WatermarkPosition):
            return checkpoint
        return WatermarkPosition(None, None)

    def _query(self, after: WatermarkPosition):
        updated = self.table.c[self.mapping.updated_column]
        key = self.table.c[self.mapping.id_column]
        # A row without an updated-at cannot be ordered, hence never checkpointed: skip it.
        query = select(self.table).where(updated.is_not(None)).order_by(updated, key)
        query = query.limit(self.rows)
        if after.updated_at is not None:
            mark = datetime.fromisoformat(after.updated_at)
            query = query.where(tuple_(updated, key) > tuple_(mark, after.last_id))
        return query

    def items(self, start: Position, follow: Callable[[], bool]) -> Iterator[SourceItem]:
        assert isinstance(start, WatermarkPosition)
        position, number = start, 0
        while True:
            with self.engine.connect() as conn:
                rows = [dict(r) for r in conn.execute(self._query(position)).mappings()]
            for row in rows:
                number += 1
                key, stamp = row[self.mapping.id_column], row[self.mapping.updated_column]
                position = WatermarkPosition(_iso(stamp), key)
                raw = json.dumps(row, default=_iso, sort_keys=True).encode()
                where = f"row {self.mapping.id_column}={key} {self.mapping.updated_column}="
                yield SourceItem(raw, number, position, where=where + _iso(stamp), record=row)
            if len(rows) == self.rows:
                continue
            if not follow():
                return
            time.sleep(self.poll_seconds)


def _set(body: dict, path: str, value: Any) -> None:
    """'persons[0].last_name' -> body['persons'][0]['last_name'] = value."""
    parts = path.split(".")
    target: Any = body
    for n, part in enumerate(parts):
        name, _, index = part.partition("[")
        last = n == len(parts) - 1
        if index:
            items = target.setdefault(name, [])
            i = int(index.rstrip("]"))
            while len(items) <= i:
                items.append({})
            if last:
                items[i] = value
            target = items[i]
        elif last:
            target[name] = value
        else:
            target = target.setdefault(name, {})


def _people(body: dict[str, Any]) -> list[vocabulary.Person]:
    """The ages the mapped person columns tell (RMS and CAD persons both have dob and age)."""
    out = []
    for person in body.get("persons") or []:
        dob = person.get("dob")
        try:
            born = date.fromisoformat(dob[:10]) if isinstance(dob, str) else None
        except ValueError:
            raise Rejected("bad_value", f"persons[].dob {dob!r} is not a date") from None
        age = person.get("age")
        out.append(vocabulary.Person(age, age, born))
    return out


def _record_date(body: dict[str, Any] | None, stamp: datetime) -> date | datetime:
    """When the record's events happened, for ages: its own date, else the row's change time."""
    for name in ("incident_date", "report_date", "reported_at", "status_at"):
        value = (body or {}).get(name)
        if isinstance(value, datetime):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value[:10])
            except ValueError:
                continue
    return stamp


class SqlRowAdapter:
    """Turns one changed row into one CAD or RMS event, coercing values to the schema's types."""

    def __init__(self, kind: Kind, mapping: SqlMapping, source_ori: str, columns: list[str]):
        self.kind = kind
        self.mapping = mapping
        self.source_system = mapping.source_system
        self.source_ori = check_ori(source_ori)
        self.schema = default_store().get(BODY_SCHEMA[kind])
        fields = {f["name"]: f for f in self.schema["fields"]}
        self.columns = dict(mapping.columns) or {c: c for c in columns if c in fields}
        self.types = {path: self._type_of(path) for path in self.columns}
        self.flags = [c for c in mapping.delete_flags if c in columns]
        absent = [c for c in mapping.label_columns if c not in columns]
        if columns and absent:
            raise ValueError(
                f"label_columns names {absent}, which the table does not have; its columns are "
                f"{', '.join(columns)}"
            )

    def _type_of(self, path: str) -> Any:
        schema: Any = self.schema
        for part in path.split("."):
            name = part.partition("[")[0]
            fields = {f["name"]: f["type"] for f in schema["fields"]}
            if name not in fields:
                raise ValueError(f"{path!r}: {BODY_SCHEMA[self.kind]} has no field {name!r}")
            schema = fields[name]
            if isinstance(schema, list):
                schema = next(t for t in schema if t != "null")
            if isinstance(schema, dict) and schema.get("type") == "array":
                schema = schema["items"]
        return schema

    def _coerce(self, path: str, value: Any) -> Any:
        if value is None:
            return None
        kind = self.types[path]
        logical = kind.get("logicalType") if isinstance(kind, dict) else None
        try:
            if logical == "timestamp-millis":
                stamp = value if isinstance(value, datetime) else datetime.fromisoformat(value)
                return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
            if kind in ("int", "long"):
                return int(value)
            if kind in ("double", "float"):
                return float(value)
            if kind == "string":
                if isinstance(value, datetime):
                    return value.isoformat()
                return value.isoformat() if isinstance(value, date) else str(value)
        except (TypeError, ValueError):
            raise Rejected(
                "bad_value", f"column {self.columns[path]!r} value {value!r} does not fit {path}"
            ) from None
        return value

    def to_event(self, item: SourceItem) -> dict:
        row: dict[str, Any] = item.record
        stamp = row[self.mapping.updated_column]
        if not isinstance(stamp, datetime):
            try:
                stamp = datetime.fromisoformat(str(stamp))
            except ValueError:
                raise Rejected(
                    "bad_timestamp", f"{self.mapping.updated_column} {stamp!r} is not a time"
                ) from None
        stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
        raised = [flag for flag in self.flags if row.get(flag)]
        given = [*self.mapping.labels, *(f for f in raised if f != "deleted")]
        given += [label for column, label in self.mapping.label_columns.items() if row.get(column)]
        body: dict[str, Any] | None = None
        people: list[vocabulary.Person] = []
        if not raised:
            body = {}
            for path, column in self.columns.items():
                _set(body, path, self._coerce(path, row.get(column)))
            people = _people(body)
        labels = vocabulary.derive(given, people=people, at=_record_date(body, stamp))
        envelope = new_envelope(
            source_ori=self.source_ori,
            source_system=self.source_system,
            kind=self.kind,
            record_id=str(row[self.mapping.id_column]),
            version=epoch_millis(stamp),
            occurred_at=stamp,
            op="DELETE" if raised else "UPSERT",
            labels=labels,
            source_position=item.position,
        )
        return {"envelope": envelope, "body": body}
