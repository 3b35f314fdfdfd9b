"""The ALPR CSV connector: mapping, normalising, rejecting, and publishing exactly once."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mutualaid.configfile import ConfigError
from mutualaid.topics import Kind, Stage
from producers.alpr import DEFAULT_MAPPING, AlprAdapter, load_mapping
from producers.checkpoint import CheckpointStore
from producers.contract import Rejected, SourceItem
from producers.runner import Runner
from producers.sources import LineFile
from support.brokers import dead_letters, source_events
from support.regions import Region

HEADER = (
    b"read_id,plate,state,read_at,confidence,camera_id,camera_name,latitude,longitude,"
    b"heading,make,model,color"
)
GOOD = b"R-1,7abc 123,ca,2026-11-24T21:14:03-08:00,0.93,CAM-1,Main & 5th,38.94,-119.98,N,,,Silver"


def adapter(ori: str = "CA0990100") -> AlprAdapter:
    return AlprAdapter(load_mapping(DEFAULT_MAPPING), HEADER, ori)


def item(raw: bytes, line: int = 2) -> SourceItem:
    return SourceItem(raw, line, after=None)  # type: ignore[arg-type]


def test_a_good_line_becomes_a_normalised_read() -> None:
    event = adapter().to_event(item(GOOD))
    body, envelope = event["body"], event["envelope"]
    assert body["plate"] == "7ABC123"
    assert body["plate_state"] == "CA"
    assert body["confidence"] == pytest.approx(0.93)
    assert (body["latitude"], body["longitude"]) == (38.94, -119.98)
    assert body["vehicle_make"] is None and body["vehicle_color"] == "Silver"
    assert envelope["occurred_at"] == datetime(2026, 11, 25, 5, 14, 3, tzinfo=UTC)
    assert envelope["occurred_at"].utcoffset() == timezone(timedelta(hours=-8)).utcoffset(None)
    # The vendor's read id, namespaced by the camera that took it.
    assert (envelope["record_id"], envelope["version"], envelope["source_ori"]) == (
        "CAM-1/R-1",
        1,
        "CA0990100",
    )
    assert envelope["source_position"] == "line 2"


def test_replayed_line_gets_the_same_identity() -> None:
    first, again = adapter().to_event(item(GOOD)), adapter().to_event(item(GOOD))
    assert first["envelope"]["event_id"] == again["envelope"]["event_id"]


@pytest.mark.parametrize(
    ("raw", "error_type", "reason"),
    [
        (
            GOOD.replace(b"2026-11-24T21:14:03-08:00", b"24/11/2026 9pm"),
            "bad_timestamp",
            "'24/11/2026 9pm' in column 'read_at' is not ISO 8601",
        ),
        (GOOD.replace(b"7abc 123", b" - "), "missing_plate", "no plate in column 'plate'"),
        (GOOD.replace(b"Main", b"M\xe4in"), "bad_encoding", "byte 0xe4 at position"),
        (GOOD + b",extra", "malformed_row", "expected 13 columns as in the header, found 14"),
        (GOOD.replace(b"38.94", b"138.94"), "bad_coordinates", "138.94 in column 'latitude'"),
        (GOOD.replace(b"0.93", b"93"), "bad_confidence", "93.0 is outside 0..1"),
    ],
)
def test_malformed_lines_are_rejected_with_a_reason(
    raw: bytes, error_type: str, reason: str
) -> None:
    with pytest.raises(Rejected) as caught:
        adapter().to_event(item(raw))
    assert caught.value.error_type == error_type
    assert reason in caught.value.reason


def test_mapping_that_does_not_fit_the_file_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expects columns \['read_id'"):
        AlprAdapter(load_mapping(DEFAULT_MAPPING), b"plate,time", "CA0990100")


def test_bad_mapping_file_names_line_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "vendor.yaml"
    bad.write_text(
        "name: v\nsource_system: alpr-csv:v\ncolumns:\n  plate: Plate\ntimezone: Mars/Olympus\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_mapping(bad)
    text = str(caught.value)
    assert f"{bad}:5: timezone: 'Mars/Olympus' is not allowed" in text
    assert "columns must map occurred_at" in text


@pytest.mark.broker
def test_runner_publishes_valid_rows_and_dead_letters_the_rest(
    region: Region, tmp_path: Path
) -> None:
    csv = tmp_path / "export.csv"
    rows = [GOOD.replace(b"R-1", f"R-{i}".encode()) for i in range(1, 6)]
    rows.insert(2, GOOD.replace(b"R-1", b"R-BAD").replace(b"2026-11-24T", b"yesterday "))
    csv.write_bytes(HEADER + b"\n" + b"\n".join(rows) + b"\n")
    ori = region.local

    def run() -> None:
        source = LineFile(csv)
        Runner(
            region.settings,
            ori,
            AlprAdapter(load_mapping(DEFAULT_MAPPING), source.header, ori),
            source,
            name="t",
        ).run()

    run()
    events = source_events(region.settings.bootstrap_servers, ori, Kind.ALPR_READ, 5)
    ids = sorted(e["envelope"]["record_id"] for e in events)
    assert ids == ["CAM-1/R-1", "CAM-1/R-2", "CAM-1/R-3", "CAM-1/R-4", "CAM-1/R-5"]

    letters = dead_letters(
        region.settings.bootstrap_servers, Stage.PRODUCERS, lambda d: d["source_ori"] == ori
    )
    assert len(letters) == 1
    assert letters[0]["error_type"] == "bad_timestamp"
    assert letters[0]["position"] == "line 4"
    assert letters[0]["source"].startswith(str(csv))
    assert letters[0]["payload"].startswith(b"R-BAD,")

    checkpoint = CheckpointStore(region.settings.data_dir / "checkpoints").load("t")
    assert checkpoint is not None and checkpoint.offset == csv.stat().st_size
    assert checkpoint.line == 7

    run()  # from the checkpoint: nothing left to publish
    again = source_events(region.settings.bootstrap_servers, ori, Kind.ALPR_READ, 6, timeout=2)
    assert len(again) == 5


def test_ndjson_layout() -> None:
    mapping = load_mapping(Path("deploy/mappings/alpr/mutualaid-ndjson.yaml"))
    ndjson = AlprAdapter(mapping, b"", "CA0990100")
    line = (
        b'{"read_id": "R-9", "plate": "8abc-999", "state": "nv", "read_at": '
        b'"2026-11-24T21:14:03-08:00", "confidence": 0.91, "latitude": 38.9, '
        b'"longitude": -119.9, "camera_id": null}'
    )
    event = ndjson.to_event(item(line))
    assert (event["body"]["plate"], event["body"]["plate_state"]) == ("8ABC999", "NV")
    assert event["body"]["confidence"] == pytest.approx(0.91)
    assert event["body"]["camera_id"] is None
    assert event["envelope"]["record_id"] == "R-9"  # no camera to namespace it by
    for bad, reason in ((b'{"plate": ', "not JSON"), (b'["R-9"]', "expected a JSON object")):
        with pytest.raises(Rejected, match=reason) as caught:
            ndjson.to_event(item(bad))
        assert caught.value.error_type == "malformed_row"


def test_us_local_time_percent_layout() -> None:
    mapping = load_mapping(Path("deploy/mappings/alpr/us-local-time-percent.yaml"))
    header = b"Plate,State,Read Time,Confidence,Camera,Location,Latitude,Longitude,Make,Color"
    adapter_ = AlprAdapter(mapping, header, "CA0990100")
    row = b"7ABC123,CA,11/24/2026 21:14:03,87,CAM-7,Hwy 50 & Ski Run,38.94,-119.98,Ford,Blue"
    event = adapter_.to_event(item(row))
    # Pacific time without an offset in the file; stored with it.
    assert event["envelope"]["occurred_at"] == datetime(2026, 11, 25, 5, 14, 3, tzinfo=UTC)
    assert event["body"]["confidence"] == pytest.approx(0.87)
    again = adapter_.to_event(item(row))
    assert event["envelope"]["record_id"] == again["envelope"]["record_id"]  # derived, stable
    with pytest.raises(Rejected, match="is not the pattern %m/%d/%Y"):
        adapter_.to_event(item(row.replace(b"11/24/2026", b"2026-11-24")))


@pytest.mark.broker
def test_connect_command_reads_ndjson(region: Region, tmp_path: Path) -> None:
    export = tmp_path / "reads.ndjson"
    export.write_text(
        '{"read_id": "J-1", "plate": "7ABC123", "read_at": "2026-11-24T21:14:03Z"}\n'
        "not json\n"
        '{"read_id": "J-2", "plate": "8XYZ999", "read_at": "2026-11-24T21:15:03Z"}\n'
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "--config",
            str(region.config_file),
            "connect",
            "alpr",
            "--agency",
            region.local,
            "--source",
            str(export),
            "--mapping",
            "deploy/mappings/alpr/mutualaid-ndjson.yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "read 3  published 2  rejected 1" in result.stdout
    events = source_events(region.settings.bootstrap_servers, region.local, Kind.ALPR_READ, 2)
    assert sorted(e["envelope"]["record_id"] for e in events) == ["J-1", "J-2"]
