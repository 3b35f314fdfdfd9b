"""Issue #11's cases 1, 2, 3 and 7 on the real broker, with the router and a projector running
as `mutualaid up` runs them, each shown fixed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from conftest import (
    Region,
    index_rows,
    publish_source,
    read_topic,
    running_stages,
    shared_events,
    wait_for,
)
from mutualaid.crypto import generate_keypair
from mutualaid.events import new_envelope
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    AvroDeserializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import AUDIT_DISSEMINATION, Kind, share_topic

STORE = SchemaStore()
NOW = datetime.now(UTC).replace(microsecond=0)


def rms(owner: str, record_id: str, labels: list[str]) -> dict:
    envelope = new_envelope(
        source_ori=owner,
        source_system="test",
        kind=Kind.RMS_RECORD,
        record_id=record_id,
        version=1,
        occurred_at=NOW - timedelta(hours=2),
        labels=labels,
    )
    person = {"role": "ARRESTEE", "last_name": "Doe", "dob": "1990-05-01", "ssn": "123-45-6789"}
    body = {
        "incident_number": record_id,
        "persons": [person],
        "narrative": "informant CI-7 places the car at 18 Pine Ct",
    }
    return {"envelope": envelope, "body": body}


def alpr(owner: str, record_id: str) -> dict:
    envelope = new_envelope(
        source_ori=owner,
        source_system="test",
        kind=Kind.ALPR_READ,
        record_id=record_id,
        version=1,
        occurred_at=NOW,
    )
    body = {"plate": "7ABC123", "latitude": 38.94, "longitude": -119.98}
    return {"envelope": envelope, "body": body}


def shared_on(region: Region, partner: str, kind: Kind, until: int, timeout: float = 30) -> list:
    topic = share_topic(partner, kind)
    records = read_topic(
        region.settings.bootstrap_servers, topic, lambda r: len(r) >= until, timeout=timeout
    )
    return shared_events(region.settings, partner, kind, records)


def audits_of(region: Region, owner: str, count: int) -> list[dict]:
    decode = AvroDeserializer(STORE, AUDIT_DISSEMINATION_SCHEMA)

    def mine(records: list) -> list[dict]:
        decoded = (decode(m.value(), SerializationContext(AUDIT_DISSEMINATION)) for m in records)
        return [a for a in decoded if a["source_ori"] == owner]

    records = read_topic(
        region.settings.bootstrap_servers,
        AUDIT_DISSEMINATION,
        lambda r: len(mine(r)) >= count,
        timeout=60,
    )
    return mine(records)


def write(folder: Path, name: str, agreements: list[dict]) -> None:
    (folder / name).write_text(yaml.safe_dump({"agreements": agreements}))


@pytest.mark.broker
def test_issue_cases_1_2_3_and_7_are_fixed(region: Region, tmp_path: Path) -> None:
    s = region.settings
    local, county, neighbour, federal = (
        region.local,
        region.county,
        region.neighbour,
        region.federal,
    )
    generate_keypair(county, s.public_keys_dir, s.private_keys_dir)
    folder = s.agreements_dir
    (folder / "test.yaml").unlink()
    # Case 1: the clear agreement's file sorts first; it used to decide alone.
    write(
        folder,
        "a-clear.yaml",
        [
            {"id": "rms-clear", "version": 1, "owner": local, "partners": [county],
             "kinds": ["rms.record"], "fields": {"persons[].ssn": "keep"}},
        ],
    )  # fmt: skip
    write(
        folder,
        "c-sealed.yaml",
        [
            {"id": "rms-sealed", "version": 3, "owner": local, "partners": [county],
             "kinds": ["rms.record"],
             "fields": {"persons[].ssn": "encrypt", "narrative": "drop"}},
            # Case 2: a CA agency's reads named for a federal and a Nevada agency.
            {"id": "alpr-everyone", "version": 1, "owner": local,
             "partners": [county, neighbour, federal], "kinds": ["alpr.read"]},
        ],
    )  # fmt: skip
    # Case 7: an editor's lock file, a dangling link, there when the router starts.
    (folder / ".#c-sealed.yaml").symlink_to("someone@host.4242:1764650000")

    adult = rms(local, "R-ADULT", [])
    juvenile = rms(local, "R-JUV", ["juvenile"])  # Case 3: no agreement allows juveniles
    with running_stages(region, tmp_path / "logs", [county]):
        publish_source(region, Kind.RMS_RECORD, [adult, juvenile])
        publish_source(region, Kind.ALPR_READ, [alpr(local, "A-1")])
        trail = audits_of(region, local, 5)
        decisions = {(a["record_id"], a["partner_ori"]): a for a in trail}
        assert {k: a["decision"] for k, a in decisions.items()} == {
            ("R-ADULT", county): "SHARED",
            ("R-JUV", county): "DENIED",
            ("A-1", county): "SHARED",
            ("A-1", neighbour): "DENIED",
            ("A-1", federal): "DENIED",
        }

        # 1: both agreements contribute; the SSN is sealed and the narrative withheld.
        to_county = decisions[("R-ADULT", county)]
        assert [a["id"] for a in to_county["agreements"]] == ["rms-clear", "rms-sealed"]
        assert to_county["fields_encrypted"] == ["persons[0].ssn"]
        assert to_county["fields_withheld"] == ["narrative"]
        (copy,) = shared_on(region, county, Kind.RMS_RECORD, until=2, timeout=5)
        assert copy["envelope"]["record_id"] == "R-ADULT"
        assert copy["body"]["persons"][0]["ssn"] is None
        assert copy["body"]["narrative"] is None

        def indexed() -> dict | None:
            rows = index_rows(
                s, county, "select cast(body as text) from records where record_id='R-ADULT'"
            )
            return json.loads(rows[0][0]) if rows else None

        body = wait_for(indexed, 30, "the county's index to hold R-ADULT")
        assert body["narrative"] is None  # the informant narrative never reached the county

        # 2: the rule, not the agreement, decides; nothing reached the federal or NV topics.
        for partner in (neighbour, federal):
            denied = decisions[("A-1", partner)]
            assert denied["rules"] == ["ca-alpr-1798.90.55 v1"]
            assert "rule ca-alpr-1798.90.55 forbids it" in denied["reasons"][-1]
            assert shared_on(region, partner, Kind.ALPR_READ, until=1, timeout=2) == []
        assert [e["envelope"]["record_id"] for e in shared_on(region, county, Kind.ALPR_READ, 1)]

        # 3: the juvenile record reached nobody, and the audit says why.
        assert "a protected label" in decisions[("R-JUV", county)]["reasons"][-1]

        # 7: a half-written agreement file is logged and the router goes on under the last good
        # policy.
        (folder / "d-new.yaml").write_text("agreements:\n  - id: half\n    vers")
        router_log = tmp_path / "logs" / "router.log"
        wait_for(
            lambda: "were NOT applied" in router_log.read_text(),
            30,
            "the router to refuse the half-written file",
        )
        assert "d-new.yaml" in router_log.read_text()
        publish_source(region, Kind.ALPR_READ, [alpr(local, "A-2")])
        ids = {e["envelope"]["record_id"] for e in shared_on(region, county, Kind.ALPR_READ, 2)}
        assert ids == {"A-1", "A-2"}
