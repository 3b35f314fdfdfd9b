"""``mutualaid up``: the whole embedded stack on one machine, with demo data if asked.

It starts the broker (the embedded Tansu, or with ``--broker kafka`` Apache Kafka from the
Maven cache), then every stage as its own process (as production runs them), watches
their progress through their own Prometheus endpoints, and on Ctrl-C stops them in reverse
order. The embedded broker keeps data in memory, so each ``up`` starts with empty topics: the
connectors' checkpoints are reset and the demo is published again; the indexes, which are
idempotent by record id and version, end up the same.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from mutualaid.agencies import Agency, load_registry
from mutualaid.auditlog import audit_stages, ensure_stage_keys
from mutualaid.broker import BrokerError, EmbeddedBroker, port_is_free
from mutualaid.crypto import generate_keypair, newest_public_key
from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.kafkaserver import KafkaCluster, KafkaServerError, KafkaUnavailable, kafka_version
from mutualaid.policy import load_policy_from
from mutualaid.processes import spawn, stop
from mutualaid.settings import Settings
from mutualaid.topics import topics_for

DEMO_SEED = 2411
DEMO_REASON = "case 24-001"
DEMO_DISPATCHER = "demo.dispatcher"
DEMO_ANALYST = "demo.analyst"
DEMO_AGENCY = "CA0990100"  # whose search the demo suggests, and whose search page it serves
STATUS_EVERY_SECONDS = 1.0


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path
    report: Path | None = None  # connectors end when their file is done, leaving a report


@dataclass
class Totals:
    """What the children report through Prometheus, summed."""

    published: float = 0
    dead_letters: float = 0
    routed_in: float = 0
    shared: float = 0
    projected: float = 0
    alerts: float = 0


def run_up(
    settings: Settings,
    *,
    demo: bool,
    reads: int,
    exit_when_done: bool,
    broker_kind: str = "tansu",
) -> int:
    registry = load_registry(settings.agencies_file)
    load_policy_from(settings, registry)  # refuse to start on a bad agreement or rule
    if settings.audit_signing:  # the stages sign their audit records and need their keys
        stage_keys = ensure_stage_keys(settings, audit_stages(settings, registry.oris))
        if stage_keys:
            print(
                f"audit keys  {len(stage_keys)} stage key(s) made; public in {stage_keys[0].parent}"
            )
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # A memory broker starts empty: positions saved against the previous one mean nothing.
    shutil.rmtree(settings.data_dir / "checkpoints", ignore_errors=True)

    started = time.monotonic()
    try:
        broker, described = _start_broker(broker_kind, settings, logs)
    except (BrokerError, KafkaUnavailable, KafkaServerError) as exc:
        print(f"mutualaid up: {exc}", file=sys.stderr)
        return 1
    children: list[Child] = []
    stopping = _stop_requested()
    try:
        ensure_topics(
            wait_for_broker(broker.bootstrap_servers),
            topics_for(registry.oris, settings.partitions, settings.retention),
            settings.replication_factor,
        )
        print(f"broker      {broker.bootstrap_servers} ({described})", flush=True)
        env = {"MUTUALAID_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
        # Consecutive ports from metrics_port, skipping any another program holds; 0: none.
        candidates = range(settings.metrics_port, settings.metrics_port + 1000)
        free = (p for p in candidates if port_is_free("127.0.0.1", p))
        ports = free if settings.metrics_port else itertools.repeat(0)

        def start(name: str, argv: list[str], report: Path | None = None) -> None:
            port = next(ports)
            log = logs / f"{name}.log"
            proc = spawn(
                [sys.executable, "-m", "cli", *argv],
                log=log,
                env={**env, "MUTUALAID_METRICS_PORT": str(port)},
            )
            children.append(Child(name, proc, port, log, report))
            print(
                f"{name:<11} pid {proc.pid}, metrics http://127.0.0.1:{port}/metrics, "
                f"log {logs / (name + '.log')}",
                flush=True,
            )

        data = write_demo(settings.data_dir / "demo", registry.agencies, reads) if demo else None
        if data is not None:
            for ori, path in data.hotlists.items():
                _run_once(["hotlist", "load", "--agency", ori, str(path)], env, logs)
            print(f"hotlists    {len(data.hotlists)} demo NCIC extracts loaded", flush=True)
            made = _demo_keys(settings, registry.oris)
            sealed = f"share topics sealed to each agency's key ({made} made now)"
            print(f"keys        {sealed}", flush=True)
        start("router", ["router"])
        start("matcher", ["matcher"])
        for agency in registry.agencies:
            start(f"project-{agency.ori.lower()}", ["project", "--agency", agency.ori])
        consoles = {}
        for n, agency in enumerate(a for a in registry.agencies if a.dispatch_center):
            port = settings.console_port + n
            start(f"console-{agency.ori.lower()}", _console_argv(agency.ori, port))
            consoles[agency.ori] = f"http://127.0.0.1:{port}"
        for ori in _webhook_agencies(settings, registry.oris):
            start(f"webhooks-{ori.lower()}", ["webhooks", "--agency", ori])
        login = _demo_login(settings, consoles) if demo and consoles else ""
        if demo and DEMO_AGENCY in registry.oris:
            port = settings.api_port
            start(
                f"api-{DEMO_AGENCY.lower()}", ["api", "--agency", DEMO_AGENCY, "--port", str(port)]
            )
            login += _demo_search_login(settings, DEMO_AGENCY, f"http://127.0.0.1:{port}")
        expected = 0
        hot_plate = None
        if data is not None:
            hot_plate = data.plate
            for ori, path in data.reads.items():
                report = logs / f"alpr-{ori.lower()}.json"
                report.unlink(missing_ok=True)
                argv = ["connect", "alpr", "--agency", ori, "--source", str(path)]
                start(f"alpr-{ori.lower()}", [*argv, "--report", str(report)], report=report)
            expected = reads * len(data.reads)

        def reports() -> str:
            out = settings.data_dir / "transparency"
            return _transparency_reports(registry.oris, out, env, logs) if demo else ""

        return _watch(
            children, started, expected, hot_plate, login, exit_when_done, stopping, reports
        )
    finally:
        for child in reversed(children):
            stop(child.proc, timeout=10.0)
        broker.stop()
        print("stopped: broker and all stages", flush=True)


def _start_broker(
    kind: str, settings: Settings, logs: Path
) -> tuple[EmbeddedBroker | KafkaCluster, str]:
    """The local broker ``up`` runs, started, and how to describe it. Either starts empty:
    Tansu keeps nothing, and Apache Kafka's data directory is made anew, so both run the
    demo the same way."""
    if kind == "tansu":
        return EmbeddedBroker(settings.broker_port, log=logs / "broker.log").start(), (
            "embedded Tansu, in memory"
        )
    root = settings.data_dir / "kafka"
    shutil.rmtree(root, ignore_errors=True)
    cluster = KafkaCluster(nodes=1, port=settings.broker_port, root=root).start()
    (rss,) = cluster.memory().values()
    (node,) = cluster.members
    pid = node.proc.pid if node.proc else None
    return cluster, (
        f"Apache Kafka {kafka_version()}, KRaft, java pid {pid}, "
        f"up in {cluster.started_in:.0f}s, {rss / 2**20:.0f} MiB; log {node.log}"
    )


def _stop_requested() -> list[bool]:
    flag = [False]

    def handler(*_: object) -> None:
        flag[0] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return flag


def _watch(
    children: list[Child],
    started: float,
    expected: int,
    hot_plate: str | None,
    login: str,
    exit_when_done: bool,
    stopping: list[bool],
    reports: Callable[[], str] = lambda: "",
) -> int:
    first_searchable: float | None = None
    done_at: float | None = None
    # A connector's endpoint goes away when it finishes: keep what it last reported.
    last: dict[str, Totals] = {}
    while not stopping[0]:
        time.sleep(STATUS_EVERY_SECONDS)
        for child in children:
            code = child.proc.poll()
            if code is not None and (code != 0 or child.report is None):
                print(
                    f"\n{child.name} exited with code {code}: {_last_line(child.log)}\n"
                    f"(whole log: {child.log}). Stopping.",
                    file=sys.stderr,
                )
                return 1
        # Before observing: a connector seen finished here has its report read just below,
        # where one that finished after would count as done with what it last served (once
        # nothing, and the demo was declared indexed at 0/1,200, tests/test_up.py in CI).
        connectors_done = all(c.proc.poll() == 0 for c in children if c.report)
        for child in children:
            last[child.name] = observe(child) or last.get(child.name, Totals())
        totals = add(list(last.values()))
        elapsed = time.monotonic() - started
        if first_searchable is None and totals.projected > 0:
            first_searchable = elapsed
        print(
            f"[{elapsed:6.1f}s] published {totals.published:,.0f}"
            f"{f'/{expected:,}' if expected else ''}  dead letters {totals.dead_letters:,.0f}  "
            f"routed {totals.routed_in:,.0f} -> shared {totals.shared:,.0f}  "
            f"indexed {totals.projected:,.0f}  hit alerts {totals.alerts:,.0f}",
            flush=True,
        )
        if (
            expected
            and done_at is None
            and connectors_done
            and totals.routed_in >= totals.published
            # Each agency's projector indexes its own records as well as what was shared.
            and totals.projected >= totals.shared + totals.published
        ):
            done_at = elapsed
            print(
                f"\nDemo data indexed after {done_at:.1f}s; first read searchable after "
                f"{first_searchable or done_at:.1f}s. Try (in another terminal):\n"
                f"  {_command()} search --agency {DEMO_AGENCY} --plate {hot_plate} "
                f'--reason "{DEMO_REASON}"\n'
                f"An agency without an agreement sees nothing:\n"
                f"  {_command()} search --agency DC0990400 --plate {hot_plate} "
                f'--reason "{DEMO_REASON}"\n'
                f"{login}"
                f"{reports()}"
                "Ctrl-C stops everything.\n",
                flush=True,
            )
            if exit_when_done:
                return 0
    return 0


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(its log is empty)"


def _command() -> str:
    """How to run mutualaid from here: plain if it is on PATH, else the venv's, relative."""
    local = Path(sys.executable).parent / "mutualaid"
    found = shutil.which("mutualaid")
    if found and Path(found).resolve() == local.resolve():
        return "mutualaid"
    try:
        return str(local.relative_to(Path.cwd()))
    except ValueError:
        return str(local)


