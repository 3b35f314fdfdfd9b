"""The transparency report on the real broker: the router, two projectors and the matcher run
on a region with real agreements; a local PD's reads are shared, sent as pointers, refused and
withdrawn, partners search, a county hotlist entry hits; then `mutualaid transparency` and the
API's /transparency pages say so in counts, with no name, plate, record id, user or reason of
the test data anywhere in them, and the page renders in real Chromium."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from consumers import transparency
from consumers.export import Window
from consumers.index import open_index
from consumers.index.query import Criteria
from consumers.search import Searcher, SearchRequest
from mutualaid.agencies import load_registry
from mutualaid.crypto import generate_hash_key
from mutualaid.events import Op
from mutualaid.policy import load_policy_from
from mutualaid.processes import spawn, stop
from mutualaid.topics import Kind
from support.browser import CHROMIUM
from support.events import alpr_event
from support.processes import mutualaid_cli, running_stages, serving, wait_for
from support.regions import CA_ALPR_ASSURANCE, Region, configured_region, publish_source, random_ori

NOW = datetime.now(UTC).replace(microsecond=0)
IN_CITY = (38.94, -119.98)
# (owner, record id, plate, labels, minutes after NOW). The city's own reads: one shared,
# one shared then deleted (withdrawn), one labelled officer_safety (a pointer to the county).
LOCAL_READS = [
    ("rd-q7731", "7ABC123", [], 0),
    ("rd-q7732", "8XYZ999", [], 1),
    ("rd-q7733", "5PNT555", ["officer_safety"], 2),
]
NEIGHBOUR_READ = ("rd-n4410", "7ABC123", [], 40)  # past the alert repeat window: a second hit
CAMERA = "Lakeview Dr & Pioneer Trl"
# (searching agency, user, reason, plate): what each partner search found, and why.
SEARCHES = [
    ("county", "det.okafor", "warrant service W-889 for Dana Whitfield", "7ABC123"),
    ("county", "det.okafor", "Case 26-004417", "7ABC123"),
    ("county", "sgt.brennan", "stolen car, owner Priya Raman", "7ABC123"),
    ("county", "sgt.brennan", "AMBER alert Jordan Ellis", "1NOPE11"),  # finds nothing
    ("county", "det.okafor", "checking on Sam Ortiz", "8XYZ999"),  # withdrawn: nothing
    ("local", "ofc.tanaka", "missing person Maria Lopez", "7ABC123"),
    ("local", "ofc.tanaka", "tip from the counter", "7ABC123"),
]


@pytest.fixture
def city(tmp_path: Path, broker) -> Region:
    local, county, neighbour, federal = (random_ori(s) for s in ("CA", "CA", "NV", "DC"))
    agencies = [
        {"ori": local, "name": "Test City PD", "state": "CA", "type": "local",
         "dispatch_center": True,
         "jurisdiction": {"latitude": 38.94, "longitude": -119.98, "radius_km": 12}},
        # California ALPR reads reach it only with an assurance on file (deploy/rules/).
        {"ori": county, "name": "Test County SO", "state": "CA", "type": "county",
         "assurances": [CA_ALPR_ASSURANCE]},
        {"ori": neighbour, "name": "Next State PD", "state": "NV", "type": "local"},
        {"ori": federal, "name": "Federal Task Force", "state": "DC", "type": "federal"},
    ]  # fmt: skip
    agreements = [
        {"id": "city-reads-to-county", "version": 2, "owner": local, "partners": [county],
         "kinds": ["alpr.read"], "fields": {"image_ref": "drop", "camera_name": "mask"},
         "retention_days": 365, "description": "Plate reads for county investigations",
         "conditions": {"exclude_labels": ["officer_safety"], "on_excluded_label": "pointer"}},
        {"id": "city-reads-to-nv", "version": 1, "owner": local, "partners": [neighbour],
         "kinds": ["alpr.read"], "conditions": {"same_state_only": True}},
        {"id": "nv-reads-to-ca", "version": 1, "owner": neighbour, "partners": [local, county],
         "kinds": ["alpr.read"]},
        {"id": "county-hotlist", "version": 1, "owner": county, "partners": [local],
         "kinds": ["hotlist.entry"]},
    ]  # fmt: skip
    (tmp_path / "agreements").mkdir()
    (tmp_path / "agencies.yaml").write_text(yaml.safe_dump({"agencies": agencies}))
    (tmp_path / "agreements" / "a.yaml").write_text(yaml.safe_dump({"agreements": agreements}))
    region = configured_region(
        tmp_path,
        broker,
        (local, county, neighbour, federal),
        router_id=f"router-{local.lower()}",
        matcher_id=f"matcher-{local.lower()}",
        alert_repeat_seconds=600,
    )
    generate_hash_key(region.settings.hash_key_file)  # pointers' references need it
    return region


def read_event(owner: str, record_id: str, plate: str, labels: list[str], minutes: int,
               op: Op = "UPSERT", version: int = 1) -> dict:  # fmt: skip
    """A read in the city, from its named camera, ``minutes`` after NOW."""
    return alpr_event(
        owner, record_id, plate, IN_CITY, at=NOW + timedelta(minutes=minutes), op=op,
        version=version, labels=labels, plate_state="CA", camera_name=CAMERA,
        vehicle_make="Subaru",
    )  # fmt: skip


def plates_in(region: Region, ori: str, plate: str) -> list[str]:
    index = open_index(region.settings, ori)
    try:
        return sorted(h.record_id for h in index.search(Criteria(plate=plate)))
    finally:
        index.close()


def secrets_of_the_test_data() -> list[str]:
    """Every name, plate, record id, user and reason text the test data holds."""
    out = [CAMERA, "Subaru", NEIGHBOUR_READ[0], NEIGHBOUR_READ[1]]
    out += [r[0] for r in LOCAL_READS] + [r[1] for r in LOCAL_READS]
    for _, user, reason, plate in SEARCHES:
        out += [user, reason, plate]
    out += ["Dana Whitfield", "Priya Raman", "Jordan Ellis", "Sam Ortiz", "Maria Lopez"]
    out += ["W-889", "26-004417", "HOT-77"]
    return out


def report_for(region: Region, ori: str) -> dict:
    registry = load_registry(region.settings.agencies_file)
    policy = load_policy_from(region.settings, registry)
    return transparency.build(region.settings, policy, ori, Window())


def by_partner(report: dict) -> dict[str, dict]:
    return {
        r["partner"]["name"]: {k: r[k] for k in ("shared", "pointer", "denied", "withdrawn")}
        for r in report["sharing"]["by_partner_and_kind"]
    }


@pytest.mark.broker
def test_reports_count_what_the_audit_holds_and_leak_nothing(city: Region, tmp_path: Path) -> None:
    local, county, neighbour = city.local, city.county, city.neighbour
    added = mutualaid_cli(
        city, "hotlist", "add", "--agency", county, "--plate", "7ABC123",
        "--reason", "stolen_vehicle", "--id", "HOT-77", "--notes", "taken from Dana Whitfield",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    base = [sys.executable, "-m", "cli", "--config", str(city.config_file)]
    log = tmp_path / "matcher.log"
    matcher = spawn([*base, "matcher"], log=log)
    try:
        with running_stages(city, tmp_path / "logs", [county, local]):
            wait_for(lambda: "hotlists loaded: 1 entries" in log.read_text(), 60, "the hotlist")
            events = [read_event(local, *r) for r in LOCAL_READS]
            events.append(read_event(local, "rd-q7732", "", [], 3, op="DELETE", version=2))
            publish_source(city, Kind.ALPR_READ, events, partition=0)
            publish_source(
                city, Kind.ALPR_READ, [read_event(neighbour, *NEIGHBOUR_READ)], owner=neighbour
            )
            wait_for(
                lambda: (
                    plates_in(city, county, "7ABC123") == ["rd-n4410", "rd-q7731"]
                    # The city: the neighbour's read and its own (from its own topic).
                    and plates_in(city, local, "7ABC123") == ["rd-n4410", "rd-q7731"]
                    and plates_in(city, county, "8XYZ999") == []
                ),
                60,
                "the county's and the city's indexes to hold the shared reads, not the deleted",
            )
            for who, user, reason, plate in SEARCHES:
                searcher = Searcher(city.settings, getattr(city, who))
                try:
                    request = SearchRequest(
                        searcher.agency_ori, user, reason, Criteria(plate=plate)
                    )
                    searcher.search(request)
                finally:
                    searcher.close()

            def settled() -> dict | None:
                mine = report_for(city, local)
                done = (
                    mine["searches_by_partners"]["total"] == 3
                    and mine["sharing"]["totals"]["withdrawn"] == 1
                    and report_for(city, neighbour)["hotlist_hits"]["reads"] == 1
                )
                return mine if done else None

            mine = wait_for(settled, 60, "the searches and the hit alerts to reach the audit")
            written = mutualaid_cli(city, "transparency", "--agency", local, "--out",
                                    str(tmp_path / "report"))  # fmt: skip
            assert written.returncode == 0, written.stderr
            for ori in (neighbour, county):
                assert mutualaid_cli(city, "transparency", "--agency", ori, "--out",
                                     str(tmp_path / ori)).returncode == 0  # fmt: skip
            with serving(
                city.config_file, ["api", "--agency", county], tmp_path / "api.log"
            ) as url:
                served_html = urllib.request.urlopen(f"{url}/transparency/{local}").read().decode()
                served = json.loads(
                    urllib.request.urlopen(f"{url}/transparency/{local.lower()}.json").read()
                )
                with pytest.raises(urllib.error.HTTPError) as missing:
                    urllib.request.urlopen(f"{url}/transparency/CA9999999.json")
                assert missing.value.code == 404
                if Path(CHROMIUM).exists():
                    page_in_chromium(f"{url}/transparency/{local}", tmp_path)
    finally:
        stop(matcher, timeout=10)

    # The city's reads: two shared with the county and one sent as a pointer (officer_safety),
    # the deleted one withdrawn; all three refused to the NV partner (same state only).
    assert by_partner(mine) == {
        "Test County SO": {"shared": 2, "pointer": 1, "denied": 0, "withdrawn": 1},
        "Next State PD": {"shared": 0, "pointer": 0, "denied": 3, "withdrawn": 0},
    }
    # Searches by partners that found its records, by purpose; the empty ones not at all.
    searches = mine["searches_by_partners"]
    assert [(p["partner"]["name"], p["total"]) for p in searches["by_partner"]] == [
        ("Test County SO", 3)
    ]
    assert {c: n for c, n in searches["by_category"].items() if n} == {
        "warrant": 1,
        "case or incident number": 1,
        "stolen vehicle": 1,
    }
    # The county still holds the shared read and the pointer; not the withdrawn one.
    held = mine["still_held"]
    assert held["records"] == 2 and held["by_partner_and_kind"][0]["records"] == 2
    assert datetime.fromisoformat(held["oldest_shared_at"]) >= NOW - timedelta(minutes=5)
    (terms,) = [a for a in mine["agreements"]["shares"] if a["id"] == "city-reads-to-county"]
    assert terms["fields"]["withheld"] == ["image_ref"]
    assert terms["fields"]["masked"] == ["camera_name"]
    assert terms["retention_days"] == 365 and terms["partners"][0]["name"] == "Test County SO"
    assert mine["hotlist_hits"]["by_center"] == []  # its own read alerted only itself

    theirs = json.loads((tmp_path / neighbour / "report.json").read_text())
    assert theirs["hotlist_hits"]["reads"] == 1
    assert theirs["hotlist_hits"]["by_center"][0]["center"]["name"] == "Test City PD"
    assert theirs["searches_by_partners"]["by_category"]["missing person / AMBER"] == 1
    assert theirs["searches_by_partners"]["by_category"]["other"] == 1
    assert theirs["searches_by_partners"]["total"] == 5
    hotlist = json.loads((tmp_path / county / "report.json").read_text())
    assert hotlist["hotlist_hits"]["entries"] == 2  # sent in both alerts to the city

    # The files and the API say the same (but when they were made).
    files = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {**files, "generated_at": None} == {**mine, "generated_at": None}
    assert {**served, "generated_at": None} == {**mine, "generated_at": None}
    assert "Test County SO" in served_html and "<svg" in served_html

    # Nothing of the data itself, anywhere.
    texts = {
        "report.json": json.dumps(files),
        "index.html": (tmp_path / "report" / "index.html").read_text(),
        "served page": served_html,
        "neighbour's": (tmp_path / neighbour / "index.html").read_text()
        + (tmp_path / neighbour / "report.json").read_text(),
        "county's": (tmp_path / county / "index.html").read_text()
        + (tmp_path / county / "report.json").read_text(),
    }
    for where, text in texts.items():
        leaked = [s for s in secrets_of_the_test_data() if s.lower() in text.lower()]
        assert not leaked, f"{where} holds {leaked}"


def page_in_chromium(url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            assert page.title().startswith("Transparency report: Test City PD")
            rows = page.locator("table#partners tbody tr")
            assert rows.count() == 2
            assert "Test County SO" in rows.nth(0).inner_text() + rows.nth(1).inner_text()
            chart = page.locator("svg.chart").first
            box = chart.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 40
            assert page.locator("svg.chart rect").count() >= 3  # shared, pointer, ... bars
            page.screenshot(path=str(tmp_path / "transparency.png"), full_page=True)
        finally:
            browser.close()


def test_reasons_fall_in_documented_categories() -> None:
    cases = {
        "AMBER alert 26-1101": "missing person / AMBER",
        "missing juvenile, welfare": "missing person / AMBER",
        "Warrant service": "warrant",
        "stolen vehicle 10851": "stolen vehicle",
        "recovered stolen plates": "stolen vehicle",
        "carjacking on Main": "stolen vehicle",
        "case 24-001": "case or incident number",
        "Incident #4471": "case or incident number",
        "RB26-0112233": "case or incident number",
        "stolen bicycle": "other",
        "curious": "other",
        "": "other",
    }
    assert {r: transparency.reason_category(r) for r in cases} == cases
    assert set(cases.values()) == set(transparency.CATEGORY_NAMES)
