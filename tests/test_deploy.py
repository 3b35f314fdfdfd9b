"""deploy/: the Prometheus config and alert rules are valid, their unit tests pass, and every
metric they and the Grafana dashboard use is one mutualaid exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import mutualaid.metrics  # noqa: F401  (registers every metric)

PROMETHEUS = Path(__file__).parent.parent / "deploy" / "prometheus"
promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None, reason="promtool not installed (apt-get install prometheus; .ci/run does)"
)


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert promtool is not None
    return subprocess.run(
        [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )


@needs_promtool
@pytest.mark.parametrize("config", ["prometheus.yml", "compose.yml"])
def test_config_and_rules_are_valid(config: str) -> None:
    checked = run_promtool("check", "config", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout


@needs_promtool
def test_alert_rules_fire_when_and_only_when_they_should() -> None:
    tested = run_promtool("test", "rules", "rules_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}


@pytest.mark.parametrize("path", ["prometheus/rules.yml", "grafana/mutualaid.json"])
def test_rules_and_dashboard_use_only_metrics_mutualaid_exports(path: str) -> None:
    # Series names as Prometheus stores them (labelled metrics have no samples until used).
    exported = {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in SUFFIXES.get(family.type, [""])
    }
    used = set(re.findall(r"\bmutualaid_[a-z_]+", (PROMETHEUS.parent / path).read_text()))
    assert len(used) >= 5, used
    assert used <= exported, f"not exported: {sorted(used - exported)}"
