"""Per-stage throughput, each as a ratio to a baseline measured in the same run.

Timings on a shared 2-core machine are noisy; the ratio to the baseline (a bare fastavro decode
and encode of the same event, the least any stage can do per event) is what to compare across
runs. Results are saved as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import fastavro
import psycopg
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql

from bench import percentile, save
from bench.data import alpr_lines, encoded, rms_events
from consumers.index import open_index, schema_name
from consumers.index.query import Criteria
from consumers.index.sqlite import SqliteIndex
from consumers.search import Searcher, SearchRequest, run_search
from mutualaid.agencies import Registry, load_registry
from mutualaid.auditlog import AuditChain
from mutualaid.crypto import generate_hash_key, generate_keypair, newest_public_key
from mutualaid.disclosure import new_disclosure
from mutualaid.policy import load_policy
from mutualaid.sealing import Sealer
from mutualaid.serde import (
    SHARED_EVENT,
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    Codecs,
    SchemaStore,
    SerializationContext,
)
from mutualaid.settings import Settings
from mutualaid.topics import AUDIT_DISSEMINATION, Kind
from producers import samples
from producers.alpr import DEFAULT_MAPPING, AlprAdapter, load_mapping
from streams.router import Consumed, Router
from tests.support.pgserver import postgres_bindir, throwaway_postgres

EVENTS = 20_000
INDEX_SIZE = 100_000
INDEX_URL: str | None = None


def rate(label: str, items: list, work: Callable[[object], object]) -> float:
    start = time.perf_counter()
    for item in items:
        work(item)
    per_second = len(items) / (time.perf_counter() - start)
    print(f"  {label:<44} {per_second:>12,.0f} /s")
    return per_second


def sealer(public: Path) -> Sealer:
    """Whole-record sealing as the router does it by default (share_sealing: keyed)."""
    return Sealer(lambda ori: newest_public_key(ori, public), rotate_seconds=3600)


def audit_signing(router: Router, topic: str, values: list[bytes]) -> dict[str, float]:
    """The router with and without the audit signing its Outbox adds (streams/worker.py): every
    audit record chained, the last of each batch (500 events) signed, and for comparison every
    record signed. Rounds alternate and count this process's CPU time, so that other work on a
    shared machine moves the ratio less than it moves wall-clock rates."""
    chain = AuditChain("mutualaid-router@bench", Ed25519PrivateKey.generate())

    def run(sign: str) -> None:
        for start in range(0, len(values), 500):
            audit = [
                out
                for value in values[start : start + 500]
                for out in router.route(Consumed(topic, 0, 0, None, value), {})
                if out.topic == AUDIT_DISSEMINATION
            ]
            for n, out in enumerate(audit):
                last = n == len(audit) - 1
                if sign != "off":
                    chain.seal(out.topic, out.key, out.value or b"", sign == "each" or last)

    rounds: dict[str, list[float]] = {"off": [], "batch": [], "each": []}
    for _ in range(3):
        for sign, seen in rounds.items():
            began = time.process_time()
            run(sign)
            seen.append(len(values) / (time.process_time() - began))
    median = {sign: sorted(seen)[1] for sign, seen in rounds.items()}
    labels = {"off": "unsigned", "batch": "signed per batch", "each": "signed per record"}
    for sign, label in labels.items():
        print(f"  {'router, audit ' + label + ' (CPU time)':<44} {median[sign]:>12,.0f} /s")
    print(
        f"  audit signing: router events/s signed / unsigned {median['batch'] / median['off']:.3f} "
        f"(per record: {median['each'] / median['off']:.3f})"
    )
    return {
        "router_cpu_unsigned": median["off"],
        "router_cpu_signed_per_batch": median["batch"],
        "router_cpu_signed_per_record": median["each"],
    }


def router_encryption(tmp: Path, store: SchemaStore, registry: Registry) -> dict[str, float]:
    """The router on RMS records to two partners, with and without two encrypted fields each,
    and each with every record sealed whole or not."""
    topic = "src.ca0990100.rms.record"
    values = encoded(store, Kind.RMS_RECORD, topic, rms_events("CA0990100", EVENTS // 4))
    for ori in ("CA0990200", "NV0990300"):
        generate_keypair(ori, tmp / "pub", tmp / "priv")
    keys = {o: newest_public_key(o, tmp / "pub") for o in ("CA0990200", "NV0990300")}
    figures = {}
    for label, fields in (
        ("plain", {}),
        ("encrypted", {"persons[].ssn": "encrypt", "persons[].dob": "encrypt"}),
    ):
        folder = tmp / f"agreements-{label}"
        folder.mkdir()
        (folder / "a.yaml").write_text(
            yaml.safe_dump(
                {
                    "agreements": [
                        {
                            "id": "rms",
                            "version": 1,
                            "owner": "CA0990100",
                            "kinds": ["rms.record"],
                            "partners": ["CA0990200", "NV0990300"],
                            "fields": fields,
                        }
                    ]
                }
            )
        )
        for sealing, suffix in ((None, ""), (sealer(tmp / "pub"), "_sealed")):
            policy = load_policy(folder, registry)
            router = Router(policy, Codecs(store), public_keys=keys, hash_key=None, sealer=sealing)
            figures[f"router_rms_{label}{suffix}"] = rate(
                f"router: RMS to 2 partners, {label}{suffix.replace('_', ', ')}",
                values,
                lambda v, r=router: r.route(Consumed(topic, 0, 0, None, v), {}),
            )
    return figures


def search_latency(settings: Settings, ori: str, backend: str, size: int) -> dict[str, float]:
    """Projection rate into an index of ``size`` ALPR reads, then plate-search latency: the
    index query alone, and the whole audited search a user waits for (query and durable audit
    row), from the command line (which opens the index for it) and from the API (which keeps
    it open). The same seed on every backend: the same reads, the same searches."""
    rng = random.Random(3)
    pool = [p for p, _ in samples.plate_pool(["CA", "NV"], max(size // 5, 10), rng)]
    at = datetime(2026, 11, 24, tzinfo=UTC)

    def read(n: int) -> dict:
        owner = "CA0990200" if n % 2 else "NV0990300"
        envelope = {
            "event_id": str(n),
            "source_ori": owner,
            "source_system": "bench",
            "kind": "alpr.read",
            "op": "UPSERT",
            "record_id": f"R{n}",
            "version": 1,
            "occurred_at": at + timedelta(seconds=n),
            "ingested_at": at,
            "labels": [],
            "source_position": None,
        }
        body = {
            "plate": rng.choice(pool),
            "plate_state": "CA",
            "camera_id": f"C{n % 50}",
            "latitude": 38.9 + rng.random() / 10,
            "longitude": -120 + rng.random() / 10,
        }
        return {
            "envelope": envelope,
            "body": body,
            "disclosure": new_disclosure("CA0990100", ("a", 1)),
        }

    def plate_query(i: int) -> Criteria:
        """Exact, misread (O for 0, B for 8) and prefix, in turn."""
        plate = rng.choice(pool)
        if i % 3 == 1:
            plate = plate.replace("0", "O").replace("8", "B")
        elif i % 3 == 2:
            plate = plate[:4] + "*"
        return Criteria(plate=plate, limit=100)

    index = open_index(settings, ori)
    start = time.perf_counter()
    for first in range(0, size, 5000):
        index.apply([read(n) for n in range(first, min(first + 5000, size))])
    docs_per_second = size / (time.perf_counter() - start)
    print(f"  {f'projector: {size:,} reads into {backend}':<44} {docs_per_second:>12,.0f} /s")
    query = latency(
        f"search: plate (exact, misread, prefix*), {backend}",
        400,
        lambda i: index.search(plate_query(i)),
    )
    index.close()
    request = partial(SearchRequest, ori, "bench", "BENCH-1")
    audited = latency(
        f"audited search, CLI (opens index), {backend}",
        200,
        lambda i: run_search(settings, request(plate_query(i))),
    )
    searcher = Searcher(settings, ori)
    kept = latency(
        f"audited search, API (kept open), {backend}",
        200,
        lambda i: searcher.search(request(plate_query(i))),
    )
    searcher.close()
    return {
        "index_projection_docs_per_second": docs_per_second,
        "search_p50_ms": query[0],
        "search_p99_ms": query[1],
        "audited_search_p50_ms": audited[0],
        "audited_search_p99_ms": audited[1],
        "kept_open_search_p50_ms": kept[0],
        "kept_open_search_p99_ms": kept[1],
    }


def latency(label: str, times: int, work: Callable[[int], object]) -> tuple[float, float]:
    """p50 and p99 in milliseconds of ``work(i)`` for i in range(times), printed."""
    took = []
    for i in range(times):
        began = time.perf_counter()
        work(i)
        took.append((time.perf_counter() - began) * 1000)
    p50, p99 = percentile(took, 0.5), percentile(took, 0.99)
    print(f"  {label:<44} p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    return p50, p99


def search_settings(directory: Path, index_url: str | None = None) -> Settings:
    """A region with a hash key (a plate also matches by its keyed hash), its index on SQLite
    under ``directory`` or on the PostgreSQL server at ``index_url``."""
    hash_key = directory / "hash.key"
    if not hash_key.exists():
        generate_hash_key(hash_key)
    return Settings(data_dir=directory, index_url=index_url, hash_key_file=hash_key)


def postgres_latency(directory: Path, size: int) -> dict[str, float] | None:
    """search_latency on PostgreSQL: the server at --index-url, else a throwaway one from the
    distribution's binaries; None (and a note) where there is neither."""
    if INDEX_URL:
        return search_latency(
            search_settings(directory, INDEX_URL), fresh_schema(INDEX_URL), "PostgreSQL", size
        )
    bindir = postgres_bindir()
    if bindir is None:
        print("  PostgreSQL: skipped, no server binaries (apt-get install postgresql)")
        return None
    with throwaway_postgres(bindir) as url:
        return search_latency(
            search_settings(directory, url), fresh_schema(url), "PostgreSQL", size
        )


