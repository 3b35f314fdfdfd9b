"""The router's decision for one record, without a broker: shares, or one dead letter."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from mutualaid.agencies import load_registry
from mutualaid.events import new_envelope, record_key
from mutualaid.policy import load_policy
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    DEAD_LETTER,
    SHARED_EVENT,
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import Kind
from streams.router import Consumed, Router

STORE = SchemaStore()
ROUTER = Router(
    load_policy(Path("deploy/agreements"), load_registry(Path("deploy/agencies.yaml"))),
    STORE,
    None,
    public_keys={},
    hash_key=None,
)
AT = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)


def read(owner: str) -> dict:
    envelope = new_envelope(
        source_ori=owner,
        source_system="t",
        kind=Kind.ALPR_READ,
        record_id="r1",
        version=1,
        occurred_at=AT,
        now=AT,
    )
    return {"envelope": envelope, "body": {"plate": "7ABC123"}}


def consumed(topic: str, value: bytes | None) -> Consumed:
    return Consumed(topic, 2, 17, b"k", value)


def encode(event: dict) -> bytes:
    return AvroSerializer(STORE, SOURCE_EVENT[Kind.ALPR_READ])(event, SerializationContext("t"))


def dead(output) -> dict:
    assert output.topic == "dlq.streams"
    return AvroDeserializer(STORE, DEAD_LETTER)(output.value, SerializationContext("dlq.streams"))


def test_shares_go_to_each_partner_with_one_audit_record_per_decision() -> None:
    outputs = ROUTER.route(consumed("src.nv0990300.alpr.read", encode(read("NV0990300"))))
    assert [o.topic for o in outputs] == [
        "share.ca0990100.alpr.read",
        "audit.dissemination",
        "share.ca0990200.alpr.read",
        "audit.dissemination",
    ]
    decode = AvroDeserializer(STORE, SHARED_EVENT[Kind.ALPR_READ])
    first = decode(outputs[0].value, SerializationContext(outputs[0].topic))
    assert first["disclosure"]["partner_ori"] == "CA0990100"
    assert first["disclosure"]["agreement_id"] == "desert-springs-alpr"
    assert first["body"]["plate"] == "7ABC123"
    assert first["envelope"]["source_position"] is None  # the owner's file paths stay home
    assert outputs[0].key == record_key(read("NV0990300")["envelope"])
    audit = AvroDeserializer(STORE, AUDIT_DISSEMINATION_SCHEMA)(
        outputs[1].value, SerializationContext("audit.dissemination")
    )
    assert (audit["partner_ori"], audit["decision"], audit["agreement_id"]) == (
        "CA0990100",
        "SHARED",
        "desert-springs-alpr",
    )
    assert audit["fields_in_clear"] == ["plate"]


def test_no_agreement_no_output() -> None:
    assert ROUTER.route(consumed("src.dc0990400.alpr.read", encode(read("DC0990400")))) == []


def test_an_event_claiming_another_owner_is_dead_lettered() -> None:
    (out,) = ROUTER.route(consumed("src.ca0990100.alpr.read", encode(read("NV0990300"))))
    letter = dead(out)
    assert letter["error_type"] == "wrong_topic"
    assert letter["position"] == "partition 2 offset 17"
    assert letter["source"] == "src.ca0990100.alpr.read"


def test_garbage_is_dead_lettered_with_its_bytes() -> None:
    (out,) = ROUTER.route(consumed("src.ca0990100.alpr.read", b"not avro"))
    letter = dead(out)
    assert letter["error_type"] == "undecodable"
    assert "not an Avro event" in letter["reason"]
    assert letter["payload"] == b"not avro"


def test_a_tombstone_on_a_source_topic_is_dead_lettered() -> None:
    (out,) = ROUTER.route(consumed("src.ca0990100.alpr.read", None))
    assert dead(out)["error_type"] == "null_value"
