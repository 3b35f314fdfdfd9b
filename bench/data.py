"""The events the benchmarks feed the stages: ALPR reads from the sample generator, and RMS
records with a person whose SSN and date of birth an agreement may encrypt."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

from mutualaid.events import new_envelope
from mutualaid.serde import SOURCE_EVENT, AvroSerializer, SchemaStore, SerializationContext
from mutualaid.topics import Kind
from producers import samples
from producers.alpr import DEFAULT_MAPPING, AlprAdapter, load_mapping
from producers.contract import SourceItem
from producers.sources import LineFile


def alpr_lines(directory: Path, ori: str, count: int) -> tuple[bytes, list[SourceItem]]:
    """``count`` lines of an ALPR export of agency ``ori`` (seeded: every run the same reads)."""
    rng = random.Random(7)
    cameras = samples.cameras_for(ori, (38.96, -119.93), 6, rng)
    path = directory / f"bench-{ori}.csv"
    samples.write_alpr_csv(
        path,
        ori,
        cameras,
        samples.plate_pool(["NV", "CA"], 2000, rng),
        count,
        datetime(2026, 11, 24, tzinfo=UTC),
        rng,
    )
    source = LineFile(path)
    items = list(source.items(source.start(None), follow=lambda: False))
    return source.header, items


def alpr_events(directory: Path, ori: str, count: int) -> list[dict]:
    """``count`` ALPR read events of agency ``ori``, as its connector publishes them."""
    header, items = alpr_lines(directory, ori, count)
    adapter = AlprAdapter(load_mapping(DEFAULT_MAPPING), header, ori)
    return [adapter.to_event(i) for i in items]


def rms_events(ori: str, count: int) -> list[dict]:
    """``count`` RMS records of agency ``ori``, each naming one offender with SSN and DOB."""
    rng = random.Random(11)
    events = []
    for n in range(count):
        envelope = new_envelope(
            source_ori=ori,
            source_system="bench",
            kind=Kind.RMS_RECORD,
            record_id=f"R-{n}",
            version=1,
            occurred_at=datetime.now(UTC),
        )
        person = {
            "role": "OFFENDER",
            "last_name": "Doe",
            "dob": "1990-01-01",
            "ssn": f"{rng.randint(100, 999)}-45-{rng.randint(1000, 9999)}",
        }
        body = {"incident_number": f"RB-{n}", "persons": [person], "narrative": "theft" * 20}
        events.append({"envelope": envelope, "body": body})
    return events


def encoded(store: SchemaStore, kind: Kind, topic: str, events: list[dict]) -> list[bytes]:
    encode = AvroSerializer(store, SOURCE_EVENT[kind])
    ctx = SerializationContext(topic)
    return [encode(e, ctx) for e in events]
