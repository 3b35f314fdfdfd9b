"""An agency searches its own records with its partners': its projector reads its own
``src.<ori>.*`` topics beside its share topics, on the real broker, into either index backend.
One search returns its own CAD incident, RMS report and plate read marked as its own, and two
partners' reads the real router shared with it; the owner filter narrows it, the search is
logged naming every owner and published to ``audit.search``; a correction, a delete and a
sealing of its own records reach its own copies; an event on its own topic that another agency
owns is a dead letter, never indexed."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from bench.data import alpr_events
from bench.pipeline import encoded, publish
from consumers.index.query import Criteria, Hit
from consumers.own import OWN_RECORDS
from consumers.projector import Projector
from consumers.search import Searcher, SearchRequest
from mutualaid.agencies import load_registry
from mutualaid.events import new_envelope
from mutualaid.policy import load_policy
from mutualaid.serde import (
    SEARCH_AUDIT,
    AvroDeserializer,
    Codecs,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import AUDIT_SEARCH, Kind, Stage, share_topic, source_topic
from streams.router import Consumed, Router
from support.brokers import dead_letters, read_topic
from support.indexes import both_index_backends
from support.regions import Region, publish_source

PLATE = "7ABC123"
T0 = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)


def own_event(ori: str, kind: Kind, record_id: str, body: dict | None, **envelope: object) -> dict:
    return {
        "envelope": new_envelope(
            source_ori=ori,
            source_system="test",
            kind=kind,
            record_id=record_id,
            occurred_at=T0,
            **{"version": 1, **envelope},  # type: ignore[arg-type]
        ),
        "body": body,
    }


def read_of(tmp_path: Path, ori: str) -> dict:
    """One plate read of ``ori``, as its connector publishes it, of the plate searched for."""
    (event,) = alpr_events(tmp_path, ori, 1)
    event["body"]["plate"] = PLATE
    return event


def share_with(region: Region, router: Router, partner: str, event: dict) -> None:
    """Route a partner's source event with the real router; publish what it shares with the
    region's local agency."""
    owner = event["envelope"]["source_ori"]
    topic = source_topic(owner, Kind.ALPR_READ)
    (value,) = encoded(SchemaStore(), Kind.ALPR_READ, topic, [event])
    to_local = share_topic(region.local, Kind.ALPR_READ)
    outputs = router.route(Consumed(topic, 0, 0, None, value), {})
    (share,) = [o for o in outputs if o.topic == to_local]
    publish(region.settings.bootstrap_servers, to_local, [share.value], [share.key])


def consumed(stage: Projector, topic: str) -> int:
    """How many records of ``topic`` (new for the test: offsets from 0) the projector read."""
    mine = [tp for tp in stage._consumer.assignment() if tp.topic == topic]
    return sum(max(tp.offset, 0) for tp in stage._consumer.position(mine))


