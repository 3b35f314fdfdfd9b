"""The console's board of alerts, without a browser: replays, acks read before their alert,
and the bounds that keep a long-running console's memory flat."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from consumers.alerts.console import AlertBoard

CENTER = "CA0990100"


def hit(alert_id: str) -> dict:
    now = datetime.now(UTC)
    return {
        "alert_id": alert_id,
        "center_ori": CENTER,
        "match": "MISREAD",
        "read_event_id": str(uuid.uuid4()),
        "read_source_ori": "CA0990200",
        "read_record_id": "r1",
        "read_occurred_at": now,
        "read_ingested_at": now,
        "read": {"plate": "8HVT0Z9", "plate_state": None, "latitude": None, "longitude": None},
        "entry_owner_ori": CENTER,
        "entry_id": "V1",
        "entry": {"plate": "8HVT029", "plate_state": "CA", "reason": "amber"},
        "withheld_fields": ["read.image_ref"],
        "matched_at": now,
    }


def ack(alert_id: str, user: str) -> dict:
    return {"alert_id": alert_id, "user": user, "acknowledged_at": datetime.now(UTC)}


def shown() -> float:
    return REGISTRY.get_sample_value("mutualaid_console_alerts_total", {"center": CENTER}) or 0.0


def test_newest_first_replays_ignored_and_an_early_ack_applied() -> None:
    board = AlertBoard(CENTER, {"CA0990200": "Mesa County Sheriff's Office"}, keep=2)
    before = shown()
    board.add_ack(ack("b", "kim"))  # read before its alert (two topics, no order between them)
    for alert_id in ("a", "b", "a", "c"):
        board.add_alert(hit(alert_id))
    board.add_ack(ack("c", "kim"))
    board.add_ack(ack("c", "lee"))  # the first acknowledgement stands

    views = board.snapshot()
    assert [v["alert_id"] for v in views] == ["c", "b"]  # newest first, only the newest 2
    assert [v["ack"]["user"] for v in views] == ["kim", "kim"]
    assert views[0]["source_agency"] == "Mesa County Sheriff's Office"
    assert (views[0]["plate"], views[0]["read_plate"], views[0]["map"]) == (
        "8HVT029",
        "8HVT0Z9",
        None,
    )
    assert shown() - before == 3  # the replayed "a" is not shown twice


def test_acks_of_alerts_no_longer_on_the_board_are_bounded() -> None:
    board = AlertBoard(CENTER, {}, keep=3)
    for n in range(100):
        board.add_ack(ack(f"gone-{n}", "kim"))
    board.add_alert(hit("gone-99"))  # among the newest pending acks: still applied
    board.add_alert(hit("gone-0"))  # the oldest: dropped to keep the bound
    acks = {v["alert_id"]: v["ack"] for v in board.snapshot()}
    assert acks["gone-99"] is not None and acks["gone-0"] is None
