"""Under load, the router sends every source record to each partner exactly once."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mutualaid.serde import SHARED_EVENT, AvroDeserializer, SchemaStore, SerializationContext
from mutualaid.topics import Kind, share_topic
from producers import samples
from support.brokers import read_topic
from support.events import export_record_ids
from support.processes import running_stages
from support.regions import Region

READS = 5000


@pytest.mark.broker
def test_thousands_of_reads_each_reach_the_partner_exactly_once(
    region: Region, tmp_path: Path
) -> None:
    rng = random.Random(5)
    export = tmp_path / "reads.csv"
    cameras = samples.cameras_for(region.neighbour, (38.96, -119.93), 6, rng)
    samples.write_alpr_csv(
        export,
        region.neighbour,
        cameras,
        samples.plate_pool(["NV", "CA"], 2000, rng),
        READS,
        datetime(2026, 11, 24, tzinfo=UTC),
        rng,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "--config",
            str(region.config_file),
            "connect",
            "alpr",
            "--agency",
            region.neighbour,
            "--source",
            str(export),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    topic = share_topic(region.local, Kind.ALPR_READ)
    with running_stages(region, tmp_path, []):
        records = read_topic(
            region.settings.bootstrap_servers, topic, lambda r: len(r) >= READS, timeout=120
        )
        # Anything more than READS would be a duplicate: give it a moment to show up.
        records += read_topic(region.settings.bootstrap_servers, topic, lambda r: False, timeout=3)[
            len(records) :
        ]
    decode = AvroDeserializer(SchemaStore(), SHARED_EVENT[Kind.ALPR_READ])
    ids = Counter(
        decode(m.value(), SerializationContext(topic))["envelope"]["record_id"] for m in records
    )
    assert len(records) == READS
    assert set(ids) == set(export_record_ids(export))
    assert len(ids) == READS
    assert max(ids.values()) == 1
