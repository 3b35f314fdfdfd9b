"""The dispatch console in real headless Chromium (Debian's, driven by playwright): a dispatcher
logs in, sees a hit arrive live, acknowledges it; other agencies see none of it."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer

from mutualaid.broker import free_port
from mutualaid.serde import (
    ALERT_ACK,
    HIT_ALERT,
    AvroDeserializer,
    AvroSerializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import alert_acks_topic, alerts_topic
from support.brokers import read_topic
from support.browser import needs_chromium, sign_in
from support.processes import metric, mutualaid_cli, serving, token_for
from support.regions import Region

pytestmark = needs_chromium


def hit(center: str, plate: str, notes: str) -> dict:
    now = datetime.now(UTC).replace(microsecond=0)
    return {
        "alert_id": str(uuid.uuid4()),
        "center_ori": center,
        "match": "EXACT",
        "read_event_id": str(uuid.uuid4()),
        "read_source_ori": center,
        "read_record_id": "r1",
        "read_occurred_at": now - timedelta(seconds=20),
        "read_ingested_at": now - timedelta(seconds=19),
        "read": {
            "plate": plate,
            "plate_state": "CA",
            "camera_name": "Main St & 5th",
            "latitude": 38.94,
            "longitude": -119.98,
            "vehicle_color": "Silver",
            "vehicle_make": "Toyota",
            "vehicle_model": "Camry",
        },
        "entry_owner_ori": center,
        "entry_id": "V123456789",
        "entry": {
            "plate": plate,
            "plate_state": "CA",
            "reason": "stolen_vehicle",
            "caution": "armed and dangerous",
            "notes": notes,
        },
        "withheld_fields": [],
        "matched_at": now,
    }


def publish_hit(region: Region, alert: dict) -> None:
    topic = alerts_topic(alert["center_ori"])
    value = AvroSerializer(SchemaStore(), HIT_ALERT)(alert, SerializationContext(topic))
    producer = Producer({"bootstrap.servers": region.settings.bootstrap_servers})
    producer.produce(topic, value, alert["alert_id"].encode())
    assert producer.flush(10) == 0


def console(region: Region, agency: str, log: Path, metrics_port: int = 0):
    config = log.with_suffix(".yaml")
    values = yaml.safe_load(region.config_file.read_text()) | {"metrics_port": metrics_port}
    config.write_text(yaml.safe_dump(values))
    return serving(config, ["console", "--agency", agency], log)


def test_dispatcher_sees_a_hit_live_and_acknowledges_it(
    region: Region, tmp_path: Path, browser
) -> None:
    city, county = region.local, region.county
    kim = token_for(region, "console-user", city, "dispatcher.kim")
    other = token_for(region, "console-user", county, "dispatcher.ray")
    # A record nobody can read must not stop the console from showing the ones after it.
    producer = Producer({"bootstrap.servers": region.settings.bootstrap_servers})
    producer.produce(alerts_topic(city), b"not an alert", b"garbage")
    assert producer.flush(10) == 0
    metrics_port = free_port()
    with console(region, city, tmp_path / "console.log", metrics_port) as url:
        page = browser.new_page()
        sign_in(page, url, "dispatcher.kim", kim)
        page.wait_for_selector("#status:text('live')", timeout=15_000)
        assert not page.locator("form#login").is_visible()
        assert page.locator("[data-testid=hit]").count() == 0

        # The alert is published after the page is open: it must arrive without a reload.
        hostile = '<img src=x onerror="document.title=1">'
        alert = hit(city, "7ABC123", f"seen leaving the lot {hostile}")
        publish_hit(region, alert)
        card = page.locator("[data-testid=hit]")
        card.wait_for(timeout=15_000)
        assert card.locator(".plate").inner_text() == "7ABC123"
        assert card.locator(".reason").inner_text().lower() == "stolen vehicle"
        assert "armed and dangerous" in card.inner_text()
        assert "openstreetmap.org/?mlat=38.94&mlon=-119.98" in card.locator("a").get_attribute(
            "href"
        )
        assert hostile in card.locator(".notes").inner_text()  # shown as text, never as markup
        assert card.locator("img").count() == 0
        first_age = card.locator("[data-testid=age]").inner_text()
        assert first_age.startswith("read ") and first_age.endswith("s ago")
        page.wait_for_function(
            "(old) => document.querySelector('[data-testid=age]').textContent !== old",
            arg=first_age,
            timeout=5_000,
        )  # time since the read keeps ticking

        card.locator("[data-testid=ack]").click()
        page.wait_for_selector("text=acknowledged by dispatcher.kim", timeout=15_000)
        acks_topic = alert_acks_topic(city)
        [record] = read_topic(region.settings.bootstrap_servers, acks_topic, lambda r: len(r) >= 1)
        ack = AvroDeserializer(SchemaStore(), ALERT_ACK)(
            record.value(), SerializationContext(acks_topic)
        )
        assert (ack["alert_id"], ack["user"], ack["center_ori"]) == (
            alert["alert_id"],
            "dispatcher.kim",
            city,
        )
        # A console opened later shows it acknowledged, from the topics alone.
        later = browser.new_page()
        sign_in(later, url, "dispatcher.kim", kim)
        later.wait_for_selector("text=acknowledged by dispatcher.kim", timeout=15_000)
        center = f'{{center="{city}"}}'
        assert metric(metrics_port, f"mutualaid_console_alerts_total{center}") == 1
        assert metric(metrics_port, f"mutualaid_alert_acks_total{center}") == 1
        assert metric(metrics_port, f"mutualaid_console_clients{center}") == 2

        # A dispatcher of another agency cannot log in to this console...
        intruder = browser.new_page()
        sign_in(intruder, url, "dispatcher.ray", other)
        intruder.wait_for_selector("#login-error:has-text('not a dispatcher')", timeout=10_000)
        assert intruder.locator("[data-testid=hit]").count() == 0
        # ...and nothing is served without a session.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/events", timeout=5)
        assert refused.value.code == 401

        # Revoking a dispatcher ends the open sessions: the next update is not sent, the page
        # goes back to the login form.
        revoked = mutualaid_cli(
            region, "console-user", "remove", "--agency", city, "--user", "dispatcher.kim"
        )
        assert revoked.returncode == 0, revoked.stderr
        publish_hit(region, hit(city, "9REV000", "after revocation"))
        page.wait_for_selector("form#login:visible", timeout=20_000)
        assert page.locator("[data-testid=hit]").count() == 0
        assert "9REV000" not in page.content()

    # The county's own console shows the county's alerts, never the city's.
    with console(region, county, tmp_path / "county-console.log") as url:
        page = browser.new_page()
        sign_in(page, url, "dispatcher.ray", other)
        publish_hit(region, hit(county, "5XYZ999", "county entry"))
        page.locator("[data-testid=hit]").wait_for(timeout=15_000)
        plates = page.locator("[data-testid=hit] .plate").all_inner_texts()
        assert plates == ["5XYZ999"]
