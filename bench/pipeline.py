"""Stages end to end through a broker, each as a ratio to pass-throughs measured in the same run.

``python -m bench.pipeline`` starts an embedded broker and, for each row, a fresh region (its own
agencies, topics and consumer group), publishes the events, runs the stage as `mutualaid` runs it
and times until every expected output is on the partner topics. Rows:

- the faust raw pass-through and the confluent-kafka pass-through (one record out per record in),
- the router on ALPR reads to 2 partners, and on RMS records with 2 encrypted fields to 2,
- the router with 1, 2 and 4 workers in one group over 8 partitions (scale-out): events/s and
  CPU-seconds per 1,000 events, from /proc of the worker processes,
- a lone read: from its publication to the moment the partner can search it.

Every router row checks that the union of its outputs holds each record exactly once per partner.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import string
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from bench import save
from bench.data import alpr_events, encoded, rms_events
from consumers.index import index_path
from consumers.opening import ShareReader
from mutualaid.auditlog import audit_stages, ensure_stage_keys
from mutualaid.broker import EmbeddedBroker, free_port
from mutualaid.crypto import generate_keypair, load_keyring
from mutualaid.events import record_key
from mutualaid.kafka import ensure_topics, next_batch, wait_for_broker
from mutualaid.processes import spawn, stop
from mutualaid.serde import Codecs, SchemaStore, SerializationContext
from mutualaid.settings import Settings
from mutualaid.topics import Kind, TopicSpec, share_topic, source_topic, topics_for

EVENTS = 20_000
PARTITIONS = 8
WARMUP = 64
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Region:
    directory: Path
    config: Path
    owner: str
    partners: tuple[str, str]
    bootstrap: str


def new_region(root: Path, bootstrap: str, kind: Kind, fields: dict[str, str]) -> Region:
    """Agencies with random ORIs (fresh topics and group), one agreement from the owner to two
    partners for ``kind``, keys for the partners, and the settings file the stages read."""

    def ori(state: str) -> str:
        return state + "".join(random.choices(string.digits, k=7))

    owner, partners = ori("NV"), (ori("CA"), ori("CA"))
    directory = root / owner.lower()
    (directory / "agreements").mkdir(parents=True)
    agencies = [{"ori": owner, "name": "Owner PD", "state": "NV", "type": "local"}] + [
        {"ori": p, "name": f"Partner {n}", "state": "CA", "type": "local"}
        for n, p in enumerate(partners)
    ]
    agreement = {
        "id": "bench",
        "version": 1,
        "owner": owner,
        "partners": list(partners),
        "kinds": [str(kind)],
        "fields": fields,
    }
    (directory / "agencies.yaml").write_text(yaml.safe_dump({"agencies": agencies}))
    (directory / "agreements" / "a.yaml").write_text(yaml.safe_dump({"agreements": [agreement]}))
    for partner in partners:
        generate_keypair(partner, directory / "keys" / "public", directory / "keys" / "private")
    settings = {
        "bootstrap_servers": bootstrap,
        "data_dir": str(directory / "var"),
        "agencies_file": str(directory / "agencies.yaml"),
        "agreements_dir": str(directory / "agreements"),
        "public_keys_dir": str(directory / "keys" / "public"),
        "private_keys_dir": str(directory / "keys" / "private"),
        "partitions": PARTITIONS,
        "metrics_port": 0,
        "router_id": f"router-{owner.lower()}",
    }
    config = directory / "mutualaid.yaml"
    config.write_text(yaml.safe_dump(settings))
    # The router and projectors sign their audit records (every worker its own chain).
    made = Settings(**settings)
    ensure_stage_keys(made, audit_stages(made, [owner, *partners]))
    specs = topics_for([owner, *partners], PARTITIONS)
    ensure_topics(wait_for_broker(bootstrap), specs, 1)
    return Region(directory, config, owner, partners, bootstrap)


def worker_config(region: Region, n: int) -> Path:
    """The region's settings with worker ``n``'s own data directory, as separate hosts have."""
    settings = yaml.safe_load(region.config.read_text())
    settings["data_dir"] = str(region.directory / f"var-{n}")
    path = region.directory / f"worker-{n}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes used so far (their threads included)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


class Reader:
    """Reads topics from the beginning, keeping what arrives; no group, no commits."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-reader",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
            }
        )
        self.consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(PARTITIONS)]
        )
        self.records: list[Message] = []

    def until(self, done: Callable[[list[Message]], bool], timeout: float, what: str) -> float:
        """Read until ``done(records)``; the monotonic time it became true."""
        deadline = time.monotonic() + timeout
        while not done(self.records):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: only {len(self.records)} records after {timeout}s")
            for msg in next_batch(self.consumer, 1000, 0.05):  # not held for a full batch
                if msg.error() is None:
                    self.records.append(msg)
        return time.monotonic()

    def close(self) -> None:
        self.consumer.close()


