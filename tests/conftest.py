"""Shared fixtures: one real broker of each kind (Tansu, Apache Kafka) per test session, and a
fresh region per test.

Every test gets its own agencies (random ORIs), hence its own topics and consumer groups on the
shared broker, so tests never see each other's records.
"""

from __future__ import annotations

import csv
import os
import random
import sqlite3
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from psycopg import sql

from consumers.index import index_path, schema_name
from mutualaid.agencies import load_registry
from mutualaid.auditlog import audit_stages, ensure_stage_keys
from mutualaid.broker import EmbeddedBroker, free_port
from mutualaid.crypto import newest_public_key
from mutualaid.disclosure import disclose
from mutualaid.events import record_key
from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.kafkaserver import KafkaCluster, KafkaUnavailable
from mutualaid.policy import Agreement, Decision
from mutualaid.processes import spawn, stop
from mutualaid.serde import (
    DEAD_LETTER,
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.settings import Settings
from mutualaid.topics import Kind, Stage, dlq_topic, source_topic, topics_for
from producers.alpr import record_id
from support.pgserver import postgres_bindir, throwaway_postgres

# The browser fixture (real Chromium) for the web pages' tests.
pytest_plugins = ["support.browser"]

# The brokers every broker-backed test runs on: the embedded Tansu (what `up` runs) and Apache
# Kafka (what agencies run). MUTUALAID_TEST_BROKERS=tansu (or kafka) runs on one only.
BROKERS = ("tansu", "kafka")
Broker = EmbeddedBroker | KafkaCluster


def _selected_brokers() -> list[str]:
    chosen = os.environ.get("MUTUALAID_TEST_BROKERS", ",".join(BROKERS)).split(",")
    unknown = sorted(set(chosen) - set(BROKERS))
    if unknown:
        raise pytest.UsageError(f"MUTUALAID_TEST_BROKERS: unknown {unknown}; known: {BROKERS}")
    return [b for b in BROKERS if b in chosen]


@pytest.fixture(scope="session", params=_selected_brokers())
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Broker]:
    """One broker of each kind per session; a test that holds on one only says so with
    ``@pytest.mark.brokers("tansu", reason=...)``."""
    log_dir = tmp_path_factory.mktemp(request.param)
    if request.param == "tansu":
        with EmbeddedBroker(free_port(), log=log_dir / "broker.log") as running:
            yield running
        return
    try:
        with KafkaCluster(nodes=1, root=log_dir) as cluster:
            cluster.warm_up()
            yield cluster
    except KafkaUnavailable as exc:
        pytest.skip(f"Apache Kafka cannot run here: {exc}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "brokers(*names, reason): run only on these brokers of the broker fixture, and why",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect a test's runs on brokers its ``brokers`` mark leaves out."""
    keep, drop = [], []
    for item in items:
        mark = item.get_closest_marker("brokers")
        param = getattr(getattr(item, "callspec", None), "params", {}).get("broker")
        if mark is not None and not mark.kwargs.get("reason"):
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.brokers needs a reason=")
        (drop if mark and param and param not in mark.args else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for the session (libpq URL); tests keep apart by schema
    or table. Skipped only where no server binaries exist (.ci/run installs Debian's)."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl); apt-get install postgresql")
    with throwaway_postgres(bindir) as url:
        yield url


@pytest.fixture
def index_url(request: pytest.FixtureRequest) -> str | None:
    """The region's ``index_url``: SQLite files unless a test is parametrised with
    ``both_index_backends``."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


both_index_backends = pytest.mark.parametrize("index_url", ["sqlite", "postgresql"], indirect=True)


def index_rows(settings: Settings, agency_ori: str, query: str) -> list[tuple]:
    """Rows of ``query`` run on the agency's own index, on whichever backend the settings name
    (write SQL both accept: ``cast(x as text)``, ``deleted = false``)."""
    if settings.index_url is None:
        with closing(sqlite3.connect(index_path(settings, agency_ori))) as db:
            return db.execute(query).fetchall()
    with psycopg.connect(settings.index_url) as db:
        db.execute(sql.SQL("set search_path to {}").format(sql.Identifier(schema_name(agency_ori))))
        return db.execute(query).fetchall()


def random_ori(state: str) -> str:
    return state + "".join(random.choices(string.digits, k=7))


@dataclass(frozen=True)
class Region:
    """A throwaway set of agencies and agreements, with settings pointing at them."""

    settings: Settings
    config_file: Path
    local: str  # CA local PD, dispatch center
    county: str  # CA county sheriff
    neighbour: str  # NV local PD
    federal: str  # federal task force: no agreement names it


# An assurance in effect for the shipped CA ALPR rule: signed a year ago, for another year.
CA_ALPR_ASSURANCE = {
    "rule": "ca-alpr-1798.90.55",
    "document": "test assurance",
    "signed": str(date.today() - timedelta(days=365)),
    "expires": str(date.today() + timedelta(days=365)),
}


@pytest.fixture
def region(tmp_path: Path, broker: Broker, index_url: str | None) -> Iterator[Region]:
    made = make_region(tmp_path, broker, index_url=index_url)
    yield made
    # Every test's 41 topics would pile up on the session's broker (thousands of partitions
    # by the end, which Apache Kafka holds in its heap): the region's own go with it.
    # (The router's changelog and control topics carry the local ORI in its router_id.)
    oris = (made.local, made.county, made.neighbour, made.federal)
    admin = wait_for_broker(broker.bootstrap_servers)
    ours = {t for t in admin.list_topics(timeout=10).topics if any(o.lower() in t for o in oris)}
    # (Each name once: Apache Kafka refuses a DeleteTopics that names a topic twice.)
    for future in admin.delete_topics(sorted(ours), operation_timeout=10).values():
        future.result()


def make_region(tmp_path: Path, broker: Broker, **settings: object) -> Region:
    """Four agencies with fresh ORIs (a CA city, its county, a NV neighbour, a federal task
    force) and two agreements (city -> county, neighbour -> both CA agencies), on ``broker``."""
    local, county, neighbour, federal = (random_ori(s) for s in ("CA", "CA", "NV", "DC"))
    agencies = [
        {
            "ori": local,
            "name": "Test City PD",
            "state": "CA",
            "type": "local",
            "dispatch_center": True,
            "jurisdiction": {"latitude": 38.94, "longitude": -119.98, "radius_km": 12},
            "assurances": [CA_ALPR_ASSURANCE],
        },
        {
            "ori": county,
            "name": "Test County SO",
            "state": "CA",
            "type": "county",
            "jurisdiction": {"latitude": 38.89, "longitude": -120.05, "radius_km": 45},
            # California ALPR reads reach it only with an assurance on file (deploy/rules/).
            "assurances": [CA_ALPR_ASSURANCE],
        },
        {
            "ori": neighbour,
            "name": "Next State PD",
            "state": "NV",
            "type": "local",
            "jurisdiction": {"latitude": 38.96, "longitude": -119.93, "radius_km": 10},
        },
        {"ori": federal, "name": "Federal Task Force", "state": "DC", "type": "federal"},
    ]
    agreements = [
        {
            "id": "local-to-county",
            "version": 1,
            "owner": local,
            "partners": [county],
            "kinds": ["alpr.read"],
        },
        {
            "id": "neighbour-to-ca",
            "version": 1,
            "owner": neighbour,
            "partners": [local, county],
            "kinds": ["alpr.read"],
        },
    ]
    (tmp_path / "agreements").mkdir()
    (tmp_path / "agencies.yaml").write_text(yaml.safe_dump({"agencies": agencies}))
    (tmp_path / "agreements" / "test.yaml").write_text(yaml.safe_dump({"agreements": agreements}))
    # Its own router group and tables: tests share one broker.
    oris = (local, county, neighbour, federal)
    return configured_region(
        tmp_path, broker, oris, router_id=f"router-{local.lower()}", **settings
    )


def configured_region(
    tmp_path: Path, broker: Broker, oris: tuple[str, str, str, str], **settings: object
) -> Region:
    """The region whose agencies.yaml and agreements/ are in ``tmp_path``: its settings, also
    written to mutualaid.yaml there for the stages run as processes, and its topics created."""
    values = {
        "bootstrap_servers": broker.bootstrap_servers,
        "data_dir": str(tmp_path / "var"),
        "agencies_file": str(tmp_path / "agencies.yaml"),
        "agreements_dir": str(tmp_path / "agreements"),
        "metrics_port": 0,
        **settings,
    }
    config_file = tmp_path / "mutualaid.yaml"
    config_file.write_text(yaml.safe_dump(values))
    region = Region(Settings(**values), config_file, *oris)
    # Every stage signs its audit records and refuses to start without its key.
    ensure_stage_keys(region.settings, audit_stages(region.settings, list(oris)))
    topics = topics_for(list(oris), region.settings.partitions, region.settings.retention)
    rf = region.settings.replication_factor
    ensure_topics(wait_for_broker(broker.bootstrap_servers), topics, rf)
    return region


def read_topic(
    bootstrap_servers: str,
    topic: str,
    until: Callable[[list[Message]], bool],
    timeout: float = 30.0,
) -> list[Message]:
    """Every record on ``topic`` from the start, read until ``until(records)`` or the deadline.

    Partitions are assigned directly (no group join to wait for). The end is decided by the
    caller's condition, not by watermarks, which Tansu reports wrong after batched produces.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "test-reader",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[Message] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(records):
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    records.append(msg)
        return records
    finally:
        consumer.close()


def source_events(
    bootstrap_servers: str, ori: str, kind: Kind, count: int, timeout: float = 30.0
) -> list[dict]:
    """What the agency's connectors published on ``src.<ori>.<kind>``, decoded, once there
    are ``count`` events (or fewer at the deadline)."""
    topic = source_topic(ori, kind)
    decode = AvroDeserializer(SchemaStore(), SOURCE_EVENT[kind])
    records = read_topic(bootstrap_servers, topic, lambda r: len(r) >= count, timeout)
    return [decode(m.value(), SerializationContext(topic)) for m in records]


def publish_source(
    region: Region,
    kind: Kind,
    events: list[dict],
    *,
    owner: str | None = None,
    partition: int | None = None,
) -> None:
    """Publish source events to an agency's topic (default: the region's local agency), as a
    connector would; ``partition`` pins them all to one partition, in this order."""
    topic = source_topic(owner or region.local, kind)
    encode = AvroSerializer(SchemaStore(), SOURCE_EVENT[kind])
    producer = Producer({"bootstrap.servers": region.settings.bootstrap_servers})
    pinned = {} if partition is None else {"partition": partition}
    for event in events:
        value = encode(event, SerializationContext(topic))
        producer.produce(topic, value, record_key(event["envelope"]), **pinned)
    assert producer.flush(10) == 0


def shared_by_router(
    event: dict, partner: str, fields: dict[str, str], public_keys_dir: Path, hash_key: bytes
) -> dict:
    """``event`` as the router shares it with ``partner`` under an agreement with these field
    actions (sealed fields left sealed): the real disclosure code, without a broker."""
    kind = event["envelope"]["kind"]
    agreement = Agreement(
        id="a", version=1, owner=event["envelope"]["source_ori"], partners=[partner],
        kinds=[kind], fields=fields,
    )  # fmt: skip
    schema = {
        "rms.record": "mutualaid.rms.Record",
        "alpr.read": "mutualaid.alpr.Read",
        "cad.incident": "mutualaid.cad.Incident",
    }[kind]
    shared, _ = disclose(
        {"envelope": event["envelope"], "body": event["body"]},
        Decision.under(partner, agreement, {}, "SHARED"),
        agreement.actions_for(Kind(kind), SchemaStore().get(schema)),
        registry=load_registry(Path("deploy/agencies.yaml")),
        public_key=newest_public_key(partner, public_keys_dir),
        hash_key=hash_key,
    )
    return shared


def export_record_ids(export: Path) -> list[str]:
    """The record ids the ALPR connector gives the reads of a reference-layout CSV export
    (``producers.samples``): the camera's id and the read id."""
    with export.open(newline="") as rows:
        return [record_id(r["camera_id"], r["read_id"]) for r in csv.DictReader(rows)]


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@contextmanager
def running_stages(
    region: Region, logs: Path, projected: list[str]
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """The router and a projector per agency in ``projected``, as `mutualaid up` runs them
    (yielded by name: router, project-<ori>)."""
    base = [sys.executable, "-m", "cli", "--config", str(region.config_file)]
    argvs = {"router": ["router"]}
    for ori in projected:
        argvs[f"project-{ori}"] = ["project", "--agency", ori]
    logs.mkdir(parents=True, exist_ok=True)
    procs = {name: spawn(base + argv, log=logs / f"{name}.log") for name, argv in argvs.items()}
    try:
        yield procs
    finally:
        for proc in procs.values():
            stop(proc, timeout=10)


def dead_letters(
    bootstrap_servers: str, stage: Stage, keep: Callable[[dict], bool], timeout: float = 30.0
) -> list[dict]:
    """The stage's dead letters that ``keep`` selects, read until at least one has arrived."""
    topic = dlq_topic(stage)
    decode = AvroDeserializer(SchemaStore(), DEAD_LETTER)

    def selected(records: list[Message]) -> list[dict]:
        letters = (decode(m.value(), SerializationContext(topic)) for m in records)
        return [letter for letter in letters if keep(letter)]

    return selected(read_topic(bootstrap_servers, topic, lambda r: bool(selected(r)), timeout))


def mutualaid_cli(region: Region, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a mutualaid command against the region's settings, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "cli", "--config", str(region.config_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def metric(port: int, sample: str) -> float | None:
    """The value of one Prometheus sample (name and labels as exposed) a stage serves on
    ``port``; None if it is not there, or nothing answers yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


@contextmanager
def serving(config_file: Path, argv: list[str], log: Path) -> Iterator[str]:
    """A mutualaid HTTP stage run as a process (``argv`` gets ``--port``/``--listen`` here),
    yielded as its base URL once /healthz answers."""
    port = free_port()
    address = ["--listen", f"127.0.0.1:{port}"] if "--listen" in argv else ["--port", str(port)]
    argv = [a for a in argv if a != "--listen"]
    base = [sys.executable, "-m", "cli", "--config", str(config_file)]
    proc = spawn([*base, *argv, *address], log=log)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_for(healthy, 30, f"{' '.join(argv)} to serve")
        yield url
    finally:
        stop(proc, timeout=10)


# In the dispatch region: inside the city's jurisdiction, and far from every center.
IN_CITY = (38.94, -119.98)
FAR_AWAY = (37.00, -118.00)


def dispatch_region(tmp_path: Path, broker: EmbeddedBroker, **settings: object) -> Region:
    """The hit-alert region of ``write_dispatch_region`` (no field actions), configured, with
    a router and a matcher group (and tables) of its own on the shared broker."""
    city, county, neighbour, federal = (random_ori(s) for s in ("CA", "CA", "NV", "DC"))
    write_dispatch_region(tmp_path, city, county, neighbour, federal, field_actions=False)
    own = {"router_id": f"router-{city.lower()}", "matcher_id": f"matcher-{city.lower()}"}
    return configured_region(
        tmp_path, broker, (city, county, neighbour, federal), **own, **settings
    )


def write_dispatch_region(
    root: Path, city: str, county: str, neighbour: str, federal: str, *, field_actions: bool
) -> None:
    """agencies.yaml and agreements/ for the hit-alert tests: three dispatch centers far apart
    and a federal agency that dispatches no one. The neighbour shares its reads with both CA
    centers; the county shares its hotlist with the city. With ``field_actions`` the reads go
    without images and the hotlist without notes."""
    agencies = [
        {"ori": city, "name": "City PD", "state": "CA", "type": "local", "dispatch_center": True,
         "jurisdiction": {"latitude": 38.94, "longitude": -119.98, "radius_km": 5}},
        {"ori": county, "name": "County SO", "state": "CA", "type": "county",
         "dispatch_center": True,
         "jurisdiction": {"latitude": 38.60, "longitude": -120.50, "radius_km": 10}},
        {"ori": neighbour, "name": "Neighbour PD", "state": "NV", "type": "local",
         "dispatch_center": True,
         "jurisdiction": {"latitude": 39.50, "longitude": -119.80, "radius_km": 10}},
        {"ori": federal, "name": "Task Force", "state": "DC", "type": "federal"},
    ]  # fmt: skip
    reads = {"id": "nv-reads", "version": 1, "owner": neighbour, "partners": [city, county],
             "kinds": ["alpr.read"]}  # fmt: skip
    hotlist = {"id": "county-hotlist", "version": 2, "owner": county, "partners": [city],
               "kinds": ["hotlist.entry"]}  # fmt: skip
    if field_actions:
        reads["fields"], hotlist["fields"] = {"image_ref": "drop"}, {"notes": "drop"}
    (root / "agreements").mkdir()
    (root / "agencies.yaml").write_text(yaml.safe_dump({"agencies": agencies}))
    (root / "agreements" / "a.yaml").write_text(yaml.safe_dump({"agreements": [reads, hotlist]}))
