"""A followed source publishes what it has when it goes quiet, not when a batch fills up."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mutualaid.topics import Kind, source_topic
from producers.alpr import AlprAdapter, load_mapping
from producers.checkpoint import CheckpointStore
from producers.runner import Runner
from producers.sources import LineFile
from support.brokers import read_topic
from support.processes import wait_for
from support.regions import Region

MAPPING = load_mapping(Path("deploy/mappings/alpr/mutualaid-ndjson.yaml"))


def read(n: int) -> str:
    return f'{{"read_id": "F-{n}", "plate": "7ABC{n:03d}", "read_at": "2026-11-24T21:14:03Z"}}\n'


@pytest.mark.broker
def test_follow_publishes_each_quiet_moment_and_stops_cleanly(
    region: Region, tmp_path: Path
) -> None:
    export = tmp_path / "reads.ndjson"
    export.write_text(read(1) + read(2))
    source = LineFile(export, has_header=False)
    runner = Runner(
        region.settings, region.local, AlprAdapter(MAPPING, b"", region.local), source, name="f"
    )
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, kwargs={"stop": stop, "follow": True})
    thread.start()
    topic = source_topic(region.local, Kind.ALPR_READ)
    servers = region.settings.bootstrap_servers
    try:
        assert len(read_topic(servers, topic, lambda r: len(r) >= 2)) == 2  # batch of 1,000
        with open(export, "a") as out:
            out.write(read(3) + '{"read_id": "F-4", "pla')  # a line still being written
        wait_for(lambda: runner.progress.read == 3, 30, "the appended line")
        with open(export, "a") as out:
            out.write('te": "7ABC004", "read_at": "2026-11-24T21:14:09Z"}\n')
        wait_for(lambda: runner.progress.read == 4, 30, "the completed line")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert runner.progress.counts() == {"read": 4, "published": 4, "rejected": 0}
    assert len(read_topic(servers, topic, lambda r: len(r) >= 4)) == 4
    checkpoint = CheckpointStore(region.settings.data_dir / "checkpoints").load("f")
    assert checkpoint is not None and checkpoint.offset == export.stat().st_size
