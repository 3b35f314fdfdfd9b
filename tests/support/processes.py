"""Stages and commands run as processes, as operators run them, and polling them."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mutualaid.broker import free_port
from mutualaid.processes import spawn, stop
from support.regions import Region


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@contextmanager
def running_stages(
    region: Region, logs: Path, projected: list[str]
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """The router and a projector per agency in ``projected``, as `mutualaid up` runs them
    (yielded by name: router, project-<ori>)."""
    base = [sys.executable, "-m", "cli", "--config", str(region.config_file)]
    argvs = {"router": ["router"]}
    for ori in projected:
        argvs[f"project-{ori}"] = ["project", "--agency", ori]
    logs.mkdir(parents=True, exist_ok=True)
    # Info: a failure's message then tells which stage got how far (stage_report).
    env = {"MUTUALAID_LOG_LEVEL": "info"}
    procs = {
        name: spawn(base + argv, log=logs / f"{name}.log", env=env) for name, argv in argvs.items()
    }
    try:
        yield procs
    except AssertionError as failed:
        # CI shows a failure's message, not the stages' log files: carry their last lines.
        raise AssertionError(f"{failed}\n{stage_report(procs, logs)}") from failed
    finally:
        for proc in procs.values():
            stop(proc, timeout=10)


def stage_report(procs: dict[str, subprocess.Popen[bytes]], logs: Path, lines: int = 6) -> str:
    """Per stage in ``procs`` (its log is ``logs/<name>.log``): running or its exit code, its
    last warning and error lines, and its last lines (a traceback, or how far it got)."""
    parts = []
    for name, proc in procs.items():
        state = "running" if proc.poll() is None else f"exited {proc.returncode}"
        parts += _log_summary(f"{name}: {state}", logs / f"{name}.log", lines)
    return "\n".join(parts)


def logs_report(logs: Path, lines: int = 6) -> str:
    """``stage_report`` for every log in ``logs``, of stages another process started."""
    parts = []
    for path in sorted(logs.glob("*.log")):
        parts += _log_summary(path.stem, path, lines)
    return "\n".join(parts)


def _log_summary(title: str, path: Path, lines: int) -> list[str]:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    errors = [line for line in text if "ERROR" in line or "Error" in line or "WARN" in line]
    parts = [f"{title}; {len(errors)} error lines, the last:"]
    parts += ["    " + line[:300] for line in errors[-lines:]]
    parts.append(f"  its last {min(lines, len(text))} lines:")
    parts += ["    " + line[:300] for line in text[-lines:]]
    return parts


def mutualaid_cli(region: Region, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a mutualaid command against the region's settings, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "cli", "--config", str(region.config_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def metric(port: int, sample: str) -> float | None:
    """The value of one Prometheus sample (name and labels as exposed) a stage serves on
    ``port``; None if it is not there, or nothing answers yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


@contextmanager
def serving(config_file: Path, argv: list[str], log: Path) -> Iterator[str]:
    """A mutualaid HTTP stage run as a process (``argv`` gets ``--port``/``--listen`` here),
    yielded as its base URL once /healthz answers."""
    port = free_port()
    address = ["--listen", f"127.0.0.1:{port}"] if "--listen" in argv else ["--port", str(port)]
    argv = [a for a in argv if a != "--listen"]
    base = [sys.executable, "-m", "cli", "--config", str(config_file)]
    proc = spawn([*base, *argv, *address], log=log)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_for(healthy, 30, f"{' '.join(argv)} to serve")
        yield url
    finally:
        stop(proc, timeout=10)


def token_for(region: Region, users: str, agency: str, user: str) -> str:
    """A fresh token for ``user`` of ``agency``, issued as an operator would (``users``:
    console-user, api-user, camera)."""
    issued = mutualaid_cli(region, users, "add", "--agency", agency, "--user", user)
    assert issued.returncode == 0, issued.stderr
    return issued.stdout.strip().splitlines()[-1]
