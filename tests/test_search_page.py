"""The analyst's search page, served by `mutualaid api`, in real headless Chromium: sign in with
the API token, a search refused without a reason, results with a detail view, the plate's path
on a plot and a time line, a CSV download that is itself logged, a pointer result saying whom
to call, the agency's own records marked as its own, another agency refused."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from consumers.index import open_index
from consumers.own import own_copy
from mutualaid.crypto import generate_hash_key, load_hash_key
from mutualaid.disclosure import new_disclosure
from mutualaid.events import new_envelope
from mutualaid.pointers import FoundBy, match_keys
from mutualaid.topics import Kind
from support.browser import needs_chromium, sign_in
from support.indexes import index_rows
from support.processes import serving, token_for
from support.regions import Region

pytestmark = needs_chromium
# Set MUTUALAID_SCREENSHOT=docs/search-page.png to refresh the README's picture.
SCREENSHOT = os.environ.get("MUTUALAID_SCREENSHOT")
START = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
# A vehicle's evening: three reads by two agencies' cameras, an hour apart, heading north-east.
READS = [
    ("neighbour", "N-1", 38.955, -119.945, "Stateline & Hwy 50"),
    ("local", "L-1", 38.962, -119.931, "Main St & Pioneer Trl"),
    ("neighbour", "N-2", 38.971, -119.917, "Kingsbury Grade"),
]


def shared_read(region: Region, owner: str, record_id: str, lat: float, lon: float,
                camera: str, hours: int) -> dict:  # fmt: skip
    at = START + timedelta(hours=hours)
    return {
        "envelope": new_envelope(
            source_ori=getattr(region, owner),
            source_system="t",
            kind=Kind.ALPR_READ,
            record_id=record_id,
            version=1,
            occurred_at=at,
            now=at,
        ),
        "disclosure": new_disclosure(region.county, ("a", 1)),
        "body": {
            "plate": "7ABC123",
            "plate_state": "CA",
            "latitude": lat,
            "longitude": lon,
            "camera_name": camera,
            "vehicle_make": "Kia",
            "vehicle_model": "Rio",
        },
    }


def pointer_read(region: Region, hash_key: bytes) -> dict:
    """A read the neighbour shares as a pointer only: found by its exact plate, no body."""
    read = shared_read(region, "neighbour", "P-1", 38.95, -119.95, "Hwy 50", hours=4)
    keys = match_keys(read["body"], [FoundBy("plate")], hash_key)
    contact = "Next State PD records, 555-0300"
    disclosure = new_disclosure(region.county, ("a", 1), "POINTER")
    return {
        **read,
        "body": None,
        "disclosure": disclosure | {"contact": contact, "match_keys": keys},
    }


def own_incident(region: Region) -> dict:
    """A CAD incident of the county's own, as its projector indexes it from its own topic."""
    event = {
        "envelope": new_envelope(
            source_ori=region.county,
            source_system="t",
            kind=Kind.CAD_INCIDENT,
            record_id="C-7",
            version=1,
            occurred_at=START,
            now=START,
        ),
        "body": {"incident_number": "26-0007", "narrative": "silver Kia Rio 7ABC123 fled"},
    }
    return own_copy(event, region.county)


