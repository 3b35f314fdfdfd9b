"""Ingest hardening on a real connector process and broker: record ids namespaced by camera (one
camera cannot replace or hide another's read, down to the partner's index), and bounded
request bodies (too deep, too many reads, too many fields, too long: 400 or 413 with the reason,
never 500)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from test_alpr_http import READ, camera_token, published, push

from mutualaid.deadletter import MAX_PAYLOAD_BYTES
from mutualaid.topics import Stage
from producers.alpr import record_id
from producers.jsonlimits import nesting_depth
from support.brokers import dead_letters
from support.indexes import index_rows
from support.processes import mutualaid_cli, running_stages, serving, wait_for
from support.regions import Region

pytestmark = pytest.mark.broker


def serve_ingest(region: Region, tmp_path: Path, **settings: object):
    """`connect alpr --listen` for the region's local agency, with these settings added."""
    config = tmp_path / "ingest.yaml"
    config.write_text(
        yaml.safe_dump({**yaml.safe_load(region.config_file.read_text()), **settings})
    )
    argv = ["connect", "alpr", "--agency", region.local, "--listen"]
    return serving(config, argv, tmp_path / "ingest.log")


def letters_of(region: Region, count: int, timeout: float = 30) -> list[dict]:
    """The local agency's producer dead letters, once ``count`` are there (or at the deadline)."""

    def enough() -> list[dict] | None:
        found = dead_letters(
            region.settings.bootstrap_servers,
            Stage.PRODUCERS,
            lambda d: d["source_ori"] == region.local,
            timeout=2,
        )
        return found if len(found) >= count else None

    try:
        return wait_for(enough, timeout, f"{count} dead letters")
    except AssertionError:
        return dead_letters(
            region.settings.bootstrap_servers,
            Stage.PRODUCERS,
            lambda d: d["source_ori"] == region.local,
            timeout=2,
        )


def test_a_camera_cannot_replace_or_hide_another_cameras_read(
    region: Region, tmp_path: Path
) -> None:
    camera_a, camera_b = camera_token(region, "CAM-A"), camera_token(region, "CAM-B")
    with serve_ingest(region, tmp_path) as url:
        # Camera A posts first, with the read id camera B is about to use (B's counter is
        # predictable), then B posts its genuine read.
        forged = {**READ, "read_id": "B-000001", "plate": "1AAA111"}
        genuine = {**READ, "read_id": "B-000001", "plate": "2BBB222"}
        assert push(url, camera_a, json.dumps(forged).encode())[0] == 202
        assert push(url, camera_b, json.dumps(genuine).encode())[0] == 202
    events = published(region, 2)
    assert sorted((e["envelope"]["record_id"], e["body"]["plate"]) for e in events) == [
        ("CAM-A/B-000001", "1AAA111"),
        ("CAM-B/B-000001", "2BBB222"),
    ]
    assert len({e["envelope"]["event_id"] for e in events}) == 2
    # Downstream: the county (shared with by agreement) holds both reads, B's intact.
    held = "select record_id, plate from records where deleted = 0 order by record_id"

    def both_held() -> list[tuple] | None:
        try:
            rows = index_rows(region.settings, region.county, held)
        except sqlite3.OperationalError:
            return None  # the projector has not made the index yet
        return rows if len(rows) >= 2 else None

    with running_stages(region, tmp_path / "stages", [region.county]):
        rows = wait_for(both_held, 60, "both reads in the county's index")
    assert rows == [("CAM-A/B-000001", "1AAA111"), ("CAM-B/B-000001", "2BBB222")]


def test_record_ids_of_different_cameras_never_coincide() -> None:
    # A '/' in a camera id cannot make its ids look like another camera's.
    assert record_id("A/B", "C") != record_id("A", "B/C")
    assert record_id("A%2FB", "C") != record_id("A/B", "C")
    assert record_id(None, "R-1") == "R-1"


def test_deep_nesting_is_refused_with_a_reason_not_500(region: Region, tmp_path: Path) -> None:
    token = camera_token(region, "CAM7")
    with serve_ingest(region, tmp_path) as url:
        status, answer, _ = push(url, token, b"[" * 100_000)
        assert status == 400, answer
        [why] = answer["detail"]["rejected"]
        assert (why["index"], why["error_type"]) == (-1, "too_deep")
        assert "nested 100000 levels deep; at most 8" in why["reason"]
        # NDJSON: the deep line is refused on its own, the good ones are published.
        deep = json.dumps({**READ, "read_id": "deep", "extra": [[[[[[[[["x"]]]]]]]]]})
        lines = [
            json.dumps({**READ, "read_id": "ok1"}),
            deep,
            json.dumps({**READ, "read_id": "ok2"}),
        ]
        status, answer, _ = push(url, token, "\n".join(lines).encode())
        assert (status, answer["accepted"]) == (202, 2)
        assert [(r["index"], r["error_type"]) for r in answer["rejected"]] == [(1, "too_deep")]
        # The server is still there for the next request.
        assert push(url, token, json.dumps(READ).encode())[0] == 202
    assert sorted(e["envelope"]["record_id"] for e in published(region, 3)) == [
        "CAM7/CAM7-000123",
        "CAM7/ok1",
        "CAM7/ok2",
    ]
    letters = letters_of(region, 2)
    assert sorted(d["error_type"] for d in letters) == ["too_deep", "too_deep"]


