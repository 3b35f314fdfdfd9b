"""Sharing agreements on a real broker: who receives what, sealed fields, and the audit trail."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer

from mutualaid.agencies import load_registry
from mutualaid.crypto import DecryptionError, generate_keypair, load_keyring, newest_public_key
from mutualaid.disclosure import disclose, sealed_from_avro
from mutualaid.events import record_key
from mutualaid.policy import Agreement, Decision
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    SHARED_EVENT,
    AvroDeserializer,
    AvroSerializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import AUDIT_DISSEMINATION, Kind, Stage, share_topic
from support.brokers import dead_letters, read_topic, shared_events
from support.events import alpr_event, rms_event
from support.indexes import index_rows
from support.processes import running_stages, wait_for
from support.regions import Region, publish_source, shared_on

STORE = SchemaStore()
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.mark.broker
def test_agreements_decide_protect_and_audit(region: Region, tmp_path: Path) -> None:
    s = region.settings
    local, county, neighbour, federal = (
        region.local,
        region.county,
        region.neighbour,
        region.federal,
    )
    for ori in (county, neighbour, federal):
        generate_keypair(ori, s.public_keys_dir, s.private_keys_dir)
    everyone = [county, neighbour, federal]
    (tmp_path / "agreements" / "test.yaml").write_text(
        yaml.safe_dump(
            {
                "agreements": [
                    {
                        "id": "rms-regional",
                        "version": 2,
                        "owner": local,
                        "partners": everyone,
                        "kinds": ["rms.record"],
                        "conditions": {
                            "exclude_labels": ["juvenile", "sealed"],
                            "partner_types": ["local", "county", "state"],
                        },
                        "fields": {"persons[].ssn": "encrypt", "persons[].dob": "encrypt"},
                    },
                    # State law: plate reads never leave the state, never go to federal agencies.
                    {
                        "id": "alpr-in-state",
                        "version": 1,
                        "owner": local,
                        "partners": everyone,
                        "kinds": ["alpr.read"],
                        "conditions": {
                            "same_state_only": True,
                            "partner_types": ["local", "county"],
                        },
                    },
                ]
            }
        )
    )
    adult, juvenile = (
        rms_event(local, record_id="R-ADULT", at=NOW),
        rms_event(local, ["juvenile"], record_id="R-JUV", ssn="987-65-4321", at=NOW),
    )
    read = alpr_event(local, "A-1", at=NOW)
    with running_stages(region, tmp_path, [county, neighbour]):
        publish_source(region, Kind.RMS_RECORD, [adult, juvenile])
        publish_source(region, Kind.ALPR_READ, [read])

        audit_decode = AvroDeserializer(STORE, AUDIT_DISSEMINATION_SCHEMA)

        def audit_trail(enough: int, timeout: float) -> list[dict]:
            """The local agency's audit records, once there are ``enough``. The topic holds
            every earlier test's too (tens of thousands): each record is decoded once, not at
            every poll, which made this wait time out in CI."""
            decoded: list[dict] = []

            def audits(records: list) -> list[dict]:
                ctx = SerializationContext(AUDIT_DISSEMINATION)
                decoded.extend(audit_decode(m.value(), ctx) for m in records[len(decoded) :])
                return [a for a in decoded if a["source_ori"] == local]

            done = lambda r: len(audits(r)) >= enough  # noqa: E731
            return audits(read_topic(s.bootstrap_servers, AUDIT_DISSEMINATION, done, timeout))

        trail = audit_trail(9, timeout=60)
        decisions = Counter((a["record_id"], a["partner_ori"], a["decision"]) for a in trail)
        assert decisions == Counter(
            {
                ("R-ADULT", county, "SHARED"): 1,
                ("R-ADULT", neighbour, "SHARED"): 1,
                ("R-ADULT", federal, "DENIED"): 1,
                ("R-JUV", county, "DENIED"): 1,
                ("R-JUV", neighbour, "DENIED"): 1,
                ("R-JUV", federal, "DENIED"): 1,
                ("A-1", county, "SHARED"): 1,
                ("A-1", neighbour, "DENIED"): 1,
                ("A-1", federal, "DENIED"): 1,
            }
        )
        adult_to_county = next(
            a for a in trail if (a["record_id"], a["partner_ori"]) == ("R-ADULT", county)
        )
        assert adult_to_county["fields_encrypted"] == ["persons[0].dob", "persons[0].ssn"]
        assert "persons[0].ssn" not in adult_to_county["fields_in_clear"]
        assert adult_to_county["agreement_version"] == 2

        # The juvenile record reaches nobody; ALPR stays in state and away from federal partners.
        county_rms = shared_on(region, county, Kind.RMS_RECORD, until=2, timeout=5)
        assert [e["envelope"]["record_id"] for e in county_rms] == ["R-ADULT"]
        neighbour_rms = shared_on(region, neighbour, Kind.RMS_RECORD, until=2, timeout=3)
        assert [e["envelope"]["record_id"] for e in neighbour_rms] == ["R-ADULT"]
        assert shared_on(region, federal, Kind.RMS_RECORD, until=1, timeout=2) == []
        assert [
            e["envelope"]["record_id"] for e in shared_on(region, county, Kind.ALPR_READ, until=1)
        ] == ["A-1"]
        assert shared_on(region, neighbour, Kind.ALPR_READ, until=1, timeout=2) == []
        assert shared_on(region, federal, Kind.ALPR_READ, until=1, timeout=2) == []

        # On the county's topic the SSN is sealed for the county alone.
        (copy,) = county_rms
        assert copy["body"]["persons"][0]["ssn"] is None
        sealed = sealed_from_avro(copy["disclosure"]["sealed"])
        event_id = copy["envelope"]["event_id"]
        opened = load_keyring(county, s.private_keys_dir).open_fields(sealed, event_id=event_id)
        assert json.loads(opened["persons[0].ssn"]) == "123-45-6789"
        with pytest.raises(DecryptionError):
            load_keyring(neighbour, s.private_keys_dir).open_fields(sealed, event_id=event_id)
        with pytest.raises(DecryptionError):  # moved onto another event
            load_keyring(county, s.private_keys_dir).open_fields(
                sealed, event_id=juvenile["envelope"]["event_id"]
            )

        # The county's projector decrypted it into the county's own index.
        def indexed_ssn() -> str | None:
            rows = index_rows(
                s,
                county,
                "select cast(body as text) from records "
                "where record_id='R-ADULT' and deleted = false",
            )
            return json.loads(rows[0][0])["persons"][0]["ssn"] if rows else None

        assert wait_for(indexed_ssn, 30, "the county index to hold R-ADULT") == "123-45-6789"

        # Sealed at the source: every partner that had it gets a DELETE and a tombstone.
        sealed_version = rms_event(local, ["sealed"], record_id="R-ADULT", version=2, at=NOW)
        publish_source(region, Kind.RMS_RECORD, [sealed_version])
        for partner in (county, neighbour):
            topic = share_topic(partner, Kind.RMS_RECORD)
            records = read_topic(s.bootstrap_servers, topic, lambda r: len(r) >= 3, timeout=30)
            assert [m.value() is None for m in records] == [False, False, True]
            withdrawal = shared_events(s, partner, Kind.RMS_RECORD, records)[1]
            assert (
                withdrawal["envelope"]["op"],
                withdrawal["envelope"]["version"],
                withdrawal["body"],
            ) == ("DELETE", 2, None)
        assert (
            wait_for(
                lambda: indexed_ssn() is None and "gone",
                30,
                "the county index to drop the sealed record",
            )
            == "gone"
        )
        trail = audit_trail(11, timeout=30)
        withdrawn = sorted(a["partner_ori"] for a in trail if a["decision"] == "WITHDRAWN")
        assert withdrawn == sorted([county, neighbour])


@pytest.mark.broker
def test_an_edited_agreement_applies_from_the_next_event(region: Region, tmp_path: Path) -> None:
    # The Nevada agency's reads: California's ALPR rule would keep a CA agency's from Nevada.
    local, county, neighbour = region.local, region.county, region.neighbour
    agreements = tmp_path / "agreements" / "test.yaml"

    def write(version: int, partners: list[str]) -> None:
        agreements.write_text(
            yaml.safe_dump(
                {
                    "agreements": [
                        {
                            "id": "alpr",
                            "version": version,
                            "owner": neighbour,
                            "partners": partners,
                            "kinds": ["alpr.read"],
                        }
                    ]
                }
            )
        )

    write(1, [county])
    with running_stages(region, tmp_path, []):
        publish_source(
            region, Kind.ALPR_READ, [alpr_event(neighbour, "A-1", at=NOW)], owner=neighbour
        )
        assert [
            e["envelope"]["record_id"] for e in shared_on(region, county, Kind.ALPR_READ, until=1)
        ] == ["A-1"]
        write(2, [county, local])

        def applied() -> bool:
            log = (tmp_path / "router.log").read_text()
            return "agreements reloaded: alpr v2" in log

        wait_for(applied, 30, "the router to reload the edited agreement")
        publish_source(
            region, Kind.ALPR_READ, [alpr_event(neighbour, "A-2", at=NOW)], owner=neighbour
        )
        to_county = shared_on(region, county, Kind.ALPR_READ, until=2)
        # Different records, different partitions: compare by record, not by arrival order.
        assert {
            e["envelope"]["record_id"]: e["disclosure"]["agreement_version"] for e in to_county
        } == {"A-1": 1, "A-2": 2}
        to_local = shared_on(region, local, Kind.ALPR_READ, until=1)
        assert [e["envelope"]["record_id"] for e in to_local] == ["A-2"]
        # Nothing sent twice while the agreements changed underneath.
        assert len(shared_on(region, county, Kind.ALPR_READ, until=3, timeout=3)) == 2

        # Narrowed: the county is no longer a partner, and what it already holds is recalled.
        write(3, [local])
        wait_for(
            lambda: all(
                line in (tmp_path / "router.log").read_text()
                for line in (
                    "2 shared record(s) to recheck against the new agreements",
                    "agreements reloaded: alpr v3",
                )
            ),
            30,
            "the narrowed agreement",
        )
        recalled = shared_on(region, county, Kind.ALPR_READ, until=6)
        deletes = {
            e["envelope"]["record_id"]
            for e in recalled
            if e is not None and e["envelope"]["op"] == "DELETE"
        }
        seen = [e and (e["envelope"]["record_id"], e["envelope"]["op"]) for e in recalled]
        assert deletes == {"A-1", "A-2"}, seen
        assert sum(e is None for e in recalled) == 2  # and their tombstones


@pytest.mark.broker
def test_a_restarted_router_still_knows_who_holds_what(region: Region, tmp_path: Path) -> None:
    local, county = region.local, region.county
    (tmp_path / "agreements" / "test.yaml").write_text(
        yaml.safe_dump(
            {
                "agreements": [
                    {
                        "id": "alpr",
                        "version": 1,
                        "owner": local,
                        "partners": [county],
                        "kinds": ["alpr.read"],
                    }
                ]
            }
        )
    )
    with running_stages(region, tmp_path / "first", []):
        publish_source(region, Kind.ALPR_READ, [alpr_event(local, "A-1", at=NOW)])
        assert len(shared_on(region, county, Kind.ALPR_READ, until=1)) == 1
    deleted = alpr_event(local, "A-1", version=2, op="DELETE", at=NOW)
    with running_stages(region, tmp_path / "second", []):
        publish_source(region, Kind.ALPR_READ, [deleted])
        records = shared_on(region, county, Kind.ALPR_READ, until=3)
        assert [e and (e["envelope"]["op"], e["envelope"]["version"]) for e in records] == [
            ("UPSERT", 1),
            ("DELETE", 2),
            None,
        ]  # None: the tombstone


@pytest.mark.broker
def test_a_record_the_partner_cannot_open_is_dead_lettered_not_indexed(
    region: Region, tmp_path: Path
) -> None:
    s = region.settings
    county, neighbour = region.county, region.neighbour
    for ori in (county, neighbour):
        generate_keypair(ori, s.public_keys_dir, s.private_keys_dir)
    event = rms_event(region.local, record_id="R-WRONG-KEY", at=NOW)
    agreement = Agreement(
        id="a",
        version=1,
        owner=region.local,
        partners=[county],
        kinds=[Kind.RMS_RECORD],
        fields={"persons[].ssn": "encrypt"},
    )
    actions = agreement.actions_for(Kind.RMS_RECORD, STORE.get("mutualaid.rms.Record"))
    # Addressed to the county but sealed to the neighbour's key: as if misrouted or forged.
    shared, _ = disclose(
        event,
        Decision.under(county, agreement, {}, "SHARED"),
        actions,
        registry=load_registry(s.agencies_file),
        public_key=newest_public_key(neighbour, s.public_keys_dir),
        hash_key=None,
    )
    topic = share_topic(county, Kind.RMS_RECORD)
    producer = Producer({"bootstrap.servers": s.bootstrap_servers})
    producer.produce(
        topic,
        AvroSerializer(STORE, SHARED_EVENT[Kind.RMS_RECORD])(shared, SerializationContext(topic)),
        record_key(event["envelope"]),
    )
    assert producer.flush(10) == 0
    with running_stages(region, tmp_path, [county]):
        (letter,) = dead_letters(
            s.bootstrap_servers, Stage.CONSUMERS, lambda d: d["source"] == topic
        )
    assert letter["error_type"] == "decrypt_failed"
    assert f"do not open with {county}'s keys" in letter["reason"]
    assert index_rows(s, county, "select count(*) from records") == [(0,)]