def scrape(child: Child) -> Totals | None:
    """The counters one child exposes, or None if it is not serving (yet, or any more)."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{child.metrics_port}/metrics", timeout=0.5
        ) as response:
            text = response.read().decode()
    except OSError:
        return None
    totals = Totals()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            stage = sample.labels.get("stage")
            if sample.name == "mutualaid_events_out_total" and stage == "producers":
                totals.published += sample.value
            elif sample.name == "mutualaid_events_in_total" and stage == "streams":
                totals.routed_in += sample.value
            elif sample.name == "mutualaid_events_out_total" and stage == "streams":
                totals.shared += sample.value
            elif sample.name == "mutualaid_events_in_total" and stage == "consumers":
                totals.projected += sample.value
            elif sample.name == "mutualaid_hits_total":
                totals.alerts += sample.value
            elif sample.name == "mutualaid_dead_letters_total":
                totals.dead_letters += sample.value
    return totals


def observe(child: Child) -> Totals | None:
    """A finished connector's final report, or what a running child's endpoint says."""
    if child.report is not None and child.proc.poll() == 0:
        final = json.loads(child.report.read_text())
        return Totals(published=final["published"], dead_letters=final["rejected"])
    return scrape(child)


def add(parts: list[Totals]) -> Totals:
    return Totals(**{f: sum(getattr(p, f) for p in parts) for f in Totals.__dataclass_fields__})


def _console_argv(ori: str, port: int) -> list[str]:
    return ["console", "--agency", ori, "--port", str(port)]


def _webhook_agencies(settings: Settings, oris: list[str]) -> list[str]:
    """Agencies with an endpoint in the webhooks file (a bad file stops `up` here)."""
    if settings.webhooks_file is None:
        return []
    from consumers.alerts.webhooks import load_endpoints

    loopback = settings.webhooks_allow_http_loopback
    return [
        ori
        for ori in oris
        if load_endpoints(settings.webhooks_file, ori, allow_http_loopback=loopback)
    ]


def _demo_keys(settings: Settings, oris: list[str]) -> int:
    """A key pair for each demo agency that has none, so the router seals every share topic
    (share_sealing) as it would between real agencies; returns how many were made."""
    missing = [o for o in oris if newest_public_key(o, settings.public_keys_dir) is None]
    for ori in missing:
        generate_keypair(ori, settings.public_keys_dir, settings.private_keys_dir)
    return len(missing)


def _demo_login(settings: Settings, consoles: dict[str, str]) -> str:
    """A fresh console login for the demo's first dispatch center, as words to print."""
    from mutualaid import tokens

    ori, url = next(iter(consoles.items()))
    tokens.revoke(settings.console_users_file, ori, DEMO_DISPATCHER)
    token = tokens.issue(settings.console_users_file, ori, DEMO_DISPATCHER)
    return (
        f"Live hit alerts for {ori}: open {url} and log in as {DEMO_DISPATCHER} with token\n"
        f"  {token}\n"
    )


