"""The alert benchmark runs end to end and saves its figures (the figures are not judged here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.brokers import selected_brokers


@pytest.mark.parametrize("broker", selected_brokers())  # one Kafka node started by the bench
def test_alert_bench_measures_every_hit_and_saves(broker: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.alerts",
            "--entries",
            "5000",
            "--rate",
            "200",
            "--seconds",
            "5",
            "--broker",
            broker,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    saved = Path(result.stdout.strip().splitlines()[-1].removeprefix("saved "))
    figures = json.loads(saved.read_text())
    saved.unlink()
    assert figures["entries"] == 5000 and figures["broker"] == broker
    assert figures["hits_sent"] > 0
    assert figures["alerts_received"] == figures["hits_sent"]
    assert 0 < figures["read_to_alert_p50_ms"] <= figures["read_to_alert_p99_ms"]
    assert figures["alerts_on_console"] == figures["hits_sent"]
    assert 0 < figures["read_to_console_p50_ms"] <= figures["read_to_console_p99_ms"]
    assert 0 < figures["baseline_kafka_hop_p50_ms"] <= figures["baseline_kafka_hop_p99_ms"]
    assert figures["matcher_rss_mb"] > 0 and figures["matcher_rss_empty_mb"] > 0