def test_analyst_searches_sees_the_path_and_downloads_from_the_page(
    region: Region, tmp_path: Path, browser
) -> None:
    # A pointer is found through keyed hashes: the region's hash key, before the index opens.
    generate_hash_key(region.settings.hash_key_file)
    hash_key = load_hash_key(region.settings.hash_key_file)
    assert hash_key is not None
    index = open_index(region.settings, region.county)
    index.apply([shared_read(region, *r, hours=i) for i, r in enumerate(READS)])
    index.apply([pointer_read(region, hash_key), own_incident(region)])
    index.close()
    okafor = token_for(region, "api-user", region.county, "analyst.okafor")
    outsider = token_for(region, "api-user", region.local, "analyst.lee")
    with serving(
        region.config_file, ["api", "--agency", region.county], tmp_path / "api.log"
    ) as url:
        page = browser.new_page(accept_downloads=True, viewport={"width": 1366, "height": 900})
        sign_in(page, url, "analyst.okafor", okafor)
        page.wait_for_selector("form#search:visible", timeout=10_000)
        assert page.locator("#who").inner_text() == "analyst.okafor"

        # A reason of blanks passes the browser's own check; the server refuses it, says why.
        page.fill("input[name=reason]", "   ")
        page.fill("input[name=plate]", "7ABC123")
        page.keyboard.press("Enter")
        page.wait_for_selector("#search-error:has-text('needs a reason')", timeout=10_000)
        assert page.locator("[data-testid=result]").count() == 0

        # A misread plate typed from a witness's note still finds all three reads.
        page.fill("input[name=reason]", "case 24-007")
        page.fill("input[name=plate]", "7ABCI23")
        page.click("form#search button[type=submit]")
        page.wait_for_selector("#count:has-text('3 record(s)')", timeout=10_000)
        rows = page.locator("[data-testid=result]")
        assert rows.count() == 3
        assert "Next State PD" in rows.nth(0).inner_text()
        assert "7ABC123 CA Kia Rio" in page.locator("#results").inner_text()
        # The path: a dot per read on the plot, a dot per read on the time line, numbered in
        # time order, with the partner's jurisdiction drawn.
        assert page.locator("[data-testid=read-point]").count() == 3
        assert page.locator("[data-testid=time-point]").count() == 3
        labels = page.locator("[data-testid=read-point] text").all_text_contents()
        assert [label.split(" ")[0] for label in labels] == ["1", "2", "3"]
        assert page.locator("#plot ellipse").count() >= 1
        # Keyboard: focus a row, Enter opens its detail.
        rows.nth(1).focus()
        page.keyboard.press("Enter")
        detail = page.locator("#detail dl").inner_text()
        assert "Main St & Pioneer Trl" in detail or "Kingsbury Grade" in detail
        assert "record" in detail and "alpr.read" in detail
        page.screenshot(path=str(SCREENSHOT or tmp_path / "search-page.png"), full_page=True)

        # The download is the same search as a file, and is logged as one.
        with page.expect_download() as downloading:
            page.click("#download")
        saved = tmp_path / "results.csv"
        downloading.value.save_as(saved)
        table = list(csv.DictReader(io.StringIO(saved.read_text())))
        assert sorted(r["record_id"] for r in table) == ["L-1", "N-1", "N-2"]
        assert {r["source_agency"] for r in table} == {"Test City PD", "Next State PD"}
        logged = index_rows(
            region.settings, region.county, 'select "user", reason, query_json from search_audit'
        )
        queries = [(u, r, json.loads(q)) for u, r, q in logged]
        assert [q.get("download") for _, _, q in queries] == [None, "csv"]
        assert all(u == "analyst.okafor" and r == "case 24-007" for u, r, _ in queries)

        # The exact plate also finds the pointer: whom to call, nothing of the record.
        page.fill("input[name=plate]", "7ABC123")
        page.click("form#search button[type=submit]")
        page.wait_for_selector("#count:has-text('4 record(s)')", timeout=10_000)
        pointer = page.locator("[data-testid=result].pointer")
        assert pointer.count() == 1
        assert "Next State PD holds a matching alpr.read record: call Next State PD records, " \
            "555-0300" in pointer.inner_text()  # fmt: skip
        assert page.locator("[data-testid=read-point]").count() == 3  # a pointer has no place
        pointer.focus()
        page.keyboard.press("Enter")
        detail = page.locator("#detail dl").inner_text()
        assert "POINTER" in detail and "555-0300" in detail and "Hwy 50" not in detail

        # Its own records come in the same search, marked as its own; the owner filter keeps
        # only them.
        page.fill("input[name=plate]", "")
        page.fill("input[name=text]", "7ABC123")
        page.select_option("select[name=from_agency]", region.county)
        page.click("form#search button[type=submit]")
        page.wait_for_selector("#count:has-text('1 record(s)')", timeout=10_000)
        own = page.locator("[data-testid=result]")
        assert "Test County SO (own)" in own.inner_text()
        assert "26-0007" in own.inner_text()
        page.select_option("select[name=from_agency]", "")
        page.click("form#search button[type=submit]")
        page.wait_for_selector("#count:has-text('4 record(s)')", timeout=10_000)
        assert page.locator("td.own").count() == 1

        # Another agency's user cannot sign in here, and nothing is served without a session.
        intruder = browser.new_page()
        sign_in(intruder, url, "analyst.lee", outsider)
        intruder.wait_for_selector("#login-error:has-text('not a user')", timeout=10_000)
        assert not intruder.locator("form#search").is_visible()
        assert intruder.request.get(f"{url}/search?plate=7ABC123&reason=x").status == 401
        # Signing out ends the session.
        page.click("#logout")
        page.wait_for_selector("form#login:visible", timeout=10_000)
        assert page.request.get(f"{url}/me").status == 401
