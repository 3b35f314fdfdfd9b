"""What full recall costs: the router's state per held record, and how fast it rechecks.

`.venv/bin/python -m bench.recall [--records N]`: the real router shares N ALPR reads with the
two partners of deploy/agreements, then reports the holders table per 1,000,000 records — the
changelog bytes (key and JSON value, as faust writes them) and the Python memory of the
``memory://`` store — with and without what recall adds to each entry, and the rate of
rechecks after an edit that changes every copy (reading back from memory: the broker's fetch
is left out).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import yaml

from bench import save
from mutualaid.agencies import load_registry
from mutualaid.events import new_envelope
from mutualaid.policy import load_policy
from mutualaid.serde import SOURCE_EVENT, AvroSerializer, Codecs, SchemaStore, SerializationContext
from mutualaid.topics import Kind
from streams.router import Consumed, Router

TOPIC = "src.nv0990300.alpr.read"
PARTITIONS = 6


def measure(entries: dict) -> tuple[int, int]:
    """(changelog bytes, memory bytes) of a holders table as the memory store keeps it."""
    changelog = sum(len(k.encode()) + len(json.dumps(e).encode()) for k, e in entries.items())
    tracemalloc.start()
    kept = {k: json.loads(json.dumps(e)) for k, e in entries.items()}
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return changelog, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="held records (100,000)")
    args = parser.parse_args()
    store, registry = SchemaStore(), load_registry(Path("deploy/agencies.yaml"))
    agreements = Path("deploy/agreements")
    source: dict[tuple[str, int, int], bytes] = {}
    router = Router(
        load_policy(agreements, registry),
        Codecs(store),
        public_keys={},
        hash_key=None,
        read_source=lambda *position: source.get(position),
    )
    encode = AvroSerializer(store, SOURCE_EVENT[Kind.ALPR_READ])
    at = datetime(2026, 11, 24, tzinfo=UTC)
    holders: dict = {}
    for n in range(args.records):
        envelope = new_envelope(
            source_ori="NV0990300",
            source_system="bench",
            kind=Kind.ALPR_READ,
            record_id=f"NV0990300-CAM{n % 50:02d}-{n:09d}",
            version=1,
            occurred_at=at,
            now=at,
        )
        value = encode(
            {"envelope": envelope, "body": {"plate": "7ABC123"}}, SerializationContext(TOPIC)
        )
        position = (TOPIC, n % PARTITIONS, 10_000_000 + n)
        source[position] = value
        router.route(Consumed(*position, None, value), holders)
    before = {
        k: {
            "partition": e["partition"],
            "version": e["version"],
            "labels": e["labels"],
            "partners": {p: ref[:2] for p, ref in e["partners"].items()},
        }
        for k, e in holders.items()
    }
    scale = 1_000_000 / len(holders)
    figures = {}
    for label, entries in (("before_recall", before), ("with_recall", holders)):
        changelog, memory = measure(entries)
        figures[f"changelog_mb_per_million_{label}"] = round(changelog * scale / 1e6)
        figures[f"memory_mb_per_million_{label}"] = round(memory * scale / 1e6)
    # An edit every copy feels (the plate now dropped): every held record re-sent.
    with tempfile.TemporaryDirectory() as folder:
        edited = Path(folder)
        for path in agreements.glob("*.yaml"):
            text = yaml.safe_load(path.read_text())
            for agreement in text["agreements"]:
                if agreement["owner"] == "NV0990300" and "alpr.read" in agreement["kinds"]:
                    agreement["fields"] = {**agreement.get("fields", {}), "plate": "drop"}
            (edited / path.name).write_text(yaml.safe_dump(text))
        router.use_policy(load_policy(edited, registry))
    started = time.perf_counter()
    controls = router.rechecks(holders)
    resent = sum(
        len(router.route(Consumed(c.topic, c.partition or 0, 0, c.key, c.value), holders))
        for c in controls
    )
    seconds = time.perf_counter() - started
    figures["rechecks_per_second"] = round(len(controls) / seconds)
    print(f"mutualaid bench.recall: {len(holders):,} held records, 2 partners each")
    for name, value in figures.items():
        print(f"  {name:<44} {value:>10,}")
    print(f"  ({resent:,} records produced by the recall)")
    save(figures, "recall-")


if __name__ == "__main__":
    main()
