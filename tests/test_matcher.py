"""The hit matcher's rules without a broker: who gets an alert, what it shows, what is quiet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mutualaid.agencies import load_registry
from mutualaid.events import new_envelope, record_key
from mutualaid.policy import load_policy
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    HIT_ALERT,
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    Codecs,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import Kind
from streams.matcher import Hotlists, Matcher
from support.events import alpr_event
from support.regions import write_dispatch_region

STORE = SchemaStore()
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CITY, COUNTY, NEIGHBOUR, FEDERAL = "CA0000001", "CA0000002", "NV0000003", "DC0000004"
IN_CITY = (38.94, -119.98)
FAR_AWAY = (37.00, -118.00)  # nobody's jurisdiction


@pytest.fixture
def hotlists() -> Hotlists:
    return Hotlists(Codecs(STORE))


@pytest.fixture
def matcher(tmp_path: Path, hotlists: Hotlists) -> Matcher:
    write_dispatch_region(tmp_path, CITY, COUNTY, NEIGHBOUR, FEDERAL, field_actions=True)
    registry = load_registry(tmp_path / "agencies.yaml")
    return Matcher(
        load_policy(tmp_path / "agreements", registry),
        hotlists,
        Codecs(STORE),
        repeat_window=timedelta(minutes=10),
        misreads=True,
        clock=lambda: NOW,
    )


def entry(owner: str, record_id: str, plate: str, **body: object) -> dict:
    envelope = new_envelope(
        source_ori=owner,
        source_system="hotlist-ncic",
        kind=Kind.HOTLIST_ENTRY,
        record_id=record_id,
        version=1,
        occurred_at=NOW - timedelta(days=3),
        now=NOW,
    )
    defaults = {"plate_state": "CA", "reason": "stolen_vehicle", "notes": "taken overnight"}
    return {"envelope": envelope, "body": {"plate": plate, **defaults, **body}}


def load(hotlists: Hotlists, *entries: dict) -> None:
    encode = AvroSerializer(STORE, SOURCE_EVENT[Kind.HOTLIST_ENTRY])
    for e in entries:
        hotlists.apply(record_key(e["envelope"]), encode(e, SerializationContext("h")), "h")


def read(
    plate: str, where: tuple[float, float] = IN_CITY, *, state: str | None = "CA", n: int = 1,
    owner: str = NEIGHBOUR, taken: datetime = NOW,
) -> dict:  # fmt: skip
    """A read from the neighbour's camera, with an image (which the agreement drops)."""
    return alpr_event(
        owner, f"read-{n}", plate, where, at=taken, source_system="alpr-csv", plate_state=state,
        camera_id="NV-CAM01", image_ref="https://alpr.example/img/1",
    )  # fmt: skip


def alerts(outputs: list) -> dict[str, dict]:
    """center -> decoded alert; fails if a center got two."""
    decode = AvroDeserializer(STORE, HIT_ALERT)
    out: dict[str, dict] = {}
    for o in outputs:
        if o.topic.startswith("alerts."):
            hit = decode(o.value, SerializationContext(o.topic))
            assert hit["center_ori"] not in out
            assert o.topic == f"alerts.{hit['center_ori'].lower()}"
            out[hit["center_ori"]] = hit
    return out


def test_own_entry_alerts_the_owner_only_with_what_the_read_agreement_allows(
    matcher: Matcher, hotlists: Hotlists
) -> None:
    load(hotlists, entry(CITY, "V1", "7ABC123"))
    outputs = matcher.match(read("7abc-123"), {})
    hits = alerts(outputs)
    assert list(hits) == [CITY]  # the county may see the read, not the city's entry
    hit = hits[CITY]
    assert (hit["match"], hit["entry_id"], hit["entry_owner_ori"]) == ("EXACT", "V1", CITY)
    assert hit["read"]["image_ref"] is None  # the neighbour's agreement drops images
    assert hit["withheld_fields"] == ["read.image_ref"]
    assert hit["entry"]["notes"] == "taken overnight"  # its own entry, whole
    assert hit["read"]["latitude"] == IN_CITY[0]
    # One audit record: the neighbour's read went to the city inside an alert.
    [audit] = [o for o in outputs if o.topic == "audit.dissemination"]
    record = AvroDeserializer(STORE, AUDIT_DISSEMINATION_SCHEMA)(
        audit.value, SerializationContext("audit.dissemination")
    )
    assert (record["source_ori"], record["partner_ori"], record["agreement_id"]) == (
        NEIGHBOUR,
        CITY,
        "nv-reads",
    )
    assert record["reasons"][-1] == f"sent in hit alert {hit['alert_id']}"
    assert record["fields_withheld"] == ["image_ref"]