def fresh_schema(url: str) -> str:
    """An agency ORI no registry holds, its schema on the server emptied."""
    ori = "ZZ" + f"{os.getpid():07d}"[-7:]
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema_name(ori)))
        )
    return ori


def main() -> None:
    store = SchemaStore()
    registry = load_registry(Path("deploy/agencies.yaml"))
    router = Router(
        load_policy(Path("deploy/agreements"), registry),
        Codecs(store),
        public_keys={},
        hash_key=None,
    )
    topic = "src.nv0990300.alpr.read"
    ctx = SerializationContext(topic)
    with tempfile.TemporaryDirectory() as tmp:
        header, items = alpr_lines(Path(tmp), "NV0990300", EVENTS)
        adapter = AlprAdapter(load_mapping(DEFAULT_MAPPING), header, "NV0990300")
        events = [adapter.to_event(i) for i in items]
        encode = AvroSerializer(store, SOURCE_EVENT[Kind.ALPR_READ])
        values = [encode(e, ctx) for e in events]
        schema = store.get(SOURCE_EVENT[Kind.ALPR_READ])
        decode_shared = AvroDeserializer(store, SHARED_EVENT[Kind.ALPR_READ])
        shared = [
            decode_shared(o.value, ctx)
            for v in values[:EVENTS]
            for o in router.route(Consumed(topic, 0, 0, None, v), {})
            if o.topic.startswith("share.")
        ][:EVENTS]

        def baseline(value: bytes) -> None:
            record = fastavro.schemaless_reader(io.BytesIO(value[10:]), schema, schema)
            fastavro.schemaless_writer(io.BytesIO(), schema, record)

        print(f"mutualaid bench: {EVENTS:,} ALPR events, Python {platform.python_version()}")
        figures = {
            "baseline_avro_decode_encode": rate("baseline: Avro decode + encode", values, baseline)
        }
        figures["connector_map_and_encode"] = rate(
            "connector: CSV line -> Avro event", items, lambda i: encode(adapter.to_event(i), ctx)
        )
        figures["router_route"] = rate(
            "router: decide + encode (2 partners each)",
            values,
            lambda v: router.route(Consumed(topic, 0, 0, None, v), {}),
        )
        for ori in ("CA0990100", "CA0990200"):  # NV0990300's partners in deploy/agreements
            generate_keypair(ori, Path(tmp) / "seal-pub", Path(tmp) / "seal-priv")
        sealing = Router(
            router.policy,
            Codecs(store),
            public_keys={},
            hash_key=None,
            sealer=sealer(Path(tmp) / "seal-pub"),
        )
        figures["router_route_sealed"] = rate(
            "router: decide + encode + seal whole",
            values,
            lambda v: sealing.route(Consumed(topic, 0, 0, None, v), {}),
        )
        figures |= audit_signing(router, topic, values)
        index = SqliteIndex(Path(tmp) / "index.sqlite")
        batches = [shared[i : i + 500] for i in range(0, len(shared), 500)]
        start = time.perf_counter()
        for batch in batches:
            index.apply(batch)
        figures["index_apply"] = len(shared) / (time.perf_counter() - start)
        print(
            f"  {'projector index: upsert (500 per commit)':<44} "
            f"{figures['index_apply']:>12,.0f} /s"
        )
        index.close()
        figures |= router_encryption(Path(tmp), store, registry)
        latency = search_latency(search_settings(Path(tmp)), "ZZ0000001", "SQLite", INDEX_SIZE)
        postgres = postgres_latency(Path(tmp), INDEX_SIZE)
    base = figures["baseline_avro_decode_encode"]
    ratios = {k: round(v / base, 3) for k, v in figures.items()}
    print("  ratio to baseline: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    sealed_cost = {
        "alpr": round(figures["router_route_sealed"] / figures["router_route"], 3),
        "rms_plain": round(figures["router_rms_plain_sealed"] / figures["router_rms_plain"], 3),
        "rms_encrypted": round(
            figures["router_rms_encrypted_sealed"] / figures["router_rms_encrypted"], 3
        ),
    }
    print("  router sealed / unsealed: " + ", ".join(f"{k} {v}" for k, v in sealed_cost.items()))
    save(
        {
            "events": EVENTS,
            "per_second": figures,
            "ratio": ratios,
            "sealed_over_unsealed": sealed_cost,
            "index_size": INDEX_SIZE,
            "search": latency,
            "search_postgresql": postgres,
        }
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=EVENTS, help=f"events per row ({EVENTS:,})")
    parser.add_argument(
        "--index-size",
        type=int,
        default=INDEX_SIZE,
        help=f"reads in the search-latency index ({INDEX_SIZE:,})",
    )
    parser.add_argument(
        "--index-url",
        help="PostgreSQL server for the index figures (postgresql://...); default: a throwaway "
        "server from the distribution's binaries",
    )
    options = parser.parse_args()
    EVENTS, INDEX_SIZE, INDEX_URL = options.events, options.index_size, options.index_url
    main()
