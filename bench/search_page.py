"""The search page's time to first result, in real headless Chromium against `mutualaid api`.

    python -m bench.search_page [--index-size 100000] [--searches 30]

An agency's SQLite index is filled with ``index-size`` plate reads (half its own, half a
partner's), `mutualaid api` serves it as its own process, and Chromium (Debian's, driven by
playwright) opens the page, signs in with an API token and searches. Two figures: from opening
the page to the first result shown (load, sign-in, first search), and, signed in, from pressing
Search to the results shown (p50, p95 over ``searches`` plates: the audited search, its JSON,
and drawing the table, the plot and the time line).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import percentile, save
from consumers.index import open_index
from consumers.own import own_copy
from mutualaid import tokens
from mutualaid.broker import free_port
from mutualaid.disclosure import new_disclosure
from mutualaid.events import new_envelope
from mutualaid.processes import spawn, stop
from mutualaid.settings import Settings
from mutualaid.topics import Kind
from producers import samples

ORI, PARTNER = "CA0990100", "NV0990300"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def fill(settings: Settings, size: int, plates: list[str]) -> None:
    rng, at = random.Random(5), datetime(2026, 11, 24, tzinfo=UTC)
    index = open_index(settings, ORI)
    try:
        for first in range(0, size, 5000):
            batch = []
            for n in range(first, min(first + 5000, size)):
                owner = ORI if n % 2 else PARTNER
                event = {
                    "envelope": new_envelope(
                        source_ori=owner, source_system="bench", kind=Kind.ALPR_READ,
                        record_id=f"R{n}", version=1, occurred_at=at + timedelta(seconds=n),
                        now=at,
                    ),
                    "body": {
                        "plate": rng.choice(plates), "plate_state": "CA",
                        "camera_name": f"camera {n % 40}",
                        "latitude": 38.9 + rng.random() / 10,
                        "longitude": -120 + rng.random() / 10,
                    },
                }  # fmt: skip
                if owner == ORI:
                    batch.append(own_copy(event, ORI))
                else:
                    batch.append({**event, "disclosure": new_disclosure(ORI, ("a", 1))})
            index.apply(batch)
    finally:
        index.close()


def main(size: int, searches: int) -> dict:
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="mutualaid-bench-page-"))
    rng = random.Random(9)
    plates = [p for p, _ in samples.plate_pool(["CA", "NV"], max(size // 10, 10), rng)]
    settings = Settings(data_dir=tmp / "var")
    print(f"mutualaid bench.search_page: {size:,} reads indexed, {searches} searches in Chromium")
    began = time.perf_counter()
    fill(settings, size, plates)
    print(f"  index filled in {time.perf_counter() - began:.1f}s")
    secret = tokens.issue(settings.api_users_file, ORI, "bench.analyst")
    port = free_port()
    env = {**os.environ, "MUTUALAID_DATA_DIR": str(tmp / "var")}
    api = spawn(
        [sys.executable, "-m", "cli", "api", "--agency", ORI, "--port", str(port)],
        log=tmp / "api.log",
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp / "api.log").read_text()
                time.sleep(0.1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1366, "height": 900})

            def search(plate: str, reason: str) -> None:
                page.fill("input[name=reason]", reason)
                page.fill("input[name=plate]", plate)
                page.click("form#search button[type=submit]")
                page.wait_for_selector(f"#count:has-text('for \"{reason}\"')", timeout=30_000)
                page.wait_for_selector("[data-testid=result]", timeout=30_000)

            opened = time.perf_counter()
            page.goto(url)
            page.fill("input[name=user]", "bench.analyst")
            page.fill("input[name=token]", secret)
            page.click("form#login button[type=submit]")
            page.wait_for_selector("form#search:visible", timeout=30_000)
            search(plates[0], "BENCH-0")
            cold_ms = (time.perf_counter() - opened) * 1000
            took = []
            for i in range(1, searches + 1):
                started = time.perf_counter()
                search(plates[i % len(plates)], f"BENCH-{i}")
                took.append((time.perf_counter() - started) * 1000)
            browser.close()
    finally:
        stop(api, timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    figures = {
        "index_size": size,
        "searches": searches,
        "open_to_first_result_ms": cold_ms,
        "search_to_results_p50_ms": percentile(took, 0.5),
        "search_to_results_p95_ms": percentile(took, 0.95),
    }
    print(
        f"  page opened to first result (load, sign-in, search): {cold_ms:,.0f} ms\n"
        f"  Search pressed to results shown: p50 {figures['search_to_results_p50_ms']:.0f} ms, "
        f"p95 {figures['search_to_results_p95_ms']:.0f} ms"
    )
    save(figures, "search-page-")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-size", type=int, default=100_000, help="reads indexed (100,000)")
    parser.add_argument("--searches", type=int, default=30, help="searches timed (30)")
    args = parser.parse_args()
    main(args.index_size, args.searches)
