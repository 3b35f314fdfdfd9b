"""Serde: both framings, evolution, and every way bytes can be wrong."""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import pytest
from fastavro.schema import fingerprint
from fastavro.utils import generate_one

from mutualaid.events import new_envelope
from mutualaid.serde import (
    AVRO_DIR,
    SHARED_EVENT,
    SINGLE_OBJECT_MAGIC,
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    DeserializationError,
    SchemaStore,
    SerializationContext,
    SerializationError,
    registry_client,
    schema_fingerprint,
)
from mutualaid.topics import Kind

NAME = SOURCE_EVENT[Kind.ALPR_READ]
CTX = SerializationContext("src.ca0990100.alpr.read", partition=3, offset=42)


def alpr_event() -> dict:
    envelope = new_envelope(
        source_ori="CA0990100",
        source_system="alpr-csv:test",
        kind=Kind.ALPR_READ,
        record_id="r-1",
        version=1,
        occurred_at=datetime(2026, 11, 24, 21, 14, 3, tzinfo=UTC),
        labels=["juvenile"],
        now=datetime(2026, 11, 24, 21, 14, 5, tzinfo=UTC),
    )
    body = {
        "plate": "7ABC123",
        "plate_state": "CA",
        "confidence": 0.5,
        "camera_id": "cam-1",
        "camera_name": None,
        "latitude": 38.9,
        "longitude": -119.9,
        "heading": "N",
        "vehicle_make": None,
        "vehicle_model": None,
        "vehicle_color": None,
        "image_ref": None,
    }
    return {"envelope": envelope, "body": body}


@pytest.fixture(scope="module")
def store() -> SchemaStore:
    return SchemaStore()


def test_crc64_avro_known_answers() -> None:
    vectors = json.loads((Path(__file__).parent / "data" / "crc64_avro_vectors.json").read_text())
    for vector in vectors:
        got = int.from_bytes(
            bytes.fromhex(fingerprint(vector["canonical_form"], "CRC-64-AVRO")), "little"
        )
        assert got == vector["fingerprint"]


def test_single_object_round_trip(store: SchemaStore) -> None:
    data = AvroSerializer(store, NAME)(alpr_event(), CTX)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema_fingerprint(store.get(NAME))
    assert AvroDeserializer(store, NAME)(data, CTX) == alpr_event()


def test_null_is_a_tombstone_both_ways(store: SchemaStore) -> None:
    assert AvroSerializer(store, NAME)(None, CTX) is None
    assert AvroDeserializer(store, NAME)(None, CTX) is None


def test_confluent_wire_format_with_registry(store: SchemaStore) -> None:
    registry = registry_client("mock://serde-test")
    data = AvroSerializer(store, NAME, registry)(alpr_event(), CTX)
    assert data[:1] == b"\x00"
    schema_id = int.from_bytes(data[1:5], "big")
    assert registry.get_schema(schema_id).schema_type == "AVRO"
    assert AvroDeserializer(store, NAME, registry)(data, CTX) == alpr_event()


def test_readers_accept_both_framings(store: SchemaStore) -> None:
    registry = registry_client("mock://serde-both")
    reader = AvroDeserializer(store, NAME, registry)
    single = AvroSerializer(store, NAME)(alpr_event(), CTX)
    framed = AvroSerializer(store, NAME, registry)(alpr_event(), CTX)
    assert reader(single, CTX) == reader(framed, CTX) == alpr_event()


def test_registry_framing_without_registry_is_a_typed_error(store: SchemaStore) -> None:
    framed = AvroSerializer(store, NAME, registry_client("mock://serde-none"))(alpr_event(), CTX)
    with pytest.raises(DeserializationError, match="no schema_registry_url is configured") as e:
        AvroDeserializer(store, NAME)(framed, CTX)
    assert "topic src.ca0990100.alpr.read partition 3 offset 42" in str(e.value)


def test_corrupt_body_names_topic_partition_offset(store: SchemaStore) -> None:
    data = AvroSerializer(store, NAME)(alpr_event(), CTX)
    with pytest.raises(DeserializationError) as caught:
        AvroDeserializer(store, NAME)(data[:30], CTX)
    assert str(caught.value).startswith("corrupt Avro body")
    assert str(caught.value).endswith("(at topic src.ca0990100.alpr.read partition 3 offset 42)")
    assert caught.value.ctx == CTX


