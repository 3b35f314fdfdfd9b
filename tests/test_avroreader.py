"""The compiled Avro reader returns what fastavro's reader returns, for every schema mutualaid
writes, and refuses bytes that are not a whole record of the schema."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mutualaid.avroreader import AvroReadError, compile_reader
from mutualaid.avrowriter import compile_writer
from mutualaid.serde import (
    AvroDeserializer,
    DeserializationError,
    SchemaStore,
    SerializationContext,
)
from support.avrovalues import values

STORE = SchemaStore()


def fastavro_read(schema: dict, data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data), schema, None)


@pytest.mark.parametrize("name", STORE.names)
def test_every_schema_reads_what_fastavro_reads(name: str) -> None:
    schema = STORE.get(name)
    read, write = compile_reader(schema), compile_writer(schema)
    named = dict(schema.get("__named_schemas", {}))

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(values(schema, named), st.binary(max_size=4))
    def check(record: dict, header: bytes) -> None:
        data = write(record)
        assert read(data) == fastavro_read(schema, data) == record
        assert read(header + data, len(header)) == record  # after a framing header

    check()


def test_arrays_written_in_sized_blocks_read_too() -> None:
    """Other writers may split an array into blocks, some with a negative count and a byte
    size (the spec's form for skipping); fastavro's reader takes both, and so does this one."""
    field = {"name": "a", "type": {"type": "array", "items": "long"}}
    schema = fastavro.parse_schema({"type": "record", "name": "A", "fields": [field]})
    # Block of 2 (count 2: 0x04), then a block of -1 with its size 1 (0x01, 0x02), value 3
    # (0x06), then the end (0x00).
    data = bytes([0x04, 0x02, 0x04, 0x01, 0x02, 0x06, 0x00])
    assert compile_reader(schema)(data) == fastavro_read(schema, data) == {"a": [1, 2, 3]}


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # truncated
        lambda b: b + b"\x00",  # bytes after the record
        lambda b: b"\x09" + b[1:],  # a string length that is negative (zig-zag 9 = -5)
        lambda b: b[:1] + b"\xff" * 12,  # a varint longer than a long
    ],
)
def test_bytes_that_are_not_a_record_are_refused(damage: Any) -> None:
    schema = STORE.get("mutualaid.alpr.Read")
    data = compile_writer(schema)({"plate": "6GDZ405", "plate_state": "CA"})
    with pytest.raises(AvroReadError):
        compile_reader(schema)(damage(data))


def test_invalid_utf8_is_refused_with_where_it_came_from() -> None:
    schema = STORE.get("mutualaid.alpr.Read")
    data = bytearray(compile_writer(schema)({"plate": "ABC"}))
    data[2] = 0xFF  # inside the plate's bytes
    decode = AvroDeserializer(STORE, "mutualaid.alpr.Read")
    framed = (
        b"\xc3\x01"
        + __import__("mutualaid.serde", fromlist=["x"]).schema_fingerprint(schema)
        + bytes(data)
    )
    with pytest.raises(DeserializationError, match=r"corrupt Avro body.*topic src\.x"):
        decode(framed, SerializationContext("src.x", 0, 7))