def test_200000_empty_objects_get_one_fast_refusal(region: Region, tmp_path: Path) -> None:
    token = camera_token(region, "CAM7")
    body = ("[" + ",".join(["{}"] * 200_000) + "]").encode()
    assert len(body) == 600_001
    with serve_ingest(region, tmp_path) as url:
        started = time.monotonic()
        status, answer, _ = push(url, token, body)
        took = time.monotonic() - started
        assert status == 413, answer
        assert answer["detail"] == (
            "200,000 reads in one request; at most 1,000 are accepted: "
            "send them in smaller requests"
        )
        ndjson = "\n".join(["{}"] * 200_000).encode()
        assert push(url, token, ndjson)[0] == 413
        # Then one bad read, to know when the dead letters of the above would have arrived.
        status, answer, _ = push(url, token, json.dumps([{**READ, "plate": ""}]).encode())
        assert status == 400
    assert took < 2.0, f"took {took:.2f}s"
    # Nothing was published, and the refused requests left no dead letters: only the last one.
    [letter] = letters_of(region, 1)
    assert letter["error_type"] == "missing_plate"
    assert published(region, 1, timeout=2) == []


def test_reads_too_wide_or_too_long_are_dead_lettered(region: Region, tmp_path: Path) -> None:
    token = camera_token(region, "CAM7")
    reads = [
        {**READ, "read_id": "wide", **{f"x{i}": i for i in range(101)}},
        {**READ, "read_id": "long", "make": "T" * 2049},
        {**READ, "read_id": "nested", "plate": {"text": "7ABC123"}},
        {**READ, "read_id": "extra", "vendor": {"lane": 2}},  # unmapped extras are ignored
        {**READ, "read_id": "huge-number", "confidence": int("9" * 4000)},
    ]
    with serve_ingest(region, tmp_path) as url:
        status, answer, _ = push(url, token, json.dumps(reads).encode())
        assert status == 202, answer
        assert [(r["index"], r["error_type"]) for r in answer["rejected"]] == [
            (0, "too_many_fields"),
            (1, "field_too_long"),
            (2, "malformed_row"),
            (4, "field_too_long"),  # 4,000 digits
        ]
        reasons = [r["reason"] for r in answer["rejected"]]
        assert reasons[0] == "113 fields in one read; at most 100 are accepted"
        assert reasons[1] == "2,049 characters in column 'make'; at most 2,048 are accepted"
        assert reasons[2] == "'plate' must hold text or a number, not an object or array"
        # An integer past Python's 4,300-digit conversion limit, sent as JSON text.
        status, answer, _ = push(
            url, token, b'{"plate": "7ABC123", "confidence": ' + b"9" * 5000 + b"}"
        )
        assert status == 400, answer
        [why] = answer["detail"]["rejected"]
        assert (why["error_type"], why["reason"][:16]) == ("malformed_body", "not usable JSON:")
    [event] = published(region, 1)
    assert event["envelope"]["record_id"] == "CAM7/extra"


def test_limits_are_settings(region: Region, tmp_path: Path) -> None:
    token = camera_token(region, "CAM7")
    three = json.dumps([{**READ, "read_id": f"r{i}"} for i in range(3)]).encode()
    with serve_ingest(region, tmp_path, ingest_max_reads=2, ingest_max_depth=2) as url:
        status, answer, _ = push(url, token, three)
        assert status == 413, answer
        assert answer["detail"].startswith("3 reads in one request; at most 2 are accepted")
        status, answer, _ = push(url, token, json.dumps([READ, [READ]]).encode())
        assert status == 400, answer
        assert answer["detail"]["rejected"][0]["error_type"] == "too_deep"


def test_a_refused_megabyte_body_is_dead_lettered_cut_short(region: Region, tmp_path: Path) -> None:
    token = camera_token(region, "CAM7")
    with serve_ingest(region, tmp_path) as url:
        status, answer, _ = push(url, token, b"x" * 999_999)
        assert status == 400, answer
        assert answer["detail"]["rejected"][0]["error_type"] == "malformed_body"
    [letter] = letters_of(region, 1)
    assert len(letter["payload"]) == MAX_PAYLOAD_BYTES
    assert letter["reason"].endswith(
        f"(payload cut to its first {MAX_PAYLOAD_BYTES:,} of 999,999 bytes)"
    )


def test_nesting_depth_counts_brackets_outside_strings_only() -> None:
    assert nesting_depth('{"a": "[[[[[[[[[[", "b": [1, {"c": 2}]}') == 3
    assert nesting_depth('"unterminated [[[[') == 0
    assert nesting_depth(r'["\"[[[["]') == 1  # an escaped quote does not end the string
    assert nesting_depth("") == 0
    started = time.monotonic()
    assert nesting_depth("[" * 1_000_000) == 1_000_000
    assert nesting_depth('"\\"' * 300_000) == 0  # many openings of strings never closed
    assert time.monotonic() - started < 2.0


def test_export_lines_are_bounded_by_the_same_settings(region: Region, tmp_path: Path) -> None:
    config = tmp_path / "bounded.yaml"
    config.write_text(
        yaml.safe_dump({**yaml.safe_load(region.config_file.read_text()), "ingest_max_text": 64})
    )
    export = tmp_path / "reads.ndjson"
    lines = [
        {**READ, "read_id": "ok", "camera_id": "CAM7"},
        {**READ, "read_id": "long", "camera_id": "CAM7", "make": "T" * 65},
    ]
    export.write_text(
        "\n".join([*map(json.dumps, lines), "[" * 50_000, '{"plate": ' + "9" * 5000 + "}"]) + "\n"
    )
    result = mutualaid_cli(
        replace(region, config_file=config), "connect", "alpr", "--agency", region.local,
        "--source", str(export), "--mapping", "deploy/mappings/alpr/mutualaid-ndjson.yaml",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "read 4  published 1  rejected 3" in result.stdout
    letters = letters_of(region, 3)
    assert sorted((d["position"], d["error_type"]) for d in letters) == [
        ("line 2", "field_too_long"),
        ("line 3", "too_deep"),
        ("line 4", "malformed_row"),
    ]
