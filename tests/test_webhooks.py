"""Signed webhooks to a real HTTP receiver: signatures verify, failures are retried, an endpoint
that never recovers ends in the dead-letter topic while later alerts still go out."""

from __future__ import annotations

import sys
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from mutualaid.broker import free_port
from mutualaid.processes import spawn, stop
from mutualaid.serde import HIT_ALERT, AvroSerializer, SchemaStore, SerializationContext
from mutualaid.topics import Stage, alerts_topic
from support.brokers import dead_letters
from support.processes import metric, mutualaid_cli, wait_for
from support.regions import Region
from support.webhooks import Receiver, configure, receiving, secret_file


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving({"/flaky": 2, "/down": 10_000}) as server:
        yield server


def hit(center: str, plate: str, age: timedelta = timedelta(0)) -> dict:
    now = datetime.now(UTC) - age
    return {
        "alert_id": str(uuid.uuid4()),
        "center_ori": center,
        "match": "EXACT",
        "read_event_id": str(uuid.uuid4()),
        "read_source_ori": center,
        "read_record_id": f"read-{plate}",
        "read_occurred_at": now,
        "read_ingested_at": now,
        "read": {"plate": plate, "plate_state": "CA"},
        "entry_owner_ori": center,
        "entry_id": "V1",
        "entry": {"plate": plate, "reason": "stolen_vehicle"},
        "withheld_fields": [],
        "matched_at": now,
    }


def test_signed_retried_and_dead_lettered(
    region: Region, tmp_path: Path, receiver: Receiver
) -> None:
    city = region.local
    fast = {
        "secret_file": secret_file(tmp_path, receiver),
        "backoff_seconds": 0.05,
        "max_attempts": 3,
    }
    config = configure(
        region,
        tmp_path,
        [
            {"agency": city, "url": f"{receiver.url}/flaky", **fast},
            {"agency": city, "url": f"{receiver.url}/down", **fast},
        ],
    )
    alerts = [hit(city, "7ABC123"), hit(city, "8XYZ789")]
    topic = alerts_topic(city)
    encode = AvroSerializer(SchemaStore(), HIT_ALERT)
    producer = Producer({"bootstrap.servers": region.settings.bootstrap_servers})
    for alert in alerts:
        producer.produce(topic, encode(alert, SerializationContext(topic)), alert["alert_id"])
    assert producer.flush(10) == 0

    argv = [sys.executable, "-m", "cli", "--config", str(config)]
    sender = spawn([*argv, "webhooks", "--agency", city], log=tmp_path / "webhooks.log")
    try:
        letters = wait_for(
            lambda: (
                found
                if len(
                    found := dead_letters(
                        region.settings.bootstrap_servers,
                        Stage.CONSUMERS,
                        lambda d: d["source_ori"] == city,
                        timeout=2,
                    )
                )
                >= 2
                else None
            ),
            60,
            "both alerts dead-lettered for the endpoint that is down",
        )
    finally:
        stop(sender, timeout=10)

    flaky = [r for r in receiver.requests if r["path"] == "/flaky"]
    assert all(r["verified"] for r in receiver.requests)
    # The first alert failed twice (503) and got through on the third try; the second at once.
    assert [(r["alert_id"], r["status"]) for r in flaky] == [
        (alerts[0]["alert_id"], 503),
        (alerts[0]["alert_id"], 503),
        (alerts[0]["alert_id"], 200),
        (alerts[1]["alert_id"], 200),
    ]
    assert flaky[-1]["body"]["read"]["plate"] == "8XYZ789"
    down = [r for r in receiver.requests if r["path"] == "/down"]
    assert len(down) == 6  # three attempts for each alert
    assert [(d["error_type"], d["source"]) for d in letters] == [("webhook_failed", topic)] * 2
    assert "failed 3 times; last: OSError: HTTP 503" in letters[0]["reason"]
    assert receiver.secret.decode() not in (tmp_path / "webhooks.log").read_text()


