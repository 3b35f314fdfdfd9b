"""Throwaway regions: agencies with fresh ORIs, their agreements, settings and topics, on the
session's broker."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import yaml
from confluent_kafka import Producer

from mutualaid.auditlog import audit_stages, ensure_stage_keys
from mutualaid.events import record_key
from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.serde import (
    SOURCE_EVENT,
    AvroSerializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.settings import Settings
from mutualaid.topics import Kind, share_topic, source_topic, topics_for
from support.brokers import Broker, read_topic, shared_events


def random_ori(state: str) -> str:
    return state + "".join(random.choices(string.digits, k=7))


@dataclass(frozen=True)
class Region:
    """A throwaway set of agencies and agreements, with settings pointing at them."""

    settings: Settings
    config_file: Path
    local: str  # CA local PD, dispatch center
    county: str  # CA county sheriff
    neighbour: str  # NV local PD
    federal: str  # federal task force: no agreement names it


# An assurance in effect for the shipped CA ALPR rule: signed a year ago, for another year.
CA_ALPR_ASSURANCE = {
    "rule": "ca-alpr-1798.90.55",
    "document": "test assurance",
    "signed": str(date.today() - timedelta(days=365)),
    "expires": str(date.today() + timedelta(days=365)),
}


def make_region(tmp_path: Path, broker: Broker, **settings: object) -> Region:
    """Four agencies with fresh ORIs (a CA city, its county, a NV neighbour, a federal task
    force) and two agreements (city -> county, neighbour -> both CA agencies), on ``broker``."""
    local, county, neighbour, federal = (random_ori(s) for s in ("CA", "CA", "NV", "DC"))
    agencies = [
        {
            "ori": local,
            "name": "Test City PD",
            "state": "CA",
            "type": "local",
            "dispatch_center": True,
            "jurisdiction": {"latitude": 38.94, "longitude": -119.98, "radius_km": 12},
            "assurances": [CA_ALPR_ASSURANCE],
        },
        {
            "ori": county,
            "name": "Test County SO",
            "state": "CA",
            "type": "county",
            "jurisdiction": {"latitude": 38.89, "longitude": -120.05, "radius_km": 45},
            # California ALPR reads reach it only with an assurance on file (deploy/rules/).
            "assurances": [CA_ALPR_ASSURANCE],
        },
        {
            "ori": neighbour,
            "name": "Next State PD",
            "state": "NV",
            "type": "local",
            "jurisdiction": {"latitude": 38.96, "longitude": -119.93, "radius_km": 10},
        },
        {"ori": federal, "name": "Federal Task Force", "state": "DC", "type": "federal"},
    ]
    agreements = [
        {
            "id": "local-to-county",
            "version": 1,
            "owner": local,
            "partners": [county],
            "kinds": ["alpr.read"],
        },
        {
            "id": "neighbour-to-ca",
            "version": 1,
            "owner": neighbour,
            "partners": [local, county],
            "kinds": ["alpr.read"],
        },
    ]
    (tmp_path / "agreements").mkdir()
    (tmp_path / "agencies.yaml").write_text(yaml.safe_dump({"agencies": agencies}))
    (tmp_path / "agreements" / "test.yaml").write_text(yaml.safe_dump({"agreements": agreements}))
    # Its own router group and tables: tests share one broker.
    oris = (local, county, neighbour, federal)
    return configured_region(
        tmp_path, broker, oris, router_id=f"router-{local.lower()}", **settings
    )


def configured_region(
    tmp_path: Path, broker: Broker, oris: tuple[str, str, str, str], **settings: object
) -> Region:
    """The region whose agencies.yaml and agreements/ are in ``tmp_path``: its settings, also
    written to mutualaid.yaml there for the stages run as processes, and its topics created."""
    values = {
        "bootstrap_servers": broker.bootstrap_servers,
        "data_dir": str(tmp_path / "var"),
        "agencies_file": str(tmp_path / "agencies.yaml"),
        "agreements_dir": str(tmp_path / "agreements"),
        "metrics_port": 0,
        **settings,
    }
    config_file = tmp_path / "mutualaid.yaml"
    config_file.write_text(yaml.safe_dump(values))
    region = Region(Settings(**values), config_file, *oris)
    # Every stage signs its audit records and refuses to start without its key.
    ensure_stage_keys(region.settings, audit_stages(region.settings, list(oris)))
    topics = topics_for(list(oris), region.settings.partitions, region.settings.retention)
    rf = region.settings.replication_factor
    ensure_topics(wait_for_broker(region.settings), topics, rf)  # with its kafka: credentials
    return region


def publish_source(
    region: Region,
    kind: Kind,
    events: list[dict],
    *,
    owner: str | None = None,
    partition: int | None = None,
) -> None:
    """Publish source events to an agency's topic (default: the region's local agency), as a
    connector would; ``partition`` pins them all to one partition, in this order."""
    topic = source_topic(owner or region.local, kind)
    encode = AvroSerializer(SchemaStore(), SOURCE_EVENT[kind])
    producer = Producer({"bootstrap.servers": region.settings.bootstrap_servers})
    pinned = {} if partition is None else {"partition": partition}
    for event in events:
        value = encode(event, SerializationContext(topic))
        producer.produce(topic, value, record_key(event["envelope"]), **pinned)
    assert producer.flush(10) == 0


# In the dispatch region: inside the city's jurisdiction, and far from every center.
IN_CITY = (38.94, -119.98)


FAR_AWAY = (37.00, -118.00)


def dispatch_region(tmp_path: Path, broker: Broker, **settings: object) -> Region:
    """The hit-alert region of ``write_dispatch_region`` (no field actions), configured, with
    a router and a matcher group (and tables) of its own on the shared broker."""
    city, county, neighbour, federal = (random_ori(s) for s in ("CA", "CA", "NV", "DC"))
    write_dispatch_region(tmp_path, city, county, neighbour, federal, field_actions=False)
    own = {"router_id": f"router-{city.lower()}", "matcher_id": f"matcher-{city.lower()}"}
    return configured_region(
        tmp_path, broker, (city, county, neighbour, federal), **own, **settings
    )


def write_dispatch_region(
    root: Path, city: str, county: str, neighbour: str, federal: str, *, field_actions: bool
) -> None:
    """agencies.yaml and agreements/ for the hit-alert tests: three dispatch centers far apart
    and a federal agency that dispatches no one. The neighbour shares its reads with both CA
    centers; the county shares its hotlist with the city. With ``field_actions`` the reads go
    without images and the hotlist without notes."""
    agencies = [
        {"ori": city, "name": "City PD", "state": "CA", "type": "local", "dispatch_center": True,
         "jurisdiction": {"latitude": 38.94, "longitude": -119.98, "radius_km": 5}},
        {"ori": county, "name": "County SO", "state": "CA", "type": "county",
         "dispatch_center": True,
         "jurisdiction": {"latitude": 38.60, "longitude": -120.50, "radius_km": 10}},
        {"ori": neighbour, "name": "Neighbour PD", "state": "NV", "type": "local",
         "dispatch_center": True,
         "jurisdiction": {"latitude": 39.50, "longitude": -119.80, "radius_km": 10}},
        {"ori": federal, "name": "Task Force", "state": "DC", "type": "federal"},
    ]  # fmt: skip
    reads = {"id": "nv-reads", "version": 1, "owner": neighbour, "partners": [city, county],
             "kinds": ["alpr.read"]}  # fmt: skip
    hotlist = {"id": "county-hotlist", "version": 2, "owner": county, "partners": [city],
               "kinds": ["hotlist.entry"]}  # fmt: skip
    if field_actions:
        reads["fields"], hotlist["fields"] = {"image_ref": "drop"}, {"notes": "drop"}
    (root / "agreements").mkdir()
    (root / "agencies.yaml").write_text(yaml.safe_dump({"agencies": agencies}))
    (root / "agreements" / "a.yaml").write_text(yaml.safe_dump({"agreements": [reads, hotlist]}))


def shared_on(region: Region, partner: str, kind: Kind, until: int, timeout: float = 30) -> list:
    """The events the router shared with ``partner`` on ``share.<partner>.<kind>``, as the
    partner reads them (opened with its keys; None: a tombstone), once there are ``until``
    records (or fewer at the deadline)."""
    topic = share_topic(partner, kind)
    records = read_topic(
        region.settings.bootstrap_servers, topic, lambda r: len(r) >= until, timeout=timeout
    )
    return shared_events(region.settings, partner, kind, records)