def publish(
    bootstrap: str,
    topic: str,
    values: list[bytes],
    keys: list[bytes],
    producer: Producer | None = None,
) -> None:
    """Produce and wait for the acknowledgements, with ``producer`` or a new one."""
    producer = producer or Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value in zip(keys, values, strict=True):
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(30) == 0


@contextmanager
def workers(argvs: list[list[str]], logs: Path) -> Iterator[list[int]]:
    procs = [spawn(argv, log=logs / f"worker-{n}.log") for n, argv in enumerate(argvs)]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            stop(proc, timeout=10)


def timed_stage(
    argvs: list[list[str]],
    logs: Path,
    bootstrap: str,
    source: str,
    outputs: list[str],
    per_event: int,
    values: list[bytes],
    keys: list[bytes],
) -> tuple[dict[str, float], list[Message]]:
    """Run the stage, warm it up (every worker joined and moving), then publish ``values`` and
    time until ``per_event`` outputs per event arrived. Events/s and CPU per 1,000 events."""
    reader = Reader(bootstrap, outputs)
    try:
        with workers(argvs, logs) as pids:
            publish(bootstrap, source, values[:WARMUP], keys[:WARMUP])
            reader.until(lambda r: len(r) >= WARMUP * per_event, 120, "warm-up")
            time.sleep(2.0)  # let any rebalance of a multi-worker group settle
            cpu, began = cpu_seconds(pids), time.monotonic()
            publish(bootstrap, source, values[WARMUP:], keys[WARMUP:])
            expected = len(values) * per_event
            ended = reader.until(lambda r: len(r) >= expected, 600, "outputs")
            cpu = cpu_seconds(pids) - cpu
            # Anything more than expected would be a duplicate: give it a moment to show up.
            settle = time.monotonic() + 1.5
            reader.until(lambda r: time.monotonic() > settle, 5, "settle")
        events = len(values) - WARMUP
        figures = {
            "events_per_second": events / (ended - began),
            "cpu_seconds_per_1000": cpu / events * 1000,
        }
        return figures, reader.records
    finally:
        reader.close()


def check_shares(records: list[Message], region: Region, kind: Kind, events: list[dict]) -> None:
    """Each record shared with each partner exactly once: the union of outputs is complete and
    has no duplicate. Read as each partner reads its topic (sealing is on by default, so the
    records open with the partner's own keys)."""
    codecs = Codecs(SchemaStore())
    keys = region.directory / "keys" / "private"
    readers = {
        share_topic(p, kind): ShareReader(codecs, load_keyring(p, keys)) for p in region.partners
    }

    def record_id(m: Message) -> str:
        topic = m.topic()
        assert topic is not None and m.value() is not None
        event = readers[topic].decode(kind, m.value(), SerializationContext(topic))
        return str(event["envelope"]["record_id"])

    seen = Counter((m.topic(), record_id(m)) for m in records if m.value() is not None)
    expected = {
        (share_topic(p, kind), e["envelope"]["record_id"]) for p in region.partners for e in events
    }
    missing, extra = expected - set(seen), set(seen) - expected
    duplicated = [k for k, n in seen.items() if n > 1]
    if missing or extra or duplicated:
        raise AssertionError(
            f"outputs wrong: {len(missing)} missing, {len(extra)} unexpected, "
            f"{len(duplicated)} duplicated"
        )


def cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cli", "--config", str(config), *args]


def router_row(
    root: Path, bootstrap: str, kind: Kind, fields: dict[str, str], events: list[dict], n: int
) -> dict[str, float]:
    region = new_region(root, bootstrap, kind, fields)
    events = [{**e, "envelope": {**e["envelope"], "source_ori": region.owner}} for e in events]
    topic = source_topic(region.owner, kind)
    values = encoded(SchemaStore(), kind, topic, events)
    keys = [record_key(e["envelope"]) for e in events]
    argvs = [cli(worker_config(region, i), "router") for i in range(n)]
    outputs = [share_topic(p, kind) for p in region.partners]
    figures, records = timed_stage(
        argvs, region.directory, bootstrap, topic, outputs, 2, values, keys
    )
    check_shares(records, region, kind, events)
    return figures


def passthrough_row(root: Path, bootstrap: str, mode: str, values: list[bytes]) -> dict:
    name = f"bench-{mode}-{random.randrange(10**9)}"
    source, dest = f"{name}.in", f"{name}.out"
    ensure_topics(
        wait_for_broker(bootstrap), [TopicSpec(source, PARTITIONS), TopicSpec(dest, PARTITIONS)], 1
    )
    keys = [str(i).encode() for i in range(len(values))]
    argv = [sys.executable, "-m", "bench.passthrough", mode, bootstrap, source, dest, name]
    logs = root / name
    logs.mkdir()
    figures, records = timed_stage([argv], logs, bootstrap, source, [dest], 1, values, keys)
    if len(records) != len(values):
        raise AssertionError(f"{mode} pass-through: {len(records)} out for {len(values)} in")
    return figures


def lone_read(root: Path, bootstrap: str, events: list[dict], tries: int = 5) -> dict:
    """From publishing one read to a partner finding it in its index, the router and the
    partner's projector already running and idle: median and worst of ``tries``; and each
    try's parts: until the broker acknowledged the read (``published_ms``), and until its share
    record was on the partner's topic (``routed_ms``, the router's hop included)."""
    region = new_region(root, bootstrap, Kind.ALPR_READ, {})
    partner = region.partners[0]
    topic = source_topic(region.owner, Kind.ALPR_READ)
    settings = yaml.safe_load(region.config.read_text())
    db = index_path_for(settings, partner)
    took, published, routed = [], [], []
    shares = Reader(bootstrap, [share_topic(partner, Kind.ALPR_READ)])
    argvs = [cli(region.config, "router"), cli(region.config, "project", "--agency", partner)]
    # One producer for every try, as a connector keeps one: a new producer's first record
    # waits for its connection and metadata, which is not the pipeline's latency.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    with workers(argvs, region.directory):
        for n, event in enumerate(events[: tries + 1]):
            event = {**event, "envelope": {**event["envelope"], "source_ori": region.owner}}
            value = encoded(SchemaStore(), Kind.ALPR_READ, topic, [event])
            began = time.monotonic()
            publish(bootstrap, topic, value, [record_key(event["envelope"])], producer)
            acknowledged = time.monotonic()
            record_id = event["envelope"]["record_id"]
            shared = shares.until(lambda r, n=n: len(r) > n, 120, f"lone read {record_id} shared")
            deadline = began + 120
            while not indexed(db, record_id):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"lone read {record_id} not searchable after 120 s")
                time.sleep(0.002)
            if n:  # the first waits for the group joins; the rest are what a user sees
                took.append((time.monotonic() - began) * 1000)
                published.append((acknowledged - began) * 1000)
                routed.append((shared - began) * 1000)
            time.sleep(1.0)  # idle again: the next read is alone
    shares.close()
    ordered = sorted(took)
    return {
        "p50_ms": ordered[len(ordered) // 2],
        "max_ms": ordered[-1],
        "tries_ms": took,
        "published_ms": published,
        "routed_ms": routed,
    }


def _figure(value: float | list[float]) -> str:
    if isinstance(value, list):
        return "[" + " ".join(f"{v:.0f}" for v in value) + "]"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3f}"


