"""The benchmark command runs and saves its figures (the figures themselves are not judged here)."""

import json
import subprocess
import sys
from pathlib import Path

from support.pgserver import postgres_bindir


def test_bench_prints_and_saves_every_row() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--events", "400", "--index-size", "2000"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    saved = Path(result.stdout.strip().splitlines()[-1].removeprefix("saved "))
    figures = json.loads(saved.read_text())
    saved.unlink()
    assert figures["events"] == 400
    assert set(figures["per_second"]) == {
        "baseline_avro_decode_encode",
        "connector_map_and_encode",
        "router_route",
        "router_route_sealed",
        "router_cpu_unsigned",
        "router_cpu_signed_per_batch",
        "router_cpu_signed_per_record",
        "index_apply",
        "router_rms_plain",
        "router_rms_encrypted",
        "router_rms_plain_sealed",
        "router_rms_encrypted_sealed",
    }
    assert set(figures["sealed_over_unsealed"]) == {"alpr", "rms_plain", "rms_encrypted"}
    assert all(rate > 0 for rate in figures["per_second"].values())
    assert figures["ratio"]["baseline_avro_decode_encode"] == 1.0
    assert figures["index_size"] == 2000
    backends = [figures["search"]]
    if postgres_bindir() is not None:  # same data and searches on a throwaway server
        backends.append(figures["search_postgresql"])
    for search in backends:
        assert search["index_projection_docs_per_second"] > 0
        assert 0 < search["search_p50_ms"] <= search["search_p99_ms"]
        assert 0 < search["audited_search_p50_ms"] <= search["audited_search_p99_ms"]
        assert 0 < search["kept_open_search_p50_ms"] <= search["kept_open_search_p99_ms"]
