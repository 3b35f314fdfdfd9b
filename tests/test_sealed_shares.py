"""Sealed share topics on a real broker: the raw bytes a share topic holds carry no clear body
field, the partner's projector still indexes and searches them, and a record that does not
open is dead-lettered with why and where while the projector keeps going."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer

from mutualaid.crypto import generate_keypair
from mutualaid.events import new_envelope
from mutualaid.sealing import SEALED_SHARE
from mutualaid.serde import AvroDeserializer, AvroSerializer, SchemaStore, SerializationContext
from mutualaid.topics import Kind, Stage, share_topic
from support.brokers import dead_letters, read_topic
from support.indexes import index_rows
from support.processes import mutualaid_cli, running_stages, wait_for
from support.regions import Region, publish_source

STORE = SchemaStore()
NOW = datetime.now(UTC).replace(microsecond=0)
# Distinct plates and places, so every one can be looked for in the raw bytes.
PLATES = [f"{n}SEAL{n:02d}" for n in range(1, 9)]
CAMERAS = [f"Kingsbury Grade camera {n}" for n in range(1, 9)]


def read(owner: str, n: int) -> dict:
    envelope = new_envelope(
        source_ori=owner,
        source_system="test",
        kind=Kind.ALPR_READ,
        record_id=f"S-{n}",
        version=1,
        occurred_at=NOW,
    )
    body = {
        "plate": PLATES[n],
        "plate_state": "NV",
        "camera_name": CAMERAS[n],
        "latitude": 38.96,
        "longitude": -119.93,
    }
    return {"envelope": envelope, "body": body}


@pytest.mark.broker
def test_share_topics_hold_no_clear_body_and_the_partner_still_searches(
    region: Region, tmp_path: Path
) -> None:
    s = region.settings
    assert s.share_sealing == "keyed"  # the default
    partners = (region.local, region.county)  # the neighbour shares reads with both
    for ori in partners:
        generate_keypair(ori, s.public_keys_dir, s.private_keys_dir)
    last = len(PLATES) - 1
    # Published before the stages start, so the publish does not compete with their start-up
    # for the two cores (the router reads its sources from the beginning).
    publish_source(
        region, Kind.ALPR_READ, [read(region.neighbour, n) for n in range(last)],
        owner=region.neighbour,
    )  # fmt: skip
    with running_stages(region, tmp_path / "logs", [region.county]):
        sealed = AvroDeserializer(STORE, SEALED_SHARE)
        held = {}
        for partner in partners:
            topic = share_topic(partner, Kind.ALPR_READ)
            records = read_topic(s.bootstrap_servers, topic, lambda r: len(r) >= last)
            assert len(records) == last
            raw = b"".join(m.value() for m in records)
            for text in [*PLATES, *CAMERAS, "Kingsbury", "SEAL"]:
                assert text.encode() not in raw, f"{text} in clear on {topic}"
            clear = [sealed(m.value(), SerializationContext(topic)) for m in records]
            assert {(c["source_ori"], c["partner_ori"], c["kind"]) for c in clear} == {
                (region.neighbour, partner, "alpr.read")
            }
            assert sorted(c["record_id"] for c in clear) == [f"S-{n}" for n in range(last)]
            assert len({c["data_key_id"] for c in clear}) == 1  # one data key, wrapped once
            held[partner] = records

        # The county's projector opens and indexes every read, and a search finds one.
        wait_for(
            lambda: index_rows(s, region.county, "select count(*) from records") == [(last,)],
            60,
            "the county's index to hold every sealed read",
        )
        searched = mutualaid_cli(
            region, "search", "--agency", region.county, "--plate", PLATES[3],
            "--reason", "sealed test", "--user", "det.test",
        )  # fmt: skip
        assert searched.returncode == 0, searched.stderr
        assert "1 record(s) visible" in searched.stdout and CAMERAS[3] in searched.stdout

        # A record sealed to the local PD's key, put on the county's topic, does not open
        # there: dead-lettered with the reason and where it was; then the next read indexes.
        county_topic = share_topic(region.county, Kind.ALPR_READ)
        misrouted = held[region.local][0]
        producer = Producer({"bootstrap.servers": s.bootstrap_servers})
        producer.produce(county_topic, misrouted.value(), misrouted.key())
        # An altered one: a genuine county record whose clear record id was changed.
        genuine = sealed(held[region.county][0].value(), SerializationContext(county_topic))
        altered = AvroSerializer(STORE, SEALED_SHARE)(
            {**genuine, "record_id": "S-99"}, SerializationContext(county_topic)
        )
        producer.produce(county_topic, altered, b"altered")
        assert producer.flush(10) == 0

        def unsealable() -> list[dict]:
            return [
                d
                for d in dead_letters(
                    s.bootstrap_servers, Stage.CONSUMERS, lambda d: d["source"] == county_topic, 5
                )
                if d["error_type"] == "unseal_failed"
            ]

        every = wait_for(lambda: len(unsealable()) == 2 and unsealable(), 60, "2 dead letters")
        misrouted_letter, altered_letter = sorted(every, key=lambda d: d["reason"])
        assert f"sealed for {region.local}, not for {region.county}" in misrouted_letter["reason"]
        assert "data key" in altered_letter["reason"] and "altered" in altered_letter["reason"]
        assert {d["payload"] for d in every} == {misrouted.value(), altered}
        assert all(d["position"] for d in every)
        publish_source(
            region, Kind.ALPR_READ, [read(region.neighbour, last)], owner=region.neighbour
        )
        wait_for(
            lambda: index_rows(s, region.county, "select count(*) from records") == [(last + 1,)],
            60,
            "the projector to keep indexing after the dead letters",
        )
