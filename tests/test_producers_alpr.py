"""A second real vendor layout (Genetec AutoVu reads report), as CSV and as NDJSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from producers.alpr import AlprAdapter, load_mapping
from producers.contract import Rejected
from producers.sources import LineFile, SourceItem

SAMPLE = Path(__file__).parent / "data" / "alpr" / "genetec-autovu-reads.csv"
MAPPING = load_mapping(Path("deploy/mappings/alpr/genetec-autovu-reads.yaml"))


def test_genetec_reads_export() -> None:
    source = LineFile(SAMPLE)  # Excel-style: UTF-8 byte-order mark and CRLF line ends
    adapter = AlprAdapter(MAPPING, source.header, "CA0990100")
    events, rejected = [], []
    for item in source.items(source.start(None), lambda: False):
        try:
            events.append(adapter.to_event(item))
        except Rejected as exc:
            rejected.append((item.line, exc.error_type, exc.reason))
    reads = [
        (e["envelope"]["record_id"][:25], e["body"]["plate"], e["envelope"]["occurred_at"])
        for e in events
    ]
    assert reads == [
        # 09:14:03 PM Pacific standard time is 05:14:03 UTC the next day.
        ("AutoVu-SharpV-12/5b0f2c1e", "8HVT029", datetime(2026, 11, 25, 5, 14, 3, tzinfo=UTC)),
        ("AutoVu-SharpV-12/7c3e9d20", "7ABC123", datetime(2026, 11, 25, 5, 15, 41, tzinfo=UTC)),
        ("AutoVu-SharpX-03/9a1d4b33", "123A456", datetime(2026, 11, 25, 7, 59, 59, tzinfo=UTC)),
        (
            "AutoVu-SharpX-03/a2e5c644",
            "6XYZ777",
            datetime(2026, 11, 25, 8, 0, 7, tzinfo=UTC),
        ),  # 12:00:07 AM
    ]
    assert [e["body"]["confidence"] for e in events] == pytest.approx([0.97, 0.88, 1.0, 0.64])
    first = events[0]["body"]
    assert (first["camera_id"], first["camera_name"], first["image_ref"]) == (
        "AutoVu-SharpV-12",
        "Hwy 50 & Ski Run Blvd",
        "ctx/5b0f2c1e.jpg",
    )
    assert events[1]["body"]["vehicle_make"] is None
    assert events[0]["envelope"]["source_system"] == "alpr-csv:genetec-autovu"
    assert rejected == [
        (
            6,
            "bad_timestamp",
            "'11/25/2026 13:02:10 PM' in column 'Event timestamp' is not the pattern "
            "%m/%d/%Y %I:%M:%S %p",
        )
    ]


def test_the_same_mapping_reads_ndjson_by_key() -> None:
    ndjson = AlprAdapter(MAPPING.model_copy(update={"format": "ndjson"}), b"", "CA0990100")
    line = json.dumps(
        {
            "Read ID": "5b0f2c1e",
            "Plate read": "8hvt 029",
            "Plate state": "CA",
            "Event timestamp": "11/24/2026 09:14:03 PM",
            "Confidence score": 97,  # numbers as JSON numbers
            "Latitude": 38.94012,
            "Longitude": -119.98231,
            "Vehicle make": None,
        }
    ).encode()
    event = ndjson.to_event(SourceItem(line, 1, None))  # type: ignore[arg-type]
    assert event["envelope"]["occurred_at"] == datetime(2026, 11, 25, 5, 14, 3, tzinfo=UTC)
    assert (event["body"]["plate"], event["body"]["confidence"]) == ("8HVT029", 0.97)
    assert event["body"]["latitude"] == 38.94012 and event["body"]["vehicle_make"] is None