def test_unknown_fingerprint(store: SchemaStore) -> None:
    data = AvroSerializer(store, NAME)(alpr_event(), CTX)
    forged = data[:2] + b"\x00" * 8 + data[10:]
    with pytest.raises(DeserializationError, match="unknown schema fingerprint 0000000000000000"):
        AvroDeserializer(store, NAME)(forged, CTX)


@pytest.mark.parametrize("data", [b"", b'{"plate": 1}', b"\xc3"])
def test_not_avro_at_all(store: SchemaStore, data: bytes) -> None:
    with pytest.raises(DeserializationError, match="not an Avro event"):
        AvroDeserializer(store, NAME)(data, CTX)


def test_encoding_a_wrong_shape_is_a_typed_error(store: SchemaStore) -> None:
    event = alpr_event()
    event["body"]["plate"] = 1234
    with pytest.raises(SerializationError, match=r"cannot encode as mutualaid\.alpr\.ReadEvent"):
        AvroSerializer(store, NAME)(event, CTX)


@pytest.mark.parametrize("kind", list(SHARED_EVENT))
def test_a_shared_event_naming_its_body_branch_encodes_as_fastavro_alone_does(
    store: SchemaStore, kind: Kind
) -> None:
    """The serializer names the branch of the optional body for fastavro (a third of the
    cost of a shared event); the bytes are the ones fastavro writes finding it itself."""
    name = SHARED_EVENT[kind]
    schema = store.get(name)
    event = generate_one(schema)
    for body in (event["body"], None):
        event["body"] = body
        plain = io.BytesIO()
        fastavro.schemaless_writer(plain, schema, event)
        assert AvroSerializer(store, name)(event, CTX) == SINGLE_OBJECT_MAGIC + (
            schema_fingerprint(schema) + plain.getvalue()
        )
    event["body"] = "not a record"
    with pytest.raises(SerializationError, match=f"cannot encode as {name}"):
        AvroSerializer(store, name)(event, CTX)


def test_evolution_old_writer_new_reader(tmp_path: Path) -> None:
    """An event written before a field existed reads with the field's default."""
    current = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, current, ignore=shutil.ignore_patterns("history"))
    old = current / "history" / "v0"
    shutil.copytree(AVRO_DIR, old, ignore=shutil.ignore_patterns("history"))
    read_file = old / "mutualaid.alpr.Read.avsc"
    schema = json.loads(read_file.read_text())
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "image_ref"]
    read_file.write_text(json.dumps(schema))

    event = alpr_event()
    del event["body"]["image_ref"]
    data = AvroSerializer(SchemaStore(old), NAME)(event, CTX)
    decoded = AvroDeserializer(SchemaStore(current), NAME)(data, CTX)
    assert decoded["body"]["image_ref"] is None
    assert decoded["body"]["plate"] == "7ABC123"


def _history() -> list[tuple[Path, str]]:
    return [
        (d, name)
        for d in sorted((AVRO_DIR / "history").glob("*"))
        if d.is_dir()
        for name in SchemaStore(d).names
    ]


@pytest.mark.parametrize(("version_dir", "name"), _history())
def test_current_schemas_read_every_archived_version(version_dir: Path, name: str) -> None:
    """The compatibility check: data written with any archived schema reads with today's."""
    old, new = SchemaStore(version_dir), SchemaStore()
    for _ in range(20):
        record = generate_one(old.get(name))
        data = AvroSerializer(old, name)(record, CTX)
        AvroDeserializer(new, name)(data, CTX)


def test_changed_schemas_are_archived() -> None:
    """A schema whose fingerprint moved must have its previous version in avro/history/."""
    recorded = json.loads((AVRO_DIR / "fingerprints.json").read_text())
    store = SchemaStore()
    changed = [
        n
        for n in store.names
        if n in recorded and recorded[n] != schema_fingerprint(store.get(n)).hex()
    ]
    archived = {schema_fingerprint(SchemaStore(d).get(n)).hex() for d, n in _history()}
    unarchived = [n for n in changed if recorded[n] not in archived]
    assert not unarchived, (
        f"{unarchived} changed without archiving the previous version: copy the old files to "
        "avro/history/<date>/ and update avro/fingerprints.json (python -m mutualaid.serde)"
    )
    assert sorted(recorded) == store.names, (
        "update avro/fingerprints.json: python -m mutualaid.serde"
    )
