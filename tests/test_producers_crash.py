"""Kill a connector mid-file, start it again: every source record is on the topic exactly once.

What the runner promises (producers/runner.py): a checkpoint is saved only after the broker
acknowledged everything before it, so a crash loses nothing; the restart first reads what it
published after the checkpoint and does not publish those events again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mutualaid.processes import spawn
from mutualaid.serde import SOURCE_EVENT, AvroDeserializer, SchemaStore
from mutualaid.serde import SerializationContext as Ctx
from mutualaid.topics import Kind, source_topic
from producers import samples
from producers.runner import BATCH_SIZE, MAX_IN_FLIGHT
from support.brokers import read_topic
from support.events import export_record_ids
from support.processes import mutualaid_cli, wait_for
from support.regions import Region

ROWS = 60_000


@pytest.mark.broker
def test_sigkill_mid_file_then_restart_loses_nothing(region: Region, tmp_path: Path) -> None:
    export = tmp_path / "reads.csv"
    rng = random.Random(5)
    cameras = samples.cameras_for(region.local, (38.94, -119.98), 6, rng)
    plates = samples.plate_pool(["CA", "NV"], 3000, rng)
    samples.write_alpr_csv(
        export, region.local, cameras, plates, ROWS, datetime(2026, 11, 24, tzinfo=UTC), rng
    )
    expected = {(rid, 1) for rid in export_record_ids(export)}
    assert len(expected) == ROWS
    checkpoint = region.settings.data_dir / "checkpoints" / f"{region.local.lower()}-reads.csv.json"
    argv = [sys.executable, "-m", "cli", "--config", str(region.config_file)]
    argv += ["connect", "alpr", "--agency", region.local, "--source", str(export)]

    first = spawn(argv, log=tmp_path / "first.log")
    try:

        def line_reached() -> int:
            try:
                return json.loads(checkpoint.read_text())["position"]["line"]
            except (FileNotFoundError, json.JSONDecodeError):
                return 0

        killed_at = wait_for(lambda: line_reached() >= 10_000, 60, "the first run's progress")
        os.killpg(first.pid, signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    resumed_from = line_reached()
    assert killed_at <= resumed_from < ROWS + 1, "killed mid-file, not after the end"

    second = mutualaid_cli(region, *argv[5:])
    assert second.returncode == 0, second.stderr
    published_again = int(second.stdout.split(" published ")[-1].split()[0].replace(",", ""))
    assert published_again == ROWS + 1 - resumed_from  # from the checkpoint on, nothing before

    topic = source_topic(region.local, Kind.ALPR_READ)
    decode = AvroDeserializer(SchemaStore(), SOURCE_EVENT[Kind.ALPR_READ])
    seen: set[tuple[str, int]] = set()
    decoded = [0]

    def complete(records: list) -> bool:
        for m in records[decoded[0] :]:
            e = decode(m.value(), Ctx(topic))["envelope"]
            seen.add((e["record_id"], e["version"]))
        decoded[0] = len(records)
        return seen >= expected

    read_topic(region.settings.bootstrap_servers, topic, complete, timeout=120)
    assert seen == expected  # nothing lost, nothing foreign

    # Read once more to the end: any second copy would follow its first.
    records = read_topic(region.settings.bootstrap_servers, topic, lambda r: False, timeout=5)
    copies: dict[tuple[str, int], int] = defaultdict(int)
    for m in records:
        envelope = decode(m.value(), Ctx(topic))["envelope"]
        copies[(envelope["record_id"], envelope["version"])] += 1
    assert set(copies) == expected
    assert [k for k, n in copies.items() if n > 1] == []  # exactly once
    # The kill left events published after the checkpoint, and the restart found them.
    found = int(
        second.stderr.split(" events were published after the last checkpoint")[0].split()[-1]
    )
    assert 0 < found <= (MAX_IN_FLIGHT + 1) * BATCH_SIZE
    print(f"killed at line {resumed_from:,}; {found:,} events found on the topic, not resent")


@pytest.mark.broker
def test_a_second_connector_on_the_same_source_is_refused(region: Region, tmp_path: Path) -> None:
    """The same connector started twice (a cron run over a --follow one, a restart while the
    old process hangs): both would read from one checkpoint and publish every record twice.
    The second stops at once, naming the one running; the first publishes each record once."""
    export = tmp_path / "reads.csv"
    rng = random.Random(7)
    cameras = samples.cameras_for(region.local, (38.94, -119.98), 4, rng)
    plates = samples.plate_pool(["CA", "NV"], 500, rng)
    rows = ROWS
    samples.write_alpr_csv(
        export, region.local, cameras, plates, rows, datetime(2026, 11, 24, tzinfo=UTC), rng
    )
    args = ["connect", "alpr", "--agency", region.local, "--source", str(export)]
    argv = [sys.executable, "-m", "cli", "--config", str(region.config_file), *args]
    first = spawn(argv, log=tmp_path / "first.log")
    try:
        checkpoint = (
            region.settings.data_dir / "checkpoints" / f"{region.local.lower()}-reads.csv.json"
        )
        wait_for(checkpoint.exists, 60, "the first connector's checkpoint")
        second = mutualaid_cli(region, *args)
        running = first.poll() is None
        assert first.wait(120) == 0, (tmp_path / "first.log").read_text()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert running, "the first connector finished before the second started: no overlap shown"
    assert second.returncode == 2, second.stdout + second.stderr
    assert "is already running" in second.stderr and str(first.pid) in second.stderr
    topic = source_topic(region.local, Kind.ALPR_READ)
    # Read for a while past the expected count: a second copy would show.
    records = read_topic(
        region.settings.bootstrap_servers, topic, until=lambda r: len(r) > rows, timeout=15
    )
    assert len(records) == rows