def _demo_search_login(settings: Settings, ori: str, url: str) -> str:
    """A fresh search-page sign-in for the demo agency, as words to print."""
    from mutualaid import tokens

    tokens.revoke(settings.api_users_file, ori, DEMO_ANALYST)
    token = tokens.issue(settings.api_users_file, ori, DEMO_ANALYST)
    return (
        f"Search page for {ori} (its own records and its partners'): open {url} and sign in "
        f"as {DEMO_ANALYST} with token\n  {token}\n"
    )


def _transparency_reports(oris: list[str], out: Path, env: dict[str, str], logs: Path) -> str:
    """Each agency's public transparency report written to ``out``, all at once, as words to
    print; one that fails is named with its log and does not stop the demo."""
    log = logs / "transparency.log"
    command = [sys.executable, "-m", "cli", "transparency"]
    with open(log, "ab") as sink:
        procs = {
            ori: subprocess.Popen(
                [*command, "--agency", ori, "--out", str(out / ori.lower())],
                env={**os.environ, **env},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
            for ori in oris
        }
    lines = [f"Transparency reports (public; `{_command()} transparency` writes them anew):"]
    for ori, proc in procs.items():
        written = proc.wait(timeout=120) == 0
        page = out / ori.lower() / "index.html"
        lines.append(f"  {ori}: {page}" if written else f"  {ori}: not written, see {log}")
    return "\n".join(lines) + "\n"


def _run_once(argv: list[str], env: dict[str, str], logs: Path) -> None:
    """A one-shot mutualaid command (e.g. a hotlist load); its output goes to its log."""
    log = logs / f"{argv[0]}-{argv[1]}.log"
    with open(log, "ab") as out:
        subprocess.run(
            [sys.executable, "-m", "cli", *argv],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )


@dataclass(frozen=True)
class DemoData:
    reads: dict[str, Path]  # ORI -> ALPR export
    hotlists: dict[str, Path]  # ORI of a dispatch center -> NCIC-style extract
    plate: str  # a vehicle seen often, everywhere, and on a hotlist: the plate to search


def write_demo(directory: Path, agencies: list[Agency], reads: int) -> DemoData:
    """One ALPR export per agency with cameras, from a shared pool of vehicles, and a hotlist
    extract per dispatch center naming a few of those vehicles.

    The same vehicles pass cameras of several agencies, which is what makes sharing worth it.
    Deterministic, so a second ``up --demo`` republishes the very same reads.
    """
    from producers.samples import cameras_for, plate_pool, write_alpr_csv, write_hotlist_csv

    rng = random.Random(DEMO_SEED)
    directory.mkdir(parents=True, exist_ok=True)
    with_cameras = [a for a in agencies if a.jurisdiction is not None and a.type != "federal"]
    pool = plate_pool(sorted({a.state for a in with_cameras}), 2000, rng)
    hot = pool[0]
    weighted = pool + [hot] * 4  # one vehicle seen often, everywhere: the plate to search
    # Reads come every 1-40 s (20 s on average): end them about now.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=20 * reads)
    files = {}
    for agency in with_cameras:
        j = agency.jurisdiction
        assert j is not None  # with_cameras holds only agencies with a jurisdiction
        cameras = cameras_for(agency.ori, (j.latitude, j.longitude), 6, rng)
        path = directory / f"{agency.ori.lower()}-alpr.csv"
        write_alpr_csv(path, agency.ori, cameras, weighted, reads, start, rng)
        files[agency.ori] = path
    extracts = {}
    centers = [a for a in with_cameras if a.dispatch_center]
    for n, agency in enumerate(centers):
        listed = pool[1 + 3 * n : 4 + 3 * n] + ([hot] if n == 0 else [])
        path = directory / f"{agency.ori.lower()}-hotlist.csv"
        write_hotlist_csv(path, listed, start - timedelta(days=2), rng)
        extracts[agency.ori] = path
    return DemoData(files, extracts, hot[0])
