"""The quick start itself: `mutualaid up --demo`, a search while it runs, and Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from mutualaid.broker import EmbeddedBroker, free_port
from mutualaid.kafkaserver import KafkaUnavailable, install, java_binary
from support.processes import logs_report, wait_for


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent's wait is missing.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


@pytest.mark.parametrize("local_broker", ["tansu", "kafka"])
def test_up_demo_flows_is_searchable_and_stops_without_orphans(
    tmp_path: Path, local_broker: str
) -> None:
    if local_broker == "kafka":
        try:
            java_binary(), install()
        except KafkaUnavailable as exc:
            pytest.skip(f"Apache Kafka cannot run here: {exc}")
    env = {
        **os.environ,
        "MUTUALAID_BROKER_PORT": str(free_port()),
        # up hands out consecutive ports from these: a metrics port per stage, a console port
        # per dispatch center.
        "MUTUALAID_METRICS_PORT": str(free_port(span=20)),
        "MUTUALAID_CONSOLE_PORT": str(free_port(span=5)),
        "MUTUALAID_API_PORT": str(free_port()),
        "MUTUALAID_DATA_DIR": str(tmp_path / "var"),
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "up.log"
    argv = [sys.executable, "-m", "cli", "up", "--demo", "--reads", "400"]
    with open(log, "w") as out:
        up = subprocess.Popen(
            [*argv, "--broker", local_broker],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:

        def indexed() -> bool:
            assert up.poll() is None, f"up exited with {up.returncode}:\n{log.read_text()}"
            return "Try (in another" in log.read_text()

        wait_for(indexed, 180, "the demo to be indexed")
        text = log.read_text()
        command = re.search(r"search --agency CA0990100 --plate (\w+)", text)
        assert command, text
        search = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "search",
                "--agency",
                "CA0990100",
                "--plate",
                command.group(1),
                "--reason",
                "case 24-001",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert search.returncode == 0, search.stderr
        count = int(search.stdout.split()[0])
        assert count > 0, search.stdout
        assert " from CA0990200 " in search.stdout or " from NV0990300 " in search.stdout
        # Its own reads are not shared to itself: it holds them from its own topic, marked.
        own = [line for line in search.stdout.splitlines() if " from CA0990100 " in line]
        assert all("(own)" in line for line in own), search.stdout
        assert re.search(r"published 1,200/1,200 {2}dead letters 0", text)
        # Each CA agency receives the other's 400 reads and Desert Springs' 400, and every
        # agency with cameras holds its own 400; nobody else holds anything.
        counts = {}
        for ori in ("ca0990100", "ca0990200", "nv0990300", "dc0990400"):
            with sqlite3.connect(tmp_path / "var" / "index" / f"{ori}.sqlite") as db:
                counts[ori] = db.execute("select count(*) from records").fetchone()[0]
        assert counts == {"ca0990100": 1200, "ca0990200": 1200, "nv0990300": 400, "dc0990400": 0}

        # Each agency's transparency report is written, and says what its agreements share.
        report = re.search(r"CA0990100: (\S+index\.html)", text)
        assert report, text
        assert "Transparency report: " in Path(report.group(1)).read_text()
        assert len(re.findall(r"  [A-Z]{2}\d{7}: \S+index\.html", text)) == 4

        # The demo's hotlists name some of those vehicles: dispatch centers get hit alerts.
        def alerts() -> int:
            found = re.findall(r"hit alerts ([\d,]+)", log.read_text())
            return int(found[-1].replace(",", "")) if found else 0

        wait_for(alerts, 60, "hit alerts from the demo hotlists")

        # The printed console login works, and the console holds Riverbend's alerts.
        login = re.search(r"open (http://\S+) and log in as (\S+) with token\n\s+(\S+)", text)
        assert login, text
        url, user, token = login.groups()
        request = urllib.request.Request(
            f"{url}/login",
            data=json.dumps({"user": user, "token": token}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response) == {"user": user, "agency": "CA0990100"}

        # The printed search-page sign-in works: the page, and a search with own and partner
        # records in one answer.
        page = re.search(r"open (http://\S+) and sign in as (\S+) with token\n\s+(\S+)", text)
        assert page, text
        url, user, token = page.groups()
        with urllib.request.urlopen(url, timeout=10) as response:
            assert '<form id="search"' in response.read().decode()
        query = urllib.parse.urlencode({"plate": command.group(1), "reason": "case 24-001"})
        request = urllib.request.Request(
            f"{url}/search?{query}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
        assert answer["user"] == user == "demo.analyst"
        assert answer["count"] == count
    except AssertionError:
        print(logs_report(tmp_path / "var" / "logs"))  # pytest shows it beside the failure
        raise
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=60)
    output = log.read_text()
    pids = [int(p) for p in re.findall(r"pid (\d+)", output)]
    # router, matcher, a projector per agency, a console per dispatch center, a connector per
    # agency with cameras, the demo agency's search API; Apache Kafka's JVM
    assert len(pids) == 1 + 1 + 4 + 3 + 3 + 1 + (local_broker == "kafka")
    assert code == 0, output
    assert "stopped: broker and all stages" in output
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if alive(p)], "orphaned stage processes"


def projector_failing_with(tmp_path: Path, **settings: str) -> str:
    """Start a projector with these MUTUALAID_* settings; it must fail at once, with one line
    for the operator and no traceback. Returns what it printed."""
    env = {**os.environ, "MUTUALAID_DATA_DIR": str(tmp_path / "var")}
    env |= {f"MUTUALAID_{k.upper()}": v for k, v in settings.items()}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "project", "--agency", "CA0990100"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    return done.stderr


def test_a_stage_whose_metrics_port_is_taken_says_so(
    tmp_path: Path, broker: EmbeddedBroker
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        said = projector_failing_with(
            tmp_path, metrics_port=str(port), bootstrap_servers=broker.bootstrap_servers
        )
    assert f"cannot serve metrics on 127.0.0.1:{port}" in said


def test_a_stage_without_a_broker_says_where_it_looked(tmp_path: Path) -> None:
    said = projector_failing_with(tmp_path, bootstrap_servers=f"127.0.0.1:{free_port()}")
    assert "no Kafka broker answered at 127.0.0.1:" in said


def test_up_stops_when_a_stage_fails_and_says_why(tmp_path: Path) -> None:
    console_port = free_port(span=3)
    env = {
        **os.environ,
        "MUTUALAID_BROKER_PORT": str(free_port()),
        "MUTUALAID_METRICS_PORT": str(free_port(span=20)),
        "MUTUALAID_CONSOLE_PORT": str(console_port),
        "MUTUALAID_DATA_DIR": str(tmp_path / "var"),
    }
    with socket.socket() as holder:  # Riverbend's console cannot have its port
        holder.bind(("127.0.0.1", console_port))
        holder.listen()
        done = subprocess.run(
            [sys.executable, "-m", "cli", "up", "--demo", "--reads", "10"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert done.returncode == 1, done.stdout
    said = re.search(
        r"console-ca0990100 exited with code \d+: (.+)\n\(whole log: (\S+)\)", done.stderr
    )
    assert said, done.stderr
    assert "address already in use" in said.group(1)
    assert Path(said.group(2)) == tmp_path / "var" / "logs" / "console-ca0990100.log"
    assert "stopped: broker and all stages" in done.stdout