def project_until(stage: Projector, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        stage.step()


@pytest.mark.broker
@both_index_backends
def test_own_and_partners_records_in_one_audited_search(
    region: Region, tmp_path: Path, index_url: str | None
) -> None:
    settings, local = region.settings, region.local
    # The county shares its reads with the city too: two partners share with it.
    county_to_local = {
        "id": "county-to-local",
        "version": 1,
        "owner": region.county,
        "partners": [local],
        "kinds": ["alpr.read"],
    }
    (settings.agreements_dir / "county.yaml").write_text(
        yaml.safe_dump({"agreements": [county_to_local]})
    )
    registry = load_registry(settings.agencies_file)
    router = Router(
        load_policy(settings.agreements_dir, registry),
        Codecs(SchemaStore()),
        public_keys={},
        hash_key=None,
    )
    for partner in (region.neighbour, region.county):
        share_with(region, router, partner, read_of(tmp_path, partner))

    words = f"silver camry {PLATE} seen leaving"
    cad = own_event(
        local, Kind.CAD_INCIDENT, "C-1", {"incident_number": "26-1", "narrative": words}
    )
    rms = own_event(local, Kind.RMS_RECORD, "R-1", {"incident_number": "26-1", "narrative": words})
    alpr = read_of(tmp_path, local)
    publish_source(region, Kind.CAD_INCIDENT, [cad])
    publish_source(region, Kind.RMS_RECORD, [rms])
    publish_source(region, Kind.ALPR_READ, [alpr])
    # Another agency's record on the city's own topic: not the city's to index as its own.
    stray = own_event(region.neighbour, Kind.RMS_RECORD, "R-9", {"narrative": words})
    publish_source(region, Kind.RMS_RECORD, [stray], owner=local)

    stage = Projector(settings, local)
    stage.subscribe()
    searcher = Searcher(settings, local)

    def search(user: str = "analyst.kim", **criteria: object) -> list[Hit]:
        request = SearchRequest(local, user, "case 26-1", Criteria(**criteria))  # type: ignore[arg-type]
        return searcher.search(request)

    try:
        own_rms = source_topic(local, Kind.RMS_RECORD)
        project_until(
            stage,
            lambda: stage.index.count() == 5 and consumed(stage, own_rms) == 2,
            "5 records indexed and the stray one read",
        )
        hits = search(text=PLATE)
        found = {(h.source_ori, h.kind, h.own) for h in hits}
        assert found == {
            (local, "cad.incident", True),
            (local, "rms.record", True),
            (local, "alpr.read", True),
            (region.neighbour, "alpr.read", False),
            (region.county, "alpr.read", False),
        }
        assert {h.agreement_id for h in hits if h.own} == {OWN_RECORDS}
        assert all(h.tier == "FULL" and h.body for h in hits)

        assert {h.record_id for h in search(text=PLATE, source_ori=local)} == {
            "C-1",
            "R-1",
            alpr["envelope"]["record_id"],
        }
        assert [h.source_ori for h in search(text=PLATE, source_ori=region.county)] == [
            region.county
        ]
        assert [h.kind for h in search(text=PLATE, source_ori=local, kind="rms.record")] == [
            "rms.record"
        ]

        # Logged before the results came back, naming every owner; then published.
        logged = [s for s in stage.index.unpublished_searches() if s.user == "analyst.kim"]
        assert logged[0].result_count == 5
        assert set(logged[0].result_owners) == {local, region.neighbour, region.county}
        stage.step()
        decode = AvroDeserializer(SchemaStore(), SEARCH_AUDIT)

        def ours(records: list) -> list[dict]:
            audits = (decode(m.value(), SerializationContext(AUDIT_SEARCH)) for m in records)
            return [a for a in audits if a["agency_ori"] == local and a["user"] == "analyst.kim"]

        audits = ours(
            read_topic(settings.bootstrap_servers, AUDIT_SEARCH, lambda r: len(ours(r)) >= 4)
        )
        # (Keyed by search: the partitions they are read from do not keep their order.)
        assert [a["result_count"] for a in sorted(audits, key=lambda a: a["search_id"])] == [
            5,
            3,
            1,
            1,
        ]

        letters = dead_letters(
            settings.bootstrap_servers,
            Stage.CONSUMERS,
            lambda d: d["error_type"] == "wrong_owner" and d["source"] == own_rms,
        )
        assert region.neighbour in letters[0]["reason"]
        assert stage.index.count() == 5  # read, and not indexed

        # A correction, a delete and a sealing of its own records reach its own copies.
        corrected = own_event(
            local, Kind.RMS_RECORD, "R-1", {"narrative": "plate misread, not involved"}, version=2
        )
        deleted = own_event(local, Kind.CAD_INCIDENT, "C-1", None, version=2, op="DELETE")
        read_id = alpr["envelope"]["record_id"]
        sealed = own_event(
            local, Kind.ALPR_READ, read_id, alpr["body"], version=2, labels=["sealed"]
        )
        publish_source(region, Kind.RMS_RECORD, [corrected])
        publish_source(region, Kind.CAD_INCIDENT, [deleted])
        publish_source(region, Kind.ALPR_READ, [sealed])
        project_until(stage, lambda: stage.index.count() == 3, "2 own records withdrawn")
        assert {(h.source_ori, h.own) for h in search(text=PLATE)} == {
            (region.neighbour, False),
            (region.county, False),
        }
        assert [(h.record_id, h.version, h.own) for h in search(text="misread")] == [
            ("R-1", 2, True)
        ]
    finally:
        searcher.close()
        stage._consumer.close()
        stage.index.close()
