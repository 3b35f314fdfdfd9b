"""The compiled Avro writer writes fastavro's bytes, for every schema mutualaid writes.

Records are generated from the schemas themselves (hypothesis), so a field added to a schema
is covered without touching this file; fastavro, the reference writer, must produce the same
bytes, and fastavro's reader must read them back to the same record.
"""

from __future__ import annotations

import datetime
import io
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings

from mutualaid import avrowriter
from mutualaid.avrowriter import AvroWriteError, Encoded, UnsupportedSchema, compile_writer
from mutualaid.serde import AvroSerializer, SchemaStore, SerializationContext, SerializationError
from support.avrovalues import UTC, values

STORE = SchemaStore()


def fastavro_bytes(schema: dict, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


@pytest.mark.parametrize("name", STORE.names)
def test_every_schema_writes_fastavros_bytes(name: str) -> None:
    schema = STORE.get(name)
    write = compile_writer(schema)
    named = dict(schema.get("__named_schemas", {}))

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(values(schema, named))
    def check(record: dict) -> None:
        written = write(record)
        assert written == fastavro_bytes(schema, record)
        assert fastavro.schemaless_reader(io.BytesIO(written), schema, None) == record

    check()


def test_defaults_fill_missing_fields_as_fastavro_does() -> None:
    schema = STORE.get("mutualaid.Disclosure")
    record = {"partner_ori": "CA0000000", "agreement_id": "a", "agreement_version": 1}
    record |= {"tier": "FULL", "revision": 3}
    assert compile_writer(schema)(record) == fastavro_bytes(schema, record)


def test_a_naive_datetime_is_utc() -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "T",
            "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
        }
    )
    write = compile_writer(schema)
    aware = datetime.datetime(2026, 12, 3, 7, 0, 0, 123000, tzinfo=UTC)
    assert write({"t": aware.replace(tzinfo=None)}) == write({"t": aware})
    assert write({"t": 1_796_281_200_123}) == write({"t": aware})


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"plate": 42}, "plate"),  # an int where a string goes
        ({"confidence": "high"}, "confidence"),  # a string where a float goes
    ],
)
def test_a_value_that_does_not_fit_names_its_field(change: dict, named: str) -> None:
    schema = STORE.get("mutualaid.alpr.Read")
    good = {
        "plate": "6GDZ405",
        "plate_state": "CA",
        "confidence": 0.98,
        "camera_id": "CAM05",
        "camera_name": None,
        "latitude": None,
        "longitude": None,
        "heading": None,
    }
    compile_writer(schema)(good)
    with pytest.raises(AvroWriteError, match=named):
        compile_writer(schema)(good | change)


ENVELOPE = {
    "event_id": "e",
    "source_ori": "NV0000000",
    "source_system": "s",
    "kind": "alpr.read",
    "op": "UPSERT",
    "record_id": "r",
    "version": 1,
    "occurred_at": 0,
    "ingested_at": 0,
    "labels": [],
}


def test_null_in_a_required_field_is_named() -> None:
    with pytest.raises(AvroWriteError, match="record_id"):
        compile_writer(STORE.get("mutualaid.Envelope"))(ENVELOPE | {"record_id": None})


def test_a_string_is_not_written_as_an_array_of_its_characters() -> None:
    schema = STORE.get("mutualaid.Envelope")
    envelope = ENVELOPE | {"labels": "SEALED"}
    with pytest.raises(AvroWriteError, match="labels"):
        compile_writer(schema)(envelope)
    assert compile_writer(schema)(envelope | {"labels": ["SEALED"]}) == fastavro_bytes(
        schema, envelope | {"labels": ["SEALED"]}
    )


def test_a_missing_required_field_is_named() -> None:
    envelope = {k: v for k, v in ENVELOPE.items() if k != "record_id"}
    with pytest.raises(AvroWriteError, match="record_id"):
        compile_writer(STORE.get("mutualaid.Envelope"))(envelope)


def test_unsupported_schemas_are_refused_when_compiled() -> None:
    union = {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["int", "string"]}]}
    with pytest.raises(UnsupportedSchema, match="optional unions"):
        compile_writer(fastavro.parse_schema(union))


def test_the_serializer_reports_the_topic_and_the_field() -> None:
    encode = AvroSerializer(STORE, "mutualaid.alpr.Read")
    with pytest.raises(SerializationError, match=r"for share\.x\.alpr\.read: .*plate"):
        encode({"plate": 42}, SerializationContext("share.x.alpr.read"))


def test_a_record_already_written_goes_in_as_it_is_and_only_where_its_type_goes() -> None:
    schema = STORE.get("mutualaid.alpr.SharedReadEvent")
    named = dict(schema["__named_schemas"])
    write = compile_writer(schema)
    envelope = compile_writer(STORE.get("mutualaid.Envelope"))
    body = compile_writer(STORE.get("mutualaid.alpr.Read"))

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(values(schema, named))
    def check(record: dict) -> None:
        given_written = {
            **record,
            "envelope": Encoded(envelope(record["envelope"]), "mutualaid.Envelope"),
            "body": None
            if record["body"] is None
            else Encoded(body(record["body"]), "mutualaid.alpr.Read"),
        }
        assert write(given_written) == write(record)

    check()
    record = {"envelope": Encoded(b"\x00", "mutualaid.alpr.Read"), "disclosure": {}, "body": None}
    with pytest.raises(AvroWriteError):
        write(record)


def test_arrays_of_strings_written_once_are_reused_only_for_the_same_items() -> None:
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "Lists",
            "fields": [{"name": "a", "type": {"type": "array", "items": "string"}}],
        }
    )
    write = compile_writer(schema)
    # Each written twice (the second time from what was kept), and none taken for another:
    # the same characters split otherwise, a prefix, an empty string, a non-ASCII one.
    lists = [["ab"], ["a", "b"], ["a"], ["a", ""], [""], ["é"], ["e"], ["ab"], ["a", "b"]]
    for items in lists * 2:
        assert write({"a": items}) == fastavro_bytes(schema, {"a": items}), items
    # A list that does not hold strings is refused, the same items kept as strings or not.
    with pytest.raises(AvroWriteError):
        write({"a": [1, 2]})
    with pytest.raises(AvroWriteError):
        write({"a": ["a", None]})


def test_what_is_kept_of_arrays_of_strings_is_bounded() -> None:
    schema = fastavro.parse_schema({"type": "array", "items": "string"})
    write = compile_writer(schema)
    for n in range(avrowriter.STRINGS_KEPT + 50):
        write([f"value {n}"])
    assert 0 < len(avrowriter._STRINGS) <= avrowriter.STRINGS_KEPT
    long = ["x" * avrowriter.STRINGS_LONGEST]
    assert write(long) == fastavro_bytes(schema, long)
    assert tuple(long) not in avrowriter._STRINGS
