"""Labels from the SQL and ALPR connectors: juvenile derived through mutualaid.labels.derive at
the record's date, and labels named in mappings checked against the vocabulary at start-up."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from mutualaid.configfile import ConfigError
from mutualaid.topics import Kind
from producers.alpr import load_mapping
from producers.sqlpoll import SqlMapping, SqlPoller, SqlRowAdapter, load_sql_mapping

MAPPING = Path("deploy/mappings/sql/rms-reports.yaml")
ORI = "CA0990100"


def arrests(tmp_path: Path, *rows: tuple) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'rms.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE rms_reports (id INTEGER PRIMARY KEY, incident_number TEXT, "
            "report_date TEXT, person_role TEXT, last_name TEXT, first_name TEXT, dob TEXT, "
            "dv INTEGER DEFAULT 0, deleted INTEGER DEFAULT 0, sealed INTEGER DEFAULT 0, "
            "updated_at DATETIME)"
        )
        for n, (report_date, dob, dv) in enumerate(rows, 1):
            conn.exec_driver_sql(
                "INSERT INTO rms_reports (id, incident_number, report_date, person_role, "
                "last_name, first_name, dob, dv, updated_at) VALUES (?, ?, ?, 'ARRESTEE', 'Doe', "
                "'Pat', ?, ?, ?)",
                (n, f"RB-{n}", report_date, dob, dv, f"2026-11-25 05:{n:02d}:00.000000"),
            )
    return engine


def events(engine: sa.Engine, mapping: SqlMapping) -> list[dict]:
    poller = SqlPoller(engine, "rms_reports", mapping)
    adapter = SqlRowAdapter(Kind.RMS_RECORD, mapping, ORI, list(poller.table.c.keys()))
    return [adapter.to_event(i) for i in poller.items(poller.start(None), lambda: False)]


def test_a_juvenile_arrestee_is_labelled_from_the_mapped_birth_date(tmp_path: Path) -> None:
    engine = arrests(
        tmp_path,
        ("2026-11-24", "2012-03-01", 0),  # 14 at the arrest
        ("2026-11-24", "1990-05-17", 0),  # an adult
        ("2029-06-01", "2011-06-02", 0),  # 17 on the report date, 18 the day after
        ("2030-06-01", "2012-03-01", 0),  # 18 by then: an adult, whatever today is
    )
    labels = [e["envelope"]["labels"] for e in events(engine, load_sql_mapping(MAPPING))]
    assert labels == [["juvenile"], [], ["juvenile"], []]


def test_mapping_labels_and_label_columns_are_applied(tmp_path: Path) -> None:
    engine = arrests(tmp_path, ("2026-11-24", "1990-05-17", 1), ("2026-11-24", "1990-05-17", 0))
    base = load_sql_mapping(MAPPING)
    mapping = base.model_copy(
        update={"labels": ["investigation_open"], "label_columns": {"dv": "domestic_violence"}}
    )
    labels = [e["envelope"]["labels"] for e in events(engine, mapping)]
    assert labels == [["domestic_violence", "investigation_open"], ["investigation_open"]]


def test_a_label_column_the_table_lacks_is_refused_at_start_up(tmp_path: Path) -> None:
    engine = arrests(tmp_path, ("2026-11-24", "1990-05-17", 0))
    mapping = SqlMapping(label_columns={"dv_flag": "domestic_violence"})
    poller = SqlPoller(engine, "rms_reports", mapping)
    with pytest.raises(ValueError, match=r"label_columns names \['dv_flag'\]"):
        SqlRowAdapter(Kind.RMS_RECORD, mapping, ORI, list(poller.table.c.keys()))


@pytest.mark.parametrize(
    ("yaml_tail", "field", "hint"),
    [
        ("labels: [juvenil]\n", "labels", "did you mean 'juvenile'?"),
        ("label_columns: {dv: domestic-violense}\n", "label_columns", "'domestic_violence'"),
        ("delete_flags: [deleted, seald]\n", "delete_flags", "did you mean 'sealed'?"),
    ],
)
def test_unknown_labels_in_a_sql_mapping_are_errors_with_file_field_and_fix(
    tmp_path: Path, yaml_tail: str, field: str, hint: str
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("name: m\ntable: rms_reports\n" + yaml_tail)
    with pytest.raises(ConfigError) as caught:
        load_sql_mapping(path)
    message = str(caught.value)
    assert f"{path}:3: {field}" in message and hint in message and "Fix:" in message


def test_unknown_labels_in_an_alpr_mapping_are_errors_and_known_ones_label_reads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "alpr.yaml"
    base = Path("deploy/mappings/alpr/mutualaid.yaml").read_text()
    path.write_text(base + "labels: [Officer-Safety, investigaton_open]\n")
    with pytest.raises(ConfigError, match="did you mean 'investigation_open'"):
        load_mapping(path)
    path.write_text(base + "labels: [Officer-Safety]\n")
    assert load_mapping(path).labels == ["officer_safety"]

    from producers.alpr import AlprAdapter
    from producers.contract import SourceItem

    header = b"read_id,plate,state,read_at,confidence,camera_id,camera_name,latitude,longitude,"
    header += b"heading,make,model,color"
    adapter = AlprAdapter(load_mapping(path), header, ORI)
    line = b"r1,7ABC123,CA,2026-11-24T21:14:03Z,0.9,C1,Main,38.9,-119.9,N,Toyota,Camry,Silver"
    event = adapter.to_event(SourceItem(line, 2, None, where="line 2"))  # type: ignore[arg-type]
    assert event["envelope"]["labels"] == ["officer_safety"]
    assert event["envelope"]["occurred_at"] == datetime(2026, 11, 24, 21, 14, 3, tzinfo=UTC)


def test_the_record_date_not_today_decides_the_age() -> None:
    from producers.sqlpoll import _record_date

    stamp = datetime(2031, 1, 1, tzinfo=UTC)
    assert _record_date({"report_date": "2026-11-24"}, stamp) == date(2026, 11, 24)
    assert _record_date({"incident_date": "2026-11-20", "report_date": "2026-11-24"}, stamp) == (
        date(2026, 11, 20)
    )
    assert _record_date(None, stamp) == stamp
