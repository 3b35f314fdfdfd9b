"""The HTTP search API, as a real server process: tokens, refusals, results, audit, OpenAPI."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consumers.index import open_index
from mutualaid.broker import free_port
from mutualaid.crypto import generate_hash_key, generate_keypair, load_hash_key
from mutualaid.disclosure import new_disclosure
from mutualaid.events import new_envelope
from mutualaid.processes import spawn, stop
from mutualaid.topics import Kind
from support.events import shared_by_router
from support.indexes import both_index_backends, index_rows
from support.processes import mutualaid_cli, wait_for
from support.regions import Region


def read(region: Region) -> dict:
    at = datetime(2026, 11, 24, 22, 0, tzinfo=UTC)
    return {
        "envelope": new_envelope(
            source_ori=region.neighbour,
            source_system="t",
            kind=Kind.ALPR_READ,
            record_id="N-1",
            version=1,
            occurred_at=at,
            now=at,
        ),
        "disclosure": new_disclosure(region.county, ("a", 1)),
        "body": {"plate": "7ABC123", "plate_state": "CA", "latitude": 38.96, "longitude": -119.94},
    }


@pytest.fixture
def api_server(
    region: Region, tmp_path: Path
) -> Iterator[tuple[str, int, subprocess.Popen[bytes]]]:
    """The API's base URL, the port of its metrics and its process."""
    index = open_index(region.settings, region.county)
    index.apply([read(region)])
    index.close()
    port, metrics_port = free_port(), free_port()
    proc = spawn(
        [
            sys.executable,
            "-m",
            "cli",
            "--config",
            str(region.config_file),
            "api",
            "--agency",
            region.county,
            "--port",
            str(port),
        ],
        log=tmp_path / "api.log",
        env={"MUTUALAID_METRICS_PORT": str(metrics_port)},
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return urllib.request.urlopen(f"{base}/healthz", timeout=1).status == 200
        except OSError:
            return False

    wait_for(up, 30, "the API to answer")
    yield base, metrics_port, proc
    stop(proc)


@pytest.fixture
def api(api_server: tuple[str, int, subprocess.Popen[bytes]]) -> str:
    return api_server[0]


def get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@both_index_backends
def test_search_api(region: Region, api: str) -> None:
    token = mutualaid_cli(
        region, "api-user", "add", "--agency", region.county, "--user", "dispatcher.lee"
    ).stdout.splitlines()[-1]
    assert get(f"{api}/search?plate=7ABC123&reason=case%2024-001")[0] == 401
    assert get(f"{api}/search?plate=7ABC123&reason=case%2024-001", "wrong")[0] == 401

    status, body = get(f"{api}/search?plate=7ABC123", token)
    assert status == 400
    assert body["detail"].startswith("refused: every search needs a reason")

    status, body = get(f"{api}/search?plate=7ABCI23&reason=case%2024-001", token)
    assert status == 200
    assert (body["user"], body["count"]) == ("dispatcher.lee", 1)
    (hit,) = body["results"]
    assert (hit["source_ori"], hit["record_id"], hit["source_agency"]) == (
        region.neighbour,
        "N-1",
        "Next State PD",
    )
    assert hit["record_ref"] == f"{region.neighbour}/alpr.read/N-1"
    assert hit["encrypted_fields"] == []

    audit = index_rows(
        region.settings, region.county, 'select "user", reason, result_count from search_audit'
    )
    assert audit == [("dispatcher.lee", "case 24-001", 1)]

    status, spec = get(f"{api}/openapi.json")
    assert status == 200
    names = {p["name"] for p in spec["paths"]["/search"]["get"]["parameters"]}
    assert {"reason", "plate", "name", "dob", "incident", "text", "near"} <= names
    assert {"identifier", "reveal"} <= names


def test_fields_kept_encrypted_are_opened_only_when_a_search_asks(region: Region, api: str) -> None:
    s = region.settings
    generate_keypair(region.county, s.public_keys_dir, s.private_keys_dir)
    generate_hash_key(s.hash_key_file)
    report = read(region) | {
        "body": {"persons": [{"last_name": "Ellis", "drivers_license": "D123-4567"}]}
    }
    report["envelope"] = report["envelope"] | {"kind": "rms.record", "record_id": "R-1"}
    fields = {"persons[].last_name": "encrypt_indexed", "persons[].drivers_license": "encrypt"}
    index = open_index(s, region.county)
    hash_key = load_hash_key(s.hash_key_file)
    assert hash_key is not None
    index.apply([shared_by_router(report, region.county, fields, s.public_keys_dir, hash_key)])
    index.close()
    token = mutualaid_cli(
        region, "api-user", "add", "--agency", region.county, "--user", "det.rivera"
    ).stdout.splitlines()[-1]
    search = f"{api}/search?name=ellis&reason=case%2024-077"

    status, body = get(search, token)
    assert status == 200
    (hit,) = body["results"]
    assert hit["body"]["persons"][0]["last_name"] is None
    assert hit["body"]["persons"][0]["drivers_license"] is None
    assert sorted(hit["encrypted_fields"]) == [
        "persons[0].drivers_license",
        "persons[0].last_name",
    ]
    status, body = get(f"{search}&reveal=true", token)  # this user holds no grant to
    assert status == 403 and "--may-reveal" in body["detail"]
    granted = mutualaid_cli(
        region, "api-user", "add", "--agency", region.county, "--user", "det.rivera",
        "--may-reveal",
    ).stdout.splitlines()[-1]  # fmt: skip
    status, body = get(f"{search}&reveal=true", granted)
    assert status == 200
    (hit,) = body["results"]
    assert hit["body"]["persons"][0]["last_name"] == "Ellis"
    assert hit["body"]["persons"][0]["drivers_license"] == "D123-4567"
    assert hit["encrypted_fields"] == []
    logged = index_rows(s, region.county, "select query_json from search_audit order by id")
    assert [json.loads(q).get("reveal", False) for (q,) in logged] == [False, True]


def hang_up_mid_answer(port: int, path: str) -> None:
    """Ask 127.0.0.1:``port`` for ``path`` and leave before the answer: closed (the answer's
    first bytes make this side reset the connection) or reset at once."""
    for reset in (False, True):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            if reset:  # linger on, zero seconds: close() resets the connection
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_clients_that_hang_up_do_not_stop_the_server(
    api_server: tuple[str, int, subprocess.Popen[bytes]],
) -> None:
    # Every mutualaid command once restored SIGPIPE's default action (for `| head`): a stage
    # then died, with nothing in its log, when a scraper of its metrics (or any client) left
    # before the whole answer was written (a projector of `up` exited -13 that way).
    base, metrics_port, proc = api_server
    for _ in range(5):
        try:
            hang_up_mid_answer(metrics_port, "/metrics")
            hang_up_mid_answer(int(base.rsplit(":", 1)[1]), "/openapi.json")
        except ConnectionRefusedError:
            time.sleep(0.5)
            pytest.fail(f"the API stopped serving (exit status {proc.poll()})")
    time.sleep(0.5)  # the server's writes after the resets
    assert proc.poll() is None, f"the API exited with {proc.returncode}"
    assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as got:
        assert b"mutualaid_" in got.read()
