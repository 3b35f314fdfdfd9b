"""Cameras pushing reads over HTTP to a real connector process and broker: a camera's token
publishes as that camera, a bad token publishes nothing, bad reads are dead-lettered."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Region, dead_letters, mutualaid_cli, read_topic, serving, wait_for
from mutualaid.serde import SOURCE_EVENT, AvroDeserializer, SchemaStore, SerializationContext
from mutualaid.topics import Kind, Stage, source_topic

READ = {
    "read_id": "CAM7-000123",
    "plate": "7abc-123",
    "state": "ca",
    "read_at": "2026-11-24T21:14:03-08:00",
    "confidence": 0.91,
    "latitude": 38.94,
    "longitude": -119.98,
    "make": "Toyota",
}


@pytest.fixture
def ingest(region: Region, tmp_path: Path) -> Iterator[str]:
    argv = ["connect", "alpr", "--agency", region.local, "--listen"]
    with serving(region.config_file, argv, tmp_path / "ingest.log") as url:
        yield url


def camera_token(region: Region, camera: str) -> str:
    added = mutualaid_cli(region, "camera", "add", "--agency", region.local, camera)
    assert added.returncode == 0, added.stderr
    return added.stdout.strip().splitlines()[-1]


def push(url: str, token: str | None, body: bytes) -> tuple[int, dict, dict]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url}/v1/reads", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc), dict(exc.headers)


def published(region: Region, count: int, timeout: float = 30) -> list[dict]:
    topic = source_topic(region.local, Kind.ALPR_READ)
    decode = AvroDeserializer(SchemaStore(), SOURCE_EVENT[Kind.ALPR_READ])
    records = read_topic(
        region.settings.bootstrap_servers, topic, lambda r: len(r) >= count, timeout
    )
    return [decode(m.value(), SerializationContext(topic)) for m in records]


def test_only_a_valid_camera_token_publishes_and_as_that_camera(
    region: Region, ingest: str
) -> None:
    token = camera_token(region, "CAM7")
    revoked = camera_token(region, "CAM9")
    assert (
        mutualaid_cli(region, "camera", "remove", "--agency", region.local, "CAM9").returncode == 0
    )
    assert token not in (region.settings.data_dir / "cameras.json").read_text()
    body = json.dumps(READ).encode()
    for bad in (None, "not-a-token", revoked):
        status, answer, headers = push(ingest, bad, body)
        assert status == 401, answer
        assert headers["www-authenticate"] == "Bearer"

    status, answer, _ = push(ingest, token, body)
    assert status == 202, answer
    assert (answer["camera_id"], answer["accepted"], answer["rejected"]) == ("CAM7", 1, [])
    # Nothing from the refused requests: the only record is the accepted read.
    [event] = published(region, 1)
    assert len(published(region, 2, timeout=3)) == 1
    envelope, read = event["envelope"], event["body"]
    assert (envelope["source_ori"], envelope["record_id"], envelope["version"]) == (
        region.local,
        "CAM7-000123",
        1,
    )
    assert envelope["source_position"] == f"http:CAM7:{answer['request_id']}#0"
    assert (read["plate"], read["plate_state"], read["camera_id"]) == ("7ABC123", "CA", "CAM7")
    assert read["vehicle_make"] == "Toyota"

    # The camera sends it again (it never saw the answer): the very same event.
    status, _, _ = push(ingest, token, body)
    assert status == 202
    first, again = published(region, 2)
    assert again["envelope"]["event_id"] == first["envelope"]["event_id"]


def test_bad_reads_are_dead_lettered_while_good_ones_are_published(
    region: Region, ingest: str
) -> None:
    token = camera_token(region, "CAM7")
    no_id = {k: v for k, v in READ.items() if k != "read_id"}
    reads = [
        no_id,
        {**READ, "read_id": "x2", "plate": ""},
        {**READ, "read_id": "x3", "camera_id": "CAM8"},  # speaking for another camera
        {**READ, "read_id": "x4", "read_at": "yesterday"},
    ]
    status, answer, _ = push(ingest, token, json.dumps(reads).encode())
    assert status == 202, answer
    assert answer["accepted"] == 1
    assert [(r["index"], r["error_type"]) for r in answer["rejected"]] == [
        (1, "missing_plate"),
        (2, "camera_mismatch"),
        (3, "bad_timestamp"),
    ]
    [event] = published(region, 1)
    assert event["body"]["camera_id"] == "CAM7"
    assert len(event["envelope"]["record_id"]) == 24  # derived from camera, plate and time
    letters = wait_for(
        lambda: (
            found
            if len(
                found := dead_letters(
                    region.settings.bootstrap_servers,
                    Stage.PRODUCERS,
                    lambda d: d["source_ori"] == region.local,
                    timeout=2,
                )
            )
            >= 3
            else None
        ),
        30,
        "three dead letters",
    )
    assert sorted(d["position"].rsplit("#", 1)[1] for d in letters) == ["1", "2", "3"]
    mismatch = next(d for d in letters if d["position"].endswith("#2"))
    assert "token is camera 'CAM7'" in mismatch["reason"]

    # NDJSON works too; a body that is not JSON at all is refused and kept.
    ndjson = b"\n".join(json.dumps({**READ, "read_id": f"n{i}"}).encode() for i in range(2))
    status, answer, _ = push(ingest, token, ndjson)
    assert (status, answer["accepted"]) == (202, 2)
    status, answer, _ = push(ingest, token, b"plate=7ABC123")
    assert status == 400
    assert answer["detail"]["rejected"][0]["error_type"] == "malformed_body"
    # Over 1 MB is refused from the declared length, before the body is read.
    host, port = ingest.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/v1/reads")
    connection.putheader("Authorization", f"Bearer {token}")
    connection.putheader("Content-Length", "2000000")
    connection.endheaders(b"[")
    assert connection.getresponse().status == 413
    connection.close()
