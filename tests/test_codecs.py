"""One Codecs per process, one DeadLetters per stage, one dissemination-audit builder.

The schema registry here is confluent-kafka's in-process ``mock://`` client (no registry server
can run on these machines); the hotlist test runs against the real broker.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mutualaid.audit import dissemination_audit
from mutualaid.deadletter import DeadLetters, Letter
from mutualaid.disclosure import FieldReport
from mutualaid.metrics import DEAD_LETTERS
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    CONFLUENT_MAGIC,
    DEAD_LETTER,
    SerializationContext,
    codecs_for,
)
from mutualaid.settings import Settings
from mutualaid.topics import AUDIT_DISSEMINATION, Stage, hotlist_topic
from producers.contract import Rejected
from producers.hotlist import current_entries, load_extract, remove_entry
from support.brokers import read_topic
from support.regions import Region


def mock_registry_settings(region: Region | None = None) -> Settings:
    url = f"mock://{uuid.uuid4().hex}"  # a registry of its own, empty
    if region is None:
        return Settings(schema_registry_url=url)
    return region.settings.model_copy(update={"schema_registry_url": url})


def test_codecs_are_built_once_per_registry_and_share_their_coders() -> None:
    settings = mock_registry_settings()
    codecs = codecs_for(settings)
    assert codecs_for(settings.model_copy()) is codecs
    assert codecs.serializer(DEAD_LETTER) is codecs.serializer(DEAD_LETTER)
    assert codecs_for(Settings()) is not codecs
    assert codecs_for(Settings()).registry is None


def test_dead_letters_encode_count_and_hand_over_to_the_stage() -> None:
    codecs = codecs_for(mock_registry_settings())
    letters = DeadLetters(Letter, codecs, Stage.PRODUCERS)
    before = DEAD_LETTERS.labels(stage="producers", reason="bad_plate")._value.get()
    topic, key, value = letters.rejected(
        Rejected("bad_plate", "plate is empty"),
        source="reads.csv",
        position="reads.csv:7",
        payload=b"raw line",
        source_ori="CA0990100",
        key=b"CA0990100/reads",
    )
    assert (topic, key) == ("dlq.producers", b"CA0990100/reads")
    assert value[:1] == CONFLUENT_MAGIC  # framed for the registry the codecs hold
    letter = codecs.deserializer(DEAD_LETTER)(value, SerializationContext(topic))
    assert letter is not None
    assert (letter["error_type"], letter["reason"], letter["position"]) == (
        "bad_plate",
        "plate is empty",
        "reads.csv:7",
    )
    assert (letter["stage"], letter["payload"], letter["source_ori"]) == (
        "producers",
        b"raw line",
        "CA0990100",
    )
    assert DEAD_LETTERS.labels(stage="producers", reason="bad_plate")._value.get() == before + 1


def test_consumed_dead_letters_name_topic_partition_and_offset() -> None:
    sent: list[tuple[str, bytes | None, bytes]] = []
    codecs = codecs_for(Settings())
    letters = DeadLetters(lambda *record: sent.append(record), codecs, Stage.STREAMS)
    letters.consumed(
        topic="src.ca0990100.alpr.read",
        partition=3,
        offset=41,
        key=b"k",
        payload=b"\x01",
        error_type="corrupt",
        reason="not Avro",
    )
    [(topic, key, value)] = sent
    letter = codecs.deserializer(DEAD_LETTER)(value, SerializationContext(topic))
    assert letter is not None
    assert (topic, key, letter["source"], letter["position"]) == (
        "dlq.streams",
        b"k",
        "src.ca0990100.alpr.read",
        "partition 3 offset 41",
    )


def test_the_dissemination_audit_encodes_with_its_schema() -> None:
    envelope = {
        "event_id": "e1",
        "source_ori": "CA0990100",
        "kind": "alpr.read",
        "record_id": "r1",
        "version": 2,
    }
    report = FieldReport(in_clear=["plate"], masked=["camera_name"], encrypted=["owner"])
    record = dissemination_audit(
        envelope,
        report,
        partner_ori="CA0990200",
        decision="SHARED",
        agreement_id="a",
        agreement_version=1,
        reasons=["kind alpr.read is covered"],
        decided_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    codecs = codecs_for(Settings())
    ctx = SerializationContext(AUDIT_DISSEMINATION)
    value = codecs.serializer(AUDIT_DISSEMINATION_SCHEMA)(record, ctx)
    decoded = codecs.deserializer(AUDIT_DISSEMINATION_SCHEMA)(value, ctx)
    assert decoded is not None
    assert (decoded["record_id"], decoded["partner_ori"], decoded["fields_encrypted"]) == (
        "r1",
        "CA0990200",
        ["owner"],
    )
    assert decoded["fields_masked"] == ["camera_name"]


@pytest.mark.broker
def test_hotlist_load_list_and_remove_with_a_schema_registry(
    region: Region, tmp_path: Path
) -> None:
    settings = mock_registry_settings(region)
    ori = region.local
    extract = tmp_path / "ncic.csv"
    extract.write_text(
        "ncic_number,plate,state,plate_type,reason,entered,expires,vehicle_make,notes\n"
        "V1,7ABC123,CA,PC,stolen_vehicle,2026-11-01,,,\n"
        "V2,5XYZ999,CA,PC,wanted,2026-11-02,,,\n"
    )
    report = load_extract(settings, ori, extract)
    assert (report.published, report.removed, report.rejected) == (2, 0, 0)
    topic = hotlist_topic(ori)
    written = read_topic(settings.bootstrap_servers, topic, lambda r: len(r) >= 2)
    assert {m.value()[:1] for m in written} == {CONFLUENT_MAGIC}  # written with the registry
    assert sorted(current_entries(settings, ori)) == ["V1", "V2"]  # and read back with it

    assert remove_entry(settings, ori, "V1")
    assert sorted(current_entries(settings, ori)) == ["V2"]
    extract.write_text(extract.read_text().splitlines()[0] + "\n")
    assert load_extract(settings, ori, extract).removed == 1  # V2 is no longer listed
    assert current_entries(settings, ori) == {}