def test_a_bad_webhooks_file_stops_start_up_naming_the_field(
    region: Region, tmp_path: Path
) -> None:
    config = configure(
        region, tmp_path, [{"agency": region.local, "url": "not a url", "secret_file": "/nope"}]
    )
    result = mutualaid_cli(region, "--config", str(config), "webhooks", "--agency", region.local)
    assert result.returncode == 2
    # yaml.safe_dump sorts keys: agency (line 2), secret_file (3), url (4).
    assert "webhooks.yaml:3: webhooks[0].secret_file: '/nope' is not allowed" in result.stderr
    assert "webhooks.yaml:4: webhooks[0].url: 'not a url' is not allowed" in result.stderr
    assert "Fix: " in result.stderr


def test_an_undecodable_record_is_dead_lettered_and_later_alerts_go_out(
    region: Region, tmp_path: Path, receiver: Receiver
) -> None:
    city = region.local
    metrics_port = free_port()
    config = configure(
        region,
        tmp_path,
        [
            {
                "agency": city,
                "url": f"{receiver.url}/ok",
                "secret_file": secret_file(tmp_path, receiver),
            }
        ],
        metrics_port=metrics_port,
    )
    topic = alerts_topic(city)
    alert = hit(city, "7ABC123")
    producer = Producer({"bootstrap.servers": region.settings.bootstrap_servers})
    producer.produce(topic, b"not an alert", b"garbage")
    producer.produce(
        topic, AvroSerializer(SchemaStore(), HIT_ALERT)(alert, SerializationContext(topic)), b"k"
    )
    assert producer.flush(10) == 0

    argv = [sys.executable, "-m", "cli", "--config", str(config)]
    sender = spawn([*argv, "webhooks", "--agency", city], log=tmp_path / "webhooks.log")
    try:
        wait_for(lambda: receiver.requests, 60, "the good alert delivered past the bad record")
        [letter] = dead_letters(
            region.settings.bootstrap_servers, Stage.CONSUMERS, lambda d: d["source_ori"] == city
        )
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
    finally:
        stop(sender, timeout=10)

    assert [r["alert_id"] for r in receiver.requests] == [alert["alert_id"]]
    assert (letter["error_type"], letter["source"], letter["payload"]) == (
        "undecodable",
        topic,
        b"not an alert",
    )
    samples = metrics.decode()
    center = f'center="{city}"'
    assert f'mutualaid_webhook_deliveries_total{{{center},outcome="delivered"}} 1.0' in samples
    assert f"mutualaid_webhook_delivery_latency_seconds_count{{{center}}} 1.0" in samples
    assert 'mutualaid_dead_letters_total{reason="undecodable",stage="consumers"} 1.0' in samples


def test_an_alert_older_than_max_age_is_not_sent(
    region: Region, tmp_path: Path, receiver: Receiver
) -> None:
    city = region.local
    metrics_port = free_port()
    secret = secret_file(tmp_path, receiver)
    endpoint = {"agency": city, "url": f"{receiver.url}/ok", "secret_file": secret}
    config = configure(region, tmp_path, [endpoint], metrics_port=metrics_port)  # 900 s
    stale, fresh = hit(city, "7ABC123", age=timedelta(hours=2)), hit(city, "8XYZ789")
    topic = alerts_topic(city)
    encode = AvroSerializer(SchemaStore(), HIT_ALERT)
    producer = Producer({"bootstrap.servers": region.settings.bootstrap_servers})
    for alert in (stale, fresh):  # one partition: in this order
        producer.produce(topic, encode(alert, SerializationContext(topic)), b"k")
    assert producer.flush(10) == 0

    argv = [sys.executable, "-m", "cli", "--config", str(config)]
    sender = spawn([*argv, "webhooks", "--agency", city], log=tmp_path / "webhooks.log")
    try:
        wait_for(lambda: receiver.requests, 60, "the fresh alert delivered")
        expired = f'mutualaid_webhook_deliveries_total{{center="{city}",outcome="expired"}}'
        assert metric(metrics_port, expired) == 1
    finally:
        stop(sender, timeout=10)
    assert [r["alert_id"] for r in receiver.requests] == [fresh["alert_id"]]
    assert f"alert {stale['alert_id']} not sent" in (tmp_path / "webhooks.log").read_text()
