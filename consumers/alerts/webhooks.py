"""Hit alerts to an agency's CAD over HTTP: signed, retried with back-off, dead-lettered.

``mutualaid webhooks --agency ORI`` consumes ``alerts.<ori>`` in its own consumer group and
POSTs each alert, as JSON, to every endpoint the webhooks file lists for that agency::

    webhooks:
      - agency: CA0990100
        url: https://cad.riverbend.example/mutualaid/hits
        secret_file: /etc/mutualaid/webhook-ca0990100.secret

Each request carries ``X-Mutualaid-Timestamp`` (Unix seconds), ``X-Mutualaid-Signature``
(``sha256=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>`` under the endpoint's secret)
and ``X-Mutualaid-Alert-Id``. A connection error, a timeout, 429 or a 5xx is retried with
exponential back-off and jitter; any other answer but 2xx, or ``max_attempts`` failures, sends
the alert to ``dlq.consumers`` with the reason, as does a record that cannot be read as an
alert. An alert matched longer ago than the endpoint's ``max_age_seconds`` (a first start
over a long topic, an endpoint back after an outage) is not sent: it is logged and counted, and
stays on the topic and the consoles. The offset is committed only once every
endpoint has the alert or its dead letter, so a restart re-sends at most the alert in hand;
receivers de-duplicate by alert id. Alerts are sent in order, one at a time: an endpoint that
is down delays the ones behind it by its retry budget.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, Message, Producer
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationInfo, field_validator

from mutualaid.configfile import load_model
from mutualaid.deadletter import DeadLetters, Letter
from mutualaid.errors import MutualaidError
from mutualaid.kafka import (
    DeliveryTracker,
    commit_past,
    consumer_config,
    produce,
    producer_config,
)
from mutualaid.metrics import WEBHOOK_DELIVERIES, WEBHOOK_FAILED_ATTEMPTS, WEBHOOK_LATENCY
from mutualaid.serde import (
    HIT_ALERT,
    DeserializationError,
    SerializationContext,
    codecs_for,
)
from mutualaid.settings import Settings
from mutualaid.topics import Stage, alerts_topic, check_ori

log = logging.getLogger("mutualaid.webhooks")
RETRYABLE_STATUS = {408, 425, 429}


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agency: str = Field(description="ORI of the dispatch center whose alerts go there")
    url: HttpUrl = Field(
        description="where to POST each alert: https://, or http:// to this host with "
        "webhooks_allow_http_loopback"
    )
    secret_file: Path = Field(description="file holding the shared HMAC secret (kept 0600)")
    max_attempts: int = Field(6, ge=1, le=20, description="tries before the dead-letter topic")
    timeout_seconds: float = Field(5.0, gt=0, le=60, description="per request")
    backoff_seconds: float = Field(0.5, gt=0, le=60, description="wait after the first failure")
    max_backoff_seconds: float = Field(30.0, gt=0, le=600, description="longest wait")
    max_age_seconds: float = Field(
        900,
        ge=0,
        description="alerts matched longer ago are not sent (0: none too old); a stale hit "
        "would send units to where the car was",
    )

    @field_validator("agency")
    @classmethod
    def _ori(cls, value: str) -> str:
        return check_ori(value)

    @field_validator("url")
    @classmethod
    def _encrypted(cls, value: HttpUrl, info: ValidationInfo) -> HttpUrl:
        # Alerts carry plates, places and officer-safety cautions: never in clear over a
        # network. http:// is for a receiver on this very host, and only when allowed.
        if value.scheme == "https":
            return value
        if not (info.context or {}).get("allow_http_loopback"):
            raise ValueError(
                "http:// would send alerts unencrypted; use https:// (for a receiver on this "
                "host, e.g. in a test, set webhooks_allow_http_loopback: true)"
            )
        if not _is_loopback(value.host or ""):
            raise ValueError(
                f"http:// is allowed to this host only (127.0.0.1, ::1, localhost), "
                f"not {value.host}; use https://"
            )
        return value

    @field_validator("secret_file")
    @classmethod
    def _secret(cls, value: Path) -> Path:
        if not value.is_file() or not value.read_bytes().strip():
            raise ValueError(f"{value} is missing or empty; write a long random secret there")
        return value


class WebhooksFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    webhooks: list[Endpoint] = Field(description="a list of endpoints, each for one agency")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_endpoints(
    path: Path | None, agency_ori: str, *, allow_http_loopback: bool = False
) -> list[Endpoint]:
    """The agency's endpoints; ConfigError (file, line, field, fix) for a bad file, such as an
    http:// URL (allowed to loopback addresses with ``allow_http_loopback``)."""
    if path is None:
        return []
    context = {"allow_http_loopback": allow_http_loopback}
    loaded = load_model(path, WebhooksFile, context)
    return [e for e in loaded.webhooks if e.agency == agency_ori]


def warn_on_readable_secrets(endpoints: list[Endpoint]) -> list[Path]:
    """Log a warning for each secret file that group or others may read; return them."""
    readable = sorted({e.secret_file for e in endpoints if e.secret_file.stat().st_mode & 0o077})
    for path in readable:
        log.warning(
            "webhook secret file %s is readable by group or others (mode %s): anyone who can "
            "read it can forge alerts to the CAD; run chmod 600 %s",
            path,
            oct(path.stat().st_mode & 0o777),
            path,
        )
    return readable


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """What ``X-Mutualaid-Signature`` carries; receivers compute it the same way."""
    return "sha256=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def alert_json(hit: dict) -> bytes:
    return json.dumps(
        hit, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)
    ).encode()


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    attempts: int
    reason: str = ""


