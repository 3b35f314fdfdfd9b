"""Connector throughput: events/s per connector on sample data, end to end and mapping only.

``python -m bench.connectors`` starts an embedded broker, generates sample sources (ALPR CSV
and NDJSON, EIDO JSON files, NIBRS XML files, a SQLite table) and runs each through the real
``Runner``: map, encode, produce, wait for acknowledgement, checkpoint. The mapping-only column
(adapter + Avro encode, no broker) shows how much of that is the connector's own work. Times
are noisy on a shared machine: compare connectors within one run.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from bench import save
from mutualaid.broker import EmbeddedBroker, free_port
from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.serde import SOURCE_EVENT, AvroSerializer, SchemaStore, SerializationContext
from mutualaid.settings import Settings
from mutualaid.topics import Kind, topics_for
from producers import samples
from producers.alpr import DEFAULT_MAPPING, AlprAdapter, load_mapping
from producers.cad import CadAdapter
from producers.rms import RmsAdapter
from producers.runner import Runner
from producers.sources import DocumentDirectory, LineFile
from producers.sqlpoll import SqlPoller, SqlRowAdapter, load_sql_mapping

ORI = "CA0990100"


def alpr_sources(tmp: Path, count: int) -> tuple[Path, Path]:
    rng = random.Random(7)
    csv = tmp / "reads.csv"
    samples.write_alpr_csv(
        csv,
        ORI,
        samples.cameras_for(ORI, (38.94, -119.98), 6, rng),
        samples.plate_pool(["CA", "NV"], 2000, rng),
        count,
        datetime(2026, 11, 24, tzinfo=UTC),
        rng,
    )
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    ndjson = tmp / "reads.ndjson"
    with open(ndjson, "w") as out:
        for line in lines[1:]:
            out.write(json.dumps(dict(zip(header, line.split(","), strict=True))) + "\n")
    return csv, ndjson


def cad_documents(tmp: Path, count: int) -> Path:
    """About ``count`` EIDO documents: incidents with one to four status changes each."""
    samples.write_eido_documents(
        tmp / "eido", ORI, (38.94, -119.98), count * 2 // 5, random.Random(5)
    )
    return tmp / "eido"


def rms_documents(tmp: Path, count: int) -> Path:
    rng = random.Random(5)
    plates = samples.plate_pool(["CA", "NV"], 500, rng)
    samples.write_nibrs_documents(tmp / "nibrs", ORI, plates, count, rng)
    return tmp / "nibrs"


def sql_table(tmp: Path, count: int) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp / 'rms.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE rms_reports (id INTEGER PRIMARY KEY, incident_number TEXT, "
            "report_date DATE, status TEXT, narrative TEXT, address TEXT, city TEXT, "
            "person_role TEXT, last_name TEXT, first_name TEXT, dob DATE, deleted BOOLEAN, "
            "sealed BOOLEAN, updated_at DATETIME)"
        )
        conn.exec_driver_sql("CREATE INDEX by_change ON rms_reports (updated_at, id)")
        start = datetime(2026, 11, 24)
        conn.exec_driver_sql(
            "INSERT INTO rms_reports VALUES (?, ?, '2026-11-24', 'OPEN', 'stolen truck', "
            "'120 Main St', 'Riverbend', 'OFFENDER', 'Doe', 'Pat', '1990-05-17', 0, ?, ?)",
            [
                (n, f"RB-{n:06d}", n % 50 == 0, str(start + timedelta(milliseconds=n)))
                for n in range(count)
            ],
        )
    return engine


def main(count: int, documents: int) -> None:
    store = SchemaStore()
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        csv, ndjson = alpr_sources(tmp, count)
        mapping = load_mapping(DEFAULT_MAPPING)
        ndjson_mapping = load_mapping(Path("deploy/mappings/alpr/mutualaid-ndjson.yaml"))
        sql_mapping = load_sql_mapping(Path("deploy/mappings/sql/rms-reports.yaml"))
        engine = sql_table(tmp, count)
        connectors = {
            "alpr_csv": lambda: (
                (s := LineFile(csv)),
                AlprAdapter(mapping, s.header, ORI),
            ),
            "alpr_ndjson": lambda: (
                LineFile(ndjson, has_header=False),
                AlprAdapter(ndjson_mapping, b"", ORI),
            ),
            "cad_eido_json": lambda: (
                DocumentDirectory(cad_documents(tmp, documents), "*.json"),
                CadAdapter(ORI),
            ),
            "rms_nibrs_xml": lambda: (
                DocumentDirectory(rms_documents(tmp, documents), "*.xml"),
                RmsAdapter(ORI),
            ),
            "rms_sql_sqlite": lambda: (
                (p := SqlPoller(engine, "rms_reports", sql_mapping, rows=1000)),
                SqlRowAdapter(Kind.RMS_RECORD, sql_mapping, ORI, list(p.table.c.keys())),
            ),
        }
        with EmbeddedBroker(free_port(), log=tmp / "broker.log") as broker:
            settings = Settings(bootstrap_servers=broker.bootstrap_servers, data_dir=tmp / "var")
            ensure_topics(wait_for_broker(broker.bootstrap_servers), topics_for([ORI], 4), 1)
            print(f"mutualaid connector bench: {count:,} rows, {documents:,} documents")
            for name, build in connectors.items():
                source, adapter = build()
                items = list(source.items(source.start(None), lambda: False))
                encode = AvroSerializer(store, SOURCE_EVENT[adapter.kind])
                ctx = SerializationContext("bench")
                began = time.perf_counter()
                for item in items:
                    encode(adapter.to_event(item), ctx)
                mapped = len(items) / (time.perf_counter() - began)
                runner = Runner(settings, ORI, adapter, source, name=name)
                began = time.perf_counter()
                progress = runner.run()
                end_to_end = progress.read / (time.perf_counter() - began)
                assert progress.rejected == 0, f"{name}: {progress.counts()}"
                figures[name] = {
                    "items": progress.read,
                    "map_and_encode_per_second": mapped,
                    "end_to_end_per_second": end_to_end,
                }
                print(
                    f"  {name:<16} {progress.read:>8,} items  map+encode {mapped:>9,.0f}/s  "
                    f"end to end (acked, checkpointed) {end_to_end:>9,.0f}/s"
                )
    save(figures, "connectors-")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.connectors", description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="ALPR and SQL rows (20,000)")
    parser.add_argument("--documents", type=int, default=5_000, help="JSON/XML files (5,000)")
    options = parser.parse_args()
    main(options.rows, options.documents)
