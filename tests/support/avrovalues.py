"""Avro values as hypothesis generates them from a schema: what the compiled writer and reader
are compared with fastavro on (tests/test_avrowriter.py, tests/test_avroreader.py)."""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import strategies as st

UTC = datetime.UTC
# Avro timestamp-millis keeps milliseconds: generated times are whole milliseconds so the
# read-back compares equal.
TIMES = st.integers(min_value=-(10**12), max_value=10**13).map(
    lambda ms: datetime.datetime(1970, 1, 1, tzinfo=UTC) + datetime.timedelta(milliseconds=ms)
)
LONGS = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
INTS = st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1)


def values(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Any value ``schema`` admits (as mutualaid's Python values: datetimes for timestamps)."""
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, list):
        return st.one_of([values(branch, named) for branch in schema])
    kind = schema if isinstance(schema, str) else schema["type"]
    if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
        return TIMES
    simple = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": INTS,
        "long": LONGS,
        "float": st.floats(width=32, allow_nan=False),
        "double": st.floats(allow_nan=False),
        "bytes": st.binary(max_size=40),
        "string": st.text(max_size=20),
    }
    if kind in simple:
        return simple[kind]
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(values(schema["items"], named), max_size=3)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), values(schema["values"], named), max_size=3)
    assert kind == "record", kind
    return st.fixed_dictionaries({f["name"]: values(f["type"], named) for f in schema["fields"]})