def test_shared_entry_alerts_the_center_whose_jurisdiction_has_the_camera_and_the_owner(
    matcher: Matcher, hotlists: Hotlists
) -> None:
    load(hotlists, entry(COUNTY, "V2", "8XYZ789"))
    hits = alerts(matcher.match(read("8XYZ789"), {}))
    assert sorted(hits) == [CITY, COUNTY]
    assert hits[CITY]["entry"]["notes"] is None  # the county shares its list without notes
    assert "entry.notes" in hits[CITY]["withheld_fields"]
    assert hits[COUNTY]["entry"]["notes"] == "taken overnight"


def test_camera_outside_every_jurisdiction_alerts_only_the_entry_owner(
    matcher: Matcher, hotlists: Hotlists
) -> None:
    load(hotlists, entry(COUNTY, "V2", "8XYZ789"))
    assert list(alerts(matcher.match(read("8XYZ789", FAR_AWAY), {}))) == [COUNTY]


def test_no_alert_without_the_agreements_to_see_both_halves(
    matcher: Matcher, hotlists: Hotlists
) -> None:
    # The neighbour's own entry, read by the neighbour's camera in the city: the city may see
    # the read but not the neighbour's hotlist, so only the neighbour is alerted.
    load(hotlists, entry(NEIGHBOUR, "N1", "5KLM456", plate_state="NV"))
    assert list(alerts(matcher.match(read("5KLM456", state="NV"), {}))) == [NEIGHBOUR]
    # A city read is shared with nobody, so the county's entry alerts only the city.
    load(hotlists, entry(COUNTY, "V3", "6PQR111"))
    hits = alerts(matcher.match(read("6PQR111", owner=CITY), {}))
    assert list(hits) == [CITY]


def test_states_must_agree_and_a_missing_state_is_flagged(
    matcher: Matcher, hotlists: Hotlists
) -> None:
    load(hotlists, entry(CITY, "V1", "7ABC123"))
    assert alerts(matcher.match(read("7ABC123", state="NV"), {})) == {}
    hits = alerts(matcher.match(read("7ABC123", state=None, n=2), {}))
    assert hits[CITY]["match"] == "STATE_UNCONFIRMED"


def test_misreads_match_with_lower_confidence_when_enabled(
    matcher: Matcher, hotlists: Hotlists
) -> None:
    load(hotlists, entry(CITY, "V1", "7ABC123"))
    hits = alerts(matcher.match(read("7A8C123"), {}))  # B read as 8
    assert hits[CITY]["match"] == "MISREAD"
    matcher.misreads = False
    assert alerts(matcher.match(read("7A8C123", n=2), {})) == {}


def test_expired_and_removed_entries_do_not_match(matcher: Matcher, hotlists: Hotlists) -> None:
    load(hotlists, entry(CITY, "OLD", "1OLD111", expires_at=NOW - timedelta(minutes=1)))
    assert alerts(matcher.match(read("1OLD111"), {})) == {}
    gone = entry(CITY, "V1", "7ABC123")
    load(hotlists, gone)
    hotlists.apply(record_key(gone["envelope"]), None, "h")  # the tombstone of a removal
    assert len(hotlists) == 1
    assert alerts(matcher.match(read("7ABC123"), {})) == {}


def test_repeats_inside_the_window_are_suppressed_but_a_replay_is_sent_again(
    matcher: Matcher, hotlists: Hotlists
) -> None:
    load(hotlists, entry(CITY, "V1", "7ABC123"))
    recent: dict = {}
    first = alerts(matcher.match(read("7ABC123", n=1), recent))
    assert (
        alerts(matcher.match(read("7ABC123", n=2, taken=NOW + timedelta(minutes=3)), recent)) == {}
    )
    # The same read consumed again after a restart: the same alert, so nothing is lost.
    again = alerts(matcher.match(read("7ABC123", n=1), recent))
    assert again[CITY]["alert_id"] == first[CITY]["alert_id"]
    later = alerts(matcher.match(read("7ABC123", n=3, taken=NOW + timedelta(minutes=11)), recent))
    assert later[CITY]["alert_id"] != first[CITY]["alert_id"]


def test_reads_without_a_plate_and_deletes_never_alert(
    matcher: Matcher, hotlists: Hotlists
) -> None:
    load(hotlists, entry(CITY, "V1", "7ABC123"))
    deleted = read("7ABC123")
    deleted["envelope"]["op"] = "DELETE"
    assert matcher.match(deleted, {}) == []
    assert matcher.match(read(""), {}) == []
