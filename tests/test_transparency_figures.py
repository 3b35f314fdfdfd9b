"""The transparency report's figures from audit records, without a broker: the period, what a
partner still holds across share/withdraw/share, hit alerts apart from shares, whose searches
count; and the page drawn from them. (The whole path on the real broker: test_transparency.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from consumers.export import Window
from consumers.transparency import Figures, report
from consumers.transparency_page import render
from mutualaid.agencies import load_registry
from mutualaid.audit import dissemination_audit, hit_alert_reason
from mutualaid.disclosure import FieldReport
from mutualaid.policy import load_policy

MESA, RIVERBEND, DESERT = "CA0990200", "CA0990100", "NV0990300"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def decision(record_id: str, partner: str, outcome: str, day: int, *, alert: bool = False,
             kind: str = "alpr.read", owner: str = MESA) -> dict:  # fmt: skip
    envelope = {"event_id": "e", "source_ori": owner, "kind": kind, "record_id": record_id,
                "version": 1}  # fmt: skip
    reasons = ["agreement mesa-riverbend-alpr v1 covers it"]
    return dissemination_audit(
        envelope,
        FieldReport(),
        partner_ori=partner,
        decision=outcome,
        agreement_id="mesa-riverbend-alpr",
        agreement_version=1,
        reasons=[*reasons, hit_alert_reason("a-1")] if alert else reasons,
        decided_at=T0 + timedelta(days=day),
    )


def search(by: str, owners: list[str], day: int, reason: str = "case 24-001") -> dict:
    return {"agency_ori": by, "search_id": 1, "user": "det.x", "reason": reason,
            "query_json": "{}", "result_count": len(owners), "result_owners": owners,
            "searched_at": T0 + timedelta(days=day)}  # fmt: skip


def fed(window: Window) -> Figures:
    figures = Figures(MESA, window)
    for record in [
        decision("r1", RIVERBEND, "SHARED", 1),
        decision("r2", RIVERBEND, "SHARED", 2),
        decision("r2", RIVERBEND, "WITHDRAWN", 3),
        decision("r2", RIVERBEND, "SHARED", 12),  # shared again: held since then
        decision("r3", DESERT, "DENIED", 12),
        decision("r1", RIVERBEND, "SHARED", 12),  # a new version: held since the first
        decision("r4", RIVERBEND, "POINTER", 13),
        decision("r1", RIVERBEND, "SHARED", 14, alert=True),  # sent in a hit alert
        decision("hot-9", RIVERBEND, "SHARED", 14, alert=True, kind="hotlist.entry"),
        decision("x1", RIVERBEND, "SHARED", 14, owner=DESERT),  # not Mesa's
        decision("r5", RIVERBEND, "SHARED", 30),  # after the period below
    ]:
        figures.dissemination(record)
    for record in [
        search(RIVERBEND, [MESA, DESERT], 11, "warrant W-1"),
        search(RIVERBEND, [DESERT], 11),  # did not find Mesa's records
        search(MESA, [MESA], 11),  # Mesa's own search
        search(DESERT, [MESA], 5),  # before the period
        search(DESERT, [MESA], 20, "AMBER"),
    ]:
        figures.search(record)
    return figures


def test_the_period_counts_decisions_and_searches_but_holding_spans_all_before_its_end() -> None:
    figures = fed(Window(T0 + timedelta(days=10), T0 + timedelta(days=25)))
    assert dict(figures.decisions) == {
        (RIVERBEND, "alpr.read", "SHARED"): 2,
        (DESERT, "alpr.read", "DENIED"): 1,
        (RIVERBEND, "alpr.read", "POINTER"): 1,
    }
    assert dict(figures.hits) == {(RIVERBEND, "alpr.read"): 1, (RIVERBEND, "hotlist.entry"): 1}
    # r1 from before the period is still held; r2 since it was shared again; r5 came after.
    assert {k[2]: v.day for k, v in figures.held.items()} == {"r1": 2, "r2": 13, "r4": 14}
    assert dict(figures.searches) == {
        (RIVERBEND, "warrant"): 1,
        (DESERT, "missing person / AMBER"): 1,
    }


def test_the_report_and_page_from_the_demo_agreements() -> None:
    registry = load_registry(Path("deploy/agencies.yaml"))
    policy = load_policy(Path("deploy/agreements"), registry)
    made = report(policy, fed(Window()), generated_at=T0)
    assert made["sharing"]["totals"] == {"shared": 5, "pointer": 1, "denied": 1, "withdrawn": 1}
    assert made["still_held"]["records"] == 4  # r1, r2, r4, r5
    assert made["still_held"]["oldest_shared_at"] == "2026-11-02T00:00:00+00:00"
    assert made["searches_by_partners"]["total"] == 3
    assert made["hotlist_hits"] == {
        "reads": 1,
        "entries": 1,
        "by_center": [
            {"center": {"ori": RIVERBEND, "name": "Riverbend Police Department"},
             "kind": "alpr.read", "records": 1},
            {"center": {"ori": RIVERBEND, "name": "Riverbend Police Department"},
             "kind": "hotlist.entry", "records": 1},
        ],
    }  # fmt: skip
    assert [a["id"] for a in made["agreements"]["shares"]] == [
        "mesa-hotlists",
        "mesa-riverbend-alpr",
    ]
    page = render(made)
    assert page.count("<svg") == 2  # decisions per partner, searches by purpose
    assert "Riverbend Police Department" in page
    assert not re.search(r"\br[1-5]\b|hot-9|det\.x|W-1", page)  # no record id, user, reason
    empty = render(report(policy, Figures(MESA, Window()), generated_at=T0))
    assert "<svg" not in empty and "No partner holds any of its records" in empty
