"""Cameras pushing reads over HTTP to a real connector process and broker: a camera's token
publishes as that camera, a bad token publishes nothing, bad reads are dead-lettered."""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from prometheus_client import REGISTRY

from mutualaid import tokens
from mutualaid.broker import EmbeddedBroker, free_port
from mutualaid.events import event_id
from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.settings import Settings
from mutualaid.topics import Kind, Stage, topics_for
from producers.alpr import load_mapping
from producers.alpr_http import ReadIngest, create_ingest
from support.brokers import dead_letters, source_events
from support.processes import mutualaid_cli, serving, wait_for
from support.regions import Region

NDJSON_MAPPING = Path("deploy/mappings/alpr/mutualaid-ndjson.yaml")

READ = {
    "read_id": "CAM7-000123",
    "plate": "7abc-123",
    "state": "ca",
    "read_at": "2026-11-24T21:14:03-08:00",
    "confidence": 0.91,
    "latitude": 38.94,
    "longitude": -119.98,
    "heading": "N",
    "make": "Toyota",
    "model": "Camry",
    "color": "Silver",
}


@pytest.fixture
def ingest(region: Region, tmp_path: Path) -> Iterator[str]:
    argv = ["connect", "alpr", "--agency", region.local, "--listen"]
    with serving(region.config_file, argv, tmp_path / "ingest.log") as url:
        yield url


def camera_token(region: Region, camera: str, *options: str) -> str:
    added = mutualaid_cli(region, "camera", "add", "--agency", region.local, camera, *options)
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


def published(
    region: Region, count: int, timeout: float = 30, bootstrap_servers: str | None = None
) -> list[dict]:
    servers = bootstrap_servers or region.settings.bootstrap_servers
    return source_events(servers, region.local, Kind.ALPR_READ, count, timeout)


@contextmanager
def ingest_in_thread(settings: Settings, ori: str, delivery_timeout: float) -> Iterator[str]:
    """The ingest app served by uvicorn in this process, for a broker the test controls."""
    ingest = ReadIngest(settings, ori, load_mapping(NDJSON_MAPPING), delivery_timeout)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_ingest(settings, ingest), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 15, "the ingest server to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def ingest_outcomes(outcome: str) -> float:
    value = REGISTRY.get_sample_value("mutualaid_ingest_requests_total", {"outcome": outcome})
    return value or 0.0


def test_only_a_valid_camera_token_publishes_and_as_that_camera(
    region: Region, ingest: str
) -> None:
    token = camera_token(region, "CAM7", "--name", "Main St & Pioneer Trl")
    revoked = camera_token(region, "CAM9")
    assert (
        mutualaid_cli(region, "camera", "remove", "--agency", region.local, "CAM9").returncode == 0
    )
    cameras = json.loads((region.settings.data_dir / "cameras.json").read_text())
    assert cameras == [
        {
            "agency_ori": region.local,
            "user": "CAM7",
            "sha256": hashlib.sha256(token.encode()).hexdigest(),
            "display_name": "Main St & Pioneer Trl",
        }
    ]
    assert token not in json.dumps(cameras)
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
    assert {k: v for k, v in envelope.items() if k != "ingested_at"} == {
        "event_id": event_id(region.local, Kind.ALPR_READ, "CAM7/CAM7-000123", 1),
        "source_ori": region.local,
        "source_system": "alpr-ndjson:mutualaid",
        "kind": "alpr.read",
        "op": "UPSERT",
        "record_id": "CAM7/CAM7-000123",  # the read id, namespaced by the token's camera
        "version": 1,
        "occurred_at": datetime(2026, 11, 25, 5, 14, 3, tzinfo=UTC),
        "labels": [],
        "source_position": f"http:CAM7:{answer['request_id']}#0",
    }
    assert read == {
        "plate": "7ABC123",
        "plate_state": "CA",
        "confidence": pytest.approx(0.91),
        "camera_id": "CAM7",  # from the token; the read named none
        "camera_name": "Main St & Pioneer Trl",  # registered with `camera add --name`
        "latitude": 38.94,
        "longitude": -119.98,
        "heading": "N",
        "vehicle_make": "Toyota",
        "vehicle_model": "Camry",
        "vehicle_color": "Silver",
        "image_ref": None,
    }


def test_a_retried_post_yields_the_same_records(region: Region, ingest: str) -> None:
    token = camera_token(region, "CAM7")
    no_id = {k: v for k, v in READ.items() if k != "read_id"}
    body = json.dumps([READ, no_id]).encode()
    first = push(ingest, token, body)
    # The camera never saw the answer and sends the same reads again.
    again = push(ingest, token, body)
    assert (first[0], first[1]["accepted"], again[0], again[1]["accepted"]) == (202, 2, 202, 2)
    events = published(region, 4)
    assert len(events) == 4
    identities = sorted(
        (e["envelope"]["record_id"], e["envelope"]["version"], e["envelope"]["event_id"])
        for e in events
    )
    # Two reads, each published twice as the very same record version and event.
    assert identities[0] == identities[1] and identities[2] == identities[3]
    assert identities[0] != identities[2]
    record_ids = {identity[0] for identity in identities}
    assert "CAM7/CAM7-000123" in record_ids  # the vendor's read id, as camera CAM7's
    derived = (record_ids - {"CAM7/CAM7-000123"}).pop()  # from camera, plate and time
    assert derived.startswith("CAM7/") and len(derived) == len("CAM7/") + 24


def test_broker_unavailable_answers_503_and_the_cameras_retry_lands(
    region: Region, tmp_path: Path
) -> None:
    port = free_port()
    down = region.settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{port}"})
    token = tokens.issue(down.cameras_file, region.local, "CAM7")
    body = json.dumps(READ).encode()
    unavailable = ingest_outcomes("unavailable")
    broker = EmbeddedBroker(port, log=tmp_path / "broker.log")
    try:
        with ingest_in_thread(down, region.local, delivery_timeout=2) as url:
            status, answer, headers = push(url, token, body)
            assert status == 503, answer
            assert headers["retry-after"] == "5"
            assert ingest_outcomes("unavailable") == unavailable + 1

            broker.start()
            ensure_topics(
                wait_for_broker(broker.bootstrap_servers),
                topics_for([region.local], down.partitions),
                1,
            )
            # The camera sends again until the answer is 202, as its retry loop would.
            status, answer, _ = wait_for(
                lambda: (reply := push(url, token, body))[0] == 202 and reply,
                60,
                "the ingest to publish once the broker is back",
            )
            assert answer["accepted"] == 1
        events = published(region, 2, timeout=5, bootstrap_servers=broker.bootstrap_servers)
    finally:
        broker.stop()
    # The unanswered attempt may land too, once the broker is back: as the very same event.
    assert 1 <= len(events) <= 2
    assert {e["envelope"]["event_id"] for e in events} == {
        event_id(region.local, Kind.ALPR_READ, "CAM7/CAM7-000123", 1)
    }


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
    assert len(event["envelope"]["record_id"]) == len("CAM7/") + 24  # from camera, plate, time
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