class Permanent(MutualaidError):
    """An answer that retrying will not change (wrong URL, refused signature)."""


def post(endpoint: Endpoint, secret: bytes, alert_id: str, body: bytes) -> None:
    """One signed POST; returns on 2xx, raises Permanent, or raises OSError to retry."""
    timestamp = int(time.time())
    request = urllib.request.Request(
        str(endpoint.url),
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "mutualaid-webhooks",
            "X-Mutualaid-Timestamp": str(timestamp),
            "X-Mutualaid-Signature": signature(secret, timestamp, body),
            "X-Mutualaid-Alert-Id": alert_id,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=endpoint.timeout_seconds):
            return
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code in RETRYABLE_STATUS:
            raise OSError(f"HTTP {exc.code} {exc.reason}") from None
        raise Permanent(f"HTTP {exc.code} {exc.reason}") from None
    except http.client.HTTPException as exc:  # a garbled answer; not an OSError like the rest
        raise OSError(f"bad HTTP answer: {type(exc).__name__}") from None


def deliver(
    endpoint: Endpoint,
    secret: bytes,
    alert_id: str,
    body: bytes,
    stop: threading.Event,
) -> Outcome:
    """POST until it succeeds, fails for good, runs out of attempts, or ``stop`` is set."""
    for attempt in range(1, endpoint.max_attempts + 1):
        try:
            post(endpoint, secret, alert_id, body)
            return Outcome(True, attempt)
        except Permanent as exc:
            return Outcome(False, attempt, f"{endpoint.url} answered {exc}; not retried")
        except OSError as exc:  # refused, unreachable, timed out, 429, 5xx
            last = f"{type(exc).__name__}: {exc}"
            WEBHOOK_FAILED_ATTEMPTS.labels(center=endpoint.agency).inc()
        if attempt < endpoint.max_attempts:
            wait = min(endpoint.max_backoff_seconds, endpoint.backoff_seconds * 2 ** (attempt - 1))
            if stop.wait(wait * random.uniform(0.5, 1.0)):
                break
    return Outcome(False, attempt, f"{endpoint.url} failed {attempt} times; last: {last}")


class WebhookSender:
    def __init__(self, settings: Settings, agency_ori: str, endpoints: list[Endpoint]) -> None:
        self.agency_ori = agency_ori
        self.topic = alerts_topic(agency_ori)
        self.endpoints = endpoints
        warn_on_readable_secrets(endpoints)
        # Read once at start: rotating a secret means restarting the sender.
        self._secrets = {e.url: e.secret_file.read_bytes().strip() for e in endpoints}
        codecs = codecs_for(settings)
        self._decode = codecs.deserializer(HIT_ALERT)
        self._dead_letters = DeadLetters(Letter, codecs, Stage.CONSUMERS)
        self._consumer = Consumer(
            consumer_config(settings, f"mutualaid-webhooks-{agency_ori.lower()}")
        )
        self._producer = Producer(producer_config(settings))

    def run(self, stop: threading.Event) -> None:
        self._consumer.subscribe([self.topic])
        try:
            while not stop.is_set():
                msg = self._consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                if self._handle(msg, stop):
                    commit_past(self._consumer, [msg], log)
        finally:
            self._consumer.close()

    def _handle(self, msg: Message, stop: threading.Event) -> bool:
        """Deliver one alert everywhere (or dead-letter it); False if stopped half-way."""
        try:
            hit = self._decode(
                msg.value(), SerializationContext(msg.topic(), msg.partition(), msg.offset())
            )
        except DeserializationError as exc:
            # Dead-lettered, not retried: the same bytes would stop every later alert for good.
            self._dead(msg, "undecodable", str(exc))
            return True
        if hit is None:
            return True  # a tombstone carries no alert
        body = alert_json(hit)
        age = (datetime.now(UTC) - hit["matched_at"]).total_seconds()
        for endpoint in self.endpoints:
            if endpoint.max_age_seconds and age > endpoint.max_age_seconds:
                log.warning(
                    "alert %s not sent to %s: matched %.0f s ago, past its max_age_seconds",
                    hit["alert_id"],
                    endpoint.url,
                    age,
                )
                WEBHOOK_DELIVERIES.labels(center=self.agency_ori, outcome="expired").inc()
                continue
            secret = self._secrets[endpoint.url]
            outcome = deliver(endpoint, secret, hit["alert_id"], body, stop)
            if stop.is_set() and not outcome.delivered:
                return False  # not given up on: send it again after the restart
            if outcome.delivered:
                WEBHOOK_DELIVERIES.labels(center=self.agency_ori, outcome="delivered").inc()
                latency = datetime.now(UTC) - hit["matched_at"]
                WEBHOOK_LATENCY.labels(center=self.agency_ori).observe(latency.total_seconds())
                continue
            log.error("alert %s dead-lettered: %s", hit["alert_id"], outcome.reason)
            self._dead(msg, "webhook_failed", outcome.reason)
            WEBHOOK_DELIVERIES.labels(center=self.agency_ori, outcome="dead_lettered").inc()
        return True

    def _dead(self, msg: Message, error_type: str, reason: str) -> None:
        letter = self._dead_letters.message(msg, error_type, reason, self.agency_ori)
        acks = DeliveryTracker()
        produce(self._producer, *letter, acks)
        acks.wait(self._producer)
