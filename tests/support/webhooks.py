"""A CAD's webhook endpoint on loopback, for the tests that run the webhooks process: it checks
every request's signature the way the README tells receivers to, and can fail the first
requests to a path to make the sender retry."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from support.regions import Region


class Receiver(ThreadingHTTPServer):
    """A CAD's endpoint: verifies every signature the way the README tells receivers to."""

    def __init__(self, secret: bytes, fail_first: dict[str, int]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.secret = secret
        self.fail_first = fail_first  # path -> how many requests fail before it recovers
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        timestamp = self.headers["X-Mutualaid-Timestamp"]
        expected = (
            "sha256="
            + hmac.new(
                self.server.secret, f"{timestamp}.".encode() + body, hashlib.sha256
            ).hexdigest()
        )
        verified = hmac.compare_digest(expected, self.headers["X-Mutualaid-Signature"])
        fresh = abs(time.time() - int(timestamp)) < 300
        with self.server.lock:
            seen = sum(1 for r in self.server.requests if r["path"] == self.path)
            status = 503 if seen < self.server.fail_first.get(self.path, 0) else 200
            if not (verified and fresh):
                status = 401
            self.server.requests.append(
                {
                    "path": self.path,
                    "alert_id": self.headers["X-Mutualaid-Alert-Id"],
                    "verified": verified,
                    "status": status,
                    "body": json.loads(body),
                }
            )
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:  # quiet test output
        pass


@contextmanager
def receiving(fail_first: dict[str, int] | None = None) -> Iterator[Receiver]:
    """A receiver with a fresh secret, serving on a thread until the block ends."""
    # The secret as the file holds it: hex text (the sender strips the file's whitespace).
    server = Receiver(secrets.token_hex(32).encode(), fail_first or {})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()


def secret_file(tmp_path: Path, receiver: Receiver) -> str:
    """The receiver's secret written where an endpoint's ``secret_file`` names it."""
    path = tmp_path / "webhook.secret"
    path.write_bytes(receiver.secret)
    return str(path)


def configure(region: Region, tmp_path: Path, endpoints: list[dict], **settings: object) -> Path:
    """The region's settings plus a webhooks file (and ``settings``); returns the new settings
    file."""
    webhooks = tmp_path / "webhooks.yaml"
    webhooks.write_text(yaml.safe_dump({"webhooks": endpoints}))
    values = yaml.safe_load(region.config_file.read_text()) | {
        "webhooks_file": str(webhooks),
        "webhooks_allow_http_loopback": True,  # the receivers are http:// on 127.0.0.1
        **settings,
    }
    config = tmp_path / "with-webhooks.yaml"
    config.write_text(yaml.safe_dump(values))
    return config
