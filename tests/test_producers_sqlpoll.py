"""SQL change polling against SQLite and a real PostgreSQL server: inserts, updates, deletes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from mutualaid.serde import SOURCE_EVENT, AvroSerializer, SchemaStore
from mutualaid.serde import SerializationContext as Ctx
from mutualaid.topics import Kind, source_topic
from producers.checkpoint import CheckpointStore, WatermarkPosition
from producers.contract import Rejected
from producers.runner import Runner
from producers.sqlpoll import SqlMapping, SqlPoller, SqlRowAdapter, load_sql_mapping
from support.brokers import read_topic, source_events
from support.processes import mutualaid_cli
from support.regions import Region

MAPPING = Path("deploy/mappings/sql/rms-reports.yaml")
T0 = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'rms.db'}"
    else:
        libpq_url = request.getfixturevalue("postgres_url")
        url = libpq_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url)
    table = reports_table()
    table.metadata.drop_all(engine)
    table.metadata.create_all(engine)
    yield engine
    table.metadata.drop_all(engine)
    engine.dispose()


def reports_table() -> sa.Table:
    return sa.Table(
        "rms_reports",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("incident_number", sa.String(20)),
        sa.Column("report_date", sa.Date),
        sa.Column("status", sa.String(20)),
        sa.Column("narrative", sa.Text),
        sa.Column("address", sa.String(80)),
        sa.Column("city", sa.String(40)),
        sa.Column("person_role", sa.String(20)),
        sa.Column("last_name", sa.String(40)),
        sa.Column("first_name", sa.String(40)),
        sa.Column("dob", sa.Date),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("sealed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def row(n: int, at: datetime, **changes: object) -> dict:
    return {
        "id": n,
        "incident_number": f"RB-26-{n:06d}",
        "report_date": date(2026, 11, 24),
        "status": "OPEN",
        "narrative": f"report {n}",
        "address": "120 Main St",
        "city": "Riverbend",
        "person_role": "OFFENDER",
        "last_name": "Doe",
        "first_name": "Pat",
        "dob": date(1990, 5, 17),
        "updated_at": at,
    } | changes


def poll(region: Region, engine: sa.Engine) -> None:
    mapping = load_sql_mapping(MAPPING)
    poller = SqlPoller(engine, "rms_reports", mapping, rows=2)  # pages of two rows
    adapter = SqlRowAdapter(Kind.RMS_RECORD, mapping, region.local, list(poller.table.c.keys()))
    Runner(region.settings, region.local, adapter, poller, name="sql", batch_size=2).run()


def published(region: Region, count: int) -> list[dict]:
    return source_events(region.settings.bootstrap_servers, region.local, Kind.RMS_RECORD, count)


def version(at: datetime) -> int:
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@pytest.mark.broker
def test_inserts_updates_and_soft_deletes_are_published_once(
    region: Region, database: sa.Engine
) -> None:
    table = reports_table()
    with database.begin() as conn:
        # Two rows share one timestamp: the primary key orders them, neither is skipped.
        conn.execute(table.insert(), [row(1, T0), row(3, T0), row(2, T0 + timedelta(seconds=1))])
    poll(region, database)
    events = published(region, 3)
    assert sorted((e["envelope"]["record_id"], e["envelope"]["version"]) for e in events) == [
        ("1", version(T0)),
        ("2", version(T0 + timedelta(seconds=1))),
        ("3", version(T0)),
    ]
    first = next(e for e in events if e["envelope"]["record_id"] == "1")
    assert first["envelope"]["op"] == "UPSERT"
    assert first["body"]["incident_number"] == "RB-26-000001"
    assert first["body"]["report_date"] == "2026-11-24"
    assert first["body"]["location"]["address"] == "120 Main St"
    person = first["body"]["persons"][0]
    assert (person["role"], person["last_name"], person["first_name"], person["dob"]) == (
        "OFFENDER",
        "Doe",
        "Pat",
        "1990-05-17",
    )
    saved = CheckpointStore(region.settings.data_dir / "checkpoints").load("sql")
    assert isinstance(saved, WatermarkPosition) and saved.last_id == 2

    later = T0 + timedelta(minutes=5)
    with database.begin() as conn:
        conn.execute(
            table.update().where(table.c.id == 1).values(status="CLEARED", updated_at=later)
        )
        conn.execute(table.update().where(table.c.id == 3).values(sealed=True, updated_at=later))
        conn.execute(table.update().where(table.c.id == 2).values(deleted=True, updated_at=later))
        conn.execute(table.insert(), [row(4, later)])
    poll(region, database)
    events = published(region, 7)
    changes = {
        (e["envelope"]["record_id"], e["envelope"]["op"], tuple(e["envelope"]["labels"]))
        for e in events
        if e["envelope"]["version"] == version(later)
    }
    assert changes == {
        ("1", "UPSERT", ()),
        ("2", "DELETE", ()),
        ("3", "DELETE", ("sealed",)),
        ("4", "UPSERT", ()),
    }
    assert len(events) == 7
    cleared = next(
        e
        for e in events
        if e["envelope"]["record_id"] == "1" and e["body"] and e["body"]["status"] == "CLEARED"
    )
    assert cleared["envelope"]["version"] > first["envelope"]["version"]
    assert all(e["body"] is None for e in events if e["envelope"]["op"] == "DELETE")

    poll(region, database)  # nothing changed since: nothing published
    again = read_topic(
        region.settings.bootstrap_servers,
        source_topic(region.local, Kind.RMS_RECORD),
        lambda r: False,
        timeout=2,
    )
    assert len(again) == 7


@pytest.mark.broker
def test_connect_rms_sql_command(region: Region, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rms.db'}"
    engine = sa.create_engine(url)
    reports_table().metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(reports_table().insert(), [row(7, T0, sealed=False), row(8, T0, sealed=True)])
    engine.dispose()
    args = ["connect", "rms", "--agency", region.local, "--sql", url, "--mapping", str(MAPPING)]
    result = mutualaid_cli(region, *args)
    assert result.returncode == 0, result.stderr
    assert "read 2  published 2  rejected 0" in result.stdout
    events = published(region, 2)
    assert sorted((e["envelope"]["record_id"], e["envelope"]["op"]) for e in events) == [
        ("7", "UPSERT"),
        ("8", "DELETE"),
    ]
    bad = mutualaid_cli(region, *args[:-2], "--table", "no_such_table")
    assert bad.returncode == 2
    assert "cannot poll table 'no_such_table'" in bad.stderr


def test_cad_rows_coerce_to_the_schema_and_bad_values_are_rejected(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'cad.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE calls (id TEXT PRIMARY KEY, incident_number TEXT, priority INTEGER, "
            "status TEXT, status_at TEXT, lat TEXT, updated_at DATETIME)"
        )
        conn.exec_driver_sql(
            "INSERT INTO calls VALUES ('C-1', 'RB-1', 1, 'ONSCENE', '2026-11-24T21:19:47-08:00', "
            "'38.94', '2026-11-25 05:19:47.000000'), ('C-2', 'RB-2', 2, 'RECEIVED', 'soon', "
            "'38.9', '2026-11-25 05:20:00.000000')"
        )
    mapping = SqlMapping(
        columns={
            "incident_number": "incident_number",
            "priority": "priority",
            "status": "status",
            "status_at": "status_at",
            "location.latitude": "lat",
        }
    )
    poller = SqlPoller(engine, "calls", mapping)
    adapter = SqlRowAdapter(Kind.CAD_INCIDENT, mapping, "CA0990100", list(poller.table.c.keys()))
    first, second = poller.items(poller.start(None), lambda: False)
    event = adapter.to_event(first)
    assert event["body"] == {
        "incident_number": "RB-1",
        "priority": "1",  # an integer column into a string field
        "status": "ONSCENE",
        "status_at": datetime(2026, 11, 25, 5, 19, 47, tzinfo=UTC),
        "location": {"latitude": 38.94},
    }
    assert event["envelope"]["version"] == version(datetime(2026, 11, 25, 5, 19, 47, tzinfo=UTC))
    assert event["envelope"]["source_position"].startswith("row id=C-1 updated_at=2026-11-25")
    AvroSerializer(SchemaStore(), SOURCE_EVENT[Kind.CAD_INCIDENT])(event, Ctx("t"))
    with pytest.raises(Rejected, match="column 'status_at' value 'soon' does not fit status_at"):
        adapter.to_event(second)
    assert second.after == WatermarkPosition("2026-11-25T05:20:00", "C-2")
    with pytest.raises(ValueError, match="has no field 'lattitude'"):
        SqlRowAdapter(Kind.CAD_INCIDENT, SqlMapping(columns={"lattitude": "lat"}), "CA0990100", [])
