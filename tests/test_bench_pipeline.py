"""The pipeline benchmark runs end to end and saves every row (the figures are not judged
here). It rotted twice unnoticed: its faust baseline failed to import a moved helper, and its
check of the router's outputs read sealed share records as clear ones once sealing became the
default. Its own check (each record reaches each partner exactly once) runs inside it."""

import json
import subprocess
import sys
from pathlib import Path


def test_pipeline_bench_runs_every_row_and_saves() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.pipeline", "--events", "200", "--scale", ""],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = Path(result.stdout.strip().splitlines()[-1].removeprefix("saved "))
    figures = json.loads(saved.read_text())
    saved.unlink()
    assert figures["events"] == 200
    assert set(figures["rows"]) == {
        "faust_passthrough",
        "confluent_passthrough",
        "router_alpr_2_partners",
        "router_rms_encrypted_2_partners",
        "lone_read_searchable",
    }
    assert figures["ratio"]["router_to_faust_passthrough"] > 0
    lone = figures["rows"]["lone_read_searchable"]
    assert len(lone["tries_ms"]) == 5 and max(lone["tries_ms"]) == lone["max_ms"]
    # The publication and the router's hop are parts of each try (the bench's reader of the
    # share topic may see the record a moment after the index has it, hence the margin).
    parts = zip(lone["published_ms"], lone["routed_ms"], lone["tries_ms"], strict=True)
    assert all(p < t + 100 and r < t + 100 for p, r, t in parts)