def index_path_for(settings: dict, ori: str) -> Path:
    return index_path(Settings(**settings), ori)


def indexed(db: Path, record_id: str) -> bool:
    if not db.exists():
        return False
    try:
        with closing(sqlite3.connect(db, timeout=0.1)) as conn:
            return bool(
                conn.execute("select 1 from records where record_id = ?", (record_id,)).fetchone()
            )
    except sqlite3.OperationalError:  # not created yet, or busy for a moment
        return False


def main(events_count: int, scale: list[int]) -> None:
    store = SchemaStore()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(free_port()) as broker:
        root, bootstrap = Path(tmp), broker.bootstrap_servers
        alpr = alpr_events(root, "NV0990300", events_count + WARMUP)
        raw = encoded(store, Kind.ALPR_READ, "src.nv0990300.alpr.read", alpr)
        encrypt = {"persons[].ssn": "encrypt", "persons[].dob": "encrypt"}
        rms = rms_events("NV0990300", events_count // 2 + WARMUP)
        print(f"mutualaid bench.pipeline: {events_count:,} events, {PARTITIONS} partitions")
        rows: dict[str, dict] = {}

        def row(name: str, work: Callable[[], dict]) -> None:
            rows[name] = work()
            shown = ", ".join(f"{k} {_figure(v)}" for k, v in rows[name].items())
            print(f"  {name:<36} {shown}")

        row("faust_passthrough", lambda: passthrough_row(root, bootstrap, "faust", raw))
        row("confluent_passthrough", lambda: passthrough_row(root, bootstrap, "confluent", raw))
        row(
            "router_alpr_2_partners",
            lambda: router_row(root, bootstrap, Kind.ALPR_READ, {}, alpr, 1),
        )
        row(
            "router_rms_encrypted_2_partners",
            lambda: router_row(root, bootstrap, Kind.RMS_RECORD, encrypt, rms, 1),
        )
        for n in scale:
            row(
                f"router_alpr_{n}_workers",
                lambda n=n: router_row(root, bootstrap, Kind.ALPR_READ, {}, alpr, n),
            )
        row("lone_read_searchable", lambda: lone_read(root, bootstrap, alpr))
    router = rows["router_alpr_2_partners"]["events_per_second"]
    ratios = {
        "router_to_faust_passthrough": router / rows["faust_passthrough"]["events_per_second"],
        "router_to_confluent_passthrough": router
        / rows["confluent_passthrough"]["events_per_second"],
    }
    if scale:
        one = rows[f"router_alpr_{scale[0]}_workers"]["cpu_seconds_per_1000"]
        for n in scale:
            ratios[f"cpu_per_event_{n}_workers_to_{scale[0]}"] = (
                rows[f"router_alpr_{n}_workers"]["cpu_seconds_per_1000"] / one
            )
    print("  ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    save(
        {"events": events_count, "partitions": PARTITIONS, "rows": rows, "ratio": ratios},
        "pipeline-",
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--events", type=int, default=EVENTS, help=f"source events per row ({EVENTS:,})"
    )
    parser.add_argument(
        "--scale", default="1,2,4", help="router workers per scale-out row (1,2,4; empty: none)"
    )
    options = parser.parse_args()
    main(options.events, [int(n) for n in options.scale.split(",") if n])
