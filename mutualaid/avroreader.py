"""Avro binary decoding compiled once per schema, for records written with the schema they are
read with (the hot path: every stage reads what the current schemas wrote).

The twin of ``mutualaid.avrowriter``: the schema is walked once and one flat Python function
generated for it (``decode.source`` holds it), which returns what fastavro's
``schemaless_reader`` returns for the same bytes: dicts, lists, str, bytes, int, float, bool,
None, and timezone-aware UTC datetimes for ``timestamp-millis``. fastavro took ~18 µs for a
plate read; this ~6 (``tests/test_avroreader.py`` compares both on records generated from
every schema in ``avro/``). Records written with an older schema (``avro/history/``) still go
through fastavro, whose schema resolution bridges the versions (``serde.AvroDeserializer``).

Bytes that do not decode raise ``AvroReadError``; so do bytes left over after the record,
which fastavro ignores (a record is read whole or not at all).
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable, Mapping
from typing import Any

from mutualaid.avrowriter import SourceGenerator, UnsupportedSchema
from mutualaid.errors import MutualaidError

Decoder = Callable[[bytes, int], Any]
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class AvroReadError(MutualaidError, ValueError):
    """Bytes that are not a record of the schema."""


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    """The zig-zag varint at ``pos``, and the position after it."""
    shift = result = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than a long")


def _millis(ms: int) -> datetime.datetime:
    # Positional (days, seconds, microseconds, milliseconds): half the cost of the keyword.
    return _EPOCH + datetime.timedelta(0, 0, 0, ms)


def compile_reader(schema: Mapping[str, Any]) -> Decoder:
    """A function ``decode(data, start)`` that decodes one datum of the fastavro-parsed
    ``schema`` from Avro binary beginning at ``start`` (after a framing header) to the end."""
    generator = _Generator(dict(schema.get("__named_schemas", {})))
    result = generator.emit(schema, 1)
    source = "\n".join(
        [
            "def decode(buf, pos):",
            *generator.lines,
            "    if pos != len(buf):",
            "        raise ValueError(f'{len(buf) - pos} byte(s) after the record')",
            f"    return {result}",
        ]
    )
    helpers: dict[str, Any] = {
        "_long": _long,
        "_millis": _millis,
        "_double": struct.Struct("<d").unpack_from,
        "_float": struct.Struct("<f").unpack_from,
    }
    fast: Decoder = generator.function(
        source, "decode", f"avro reader for {schema.get('name')}", helpers
    )

    def decode(data: bytes, start: int = 0) -> Any:
        try:
            return fast(data, start)
        except (IndexError, ValueError, KeyError, TypeError, OverflowError, struct.error) as exc:
            # IndexError: the bytes end inside the record; UnicodeDecodeError is a ValueError.
            raise AvroReadError(f"{type(exc).__name__}: {exc}") from exc

    decode.source = source  # type: ignore[attr-defined]
    return decode


class _Generator(SourceGenerator):
    """Emits the statements that read one value into a fresh local, and returns its name."""

    def _read_long(self, target: str, depth: int) -> None:
        # One byte is most numbers (lengths, counts, small ints): read it inline.
        self._line(depth, f"{target} = buf[pos]")
        self._line(depth, f"if {target} < 0x80:")
        self._line(depth + 1, f"pos += 1; {target} = ({target} >> 1) ^ -({target} & 1)")
        self._line(depth, "else:")
        self._line(depth + 1, f"{target}, pos = _long(buf, pos)")

    def _read_length(self, target: str, depth: int) -> None:
        self._read_long(target, depth)
        self._line(depth, f"if {target} < 0: raise ValueError('negative length')")

    def emit(self, schema: Any, depth: int) -> str:
        """Read one value of ``schema``; returns the local name that holds it."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            if schema not in self.named:
                raise UnsupportedSchema(f"unknown named type {schema!r}")
            schema = self.named[schema]
        if isinstance(schema, list):
            return self._union(schema, depth)
        kind = schema if isinstance(schema, str) else schema["type"]
        out = self._name("v")
        if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
            if kind != "long":
                raise UnsupportedSchema(f"timestamp-millis on {kind!r}")
            self._read_long(out, depth)
            self._line(depth, f"{out} = _millis({out})")
        elif kind == "null":
            self._line(depth, f"{out} = None")
        elif kind == "boolean":
            self._line(depth, f"{out} = buf[pos] == 1; pos += 1")
        elif kind in ("int", "long"):
            self._read_long(out, depth)
        elif kind == "float":
            self._line(depth, f"{out} = _float(buf, pos)[0]; pos += 4")
        elif kind == "double":
            self._line(depth, f"{out} = _double(buf, pos)[0]; pos += 8")
        elif kind in ("bytes", "string"):
            size = self._name("n")
            self._read_length(size, depth)
            self._line(depth, f"if pos + {size} > len(buf): raise IndexError('truncated')")
            decoded = ".decode()" if kind == "string" else ""
            self._line(depth, f"{out} = buf[pos:pos + {size}]{decoded}; pos += {size}")
        elif kind == "fixed":
            fixed = int(schema["size"])
            self._line(depth, f"if pos + {fixed} > len(buf): raise IndexError('truncated')")
            self._line(depth, f"{out} = buf[pos:pos + {fixed}]; pos += {fixed}")
        elif kind in ("record", "error"):
            self._record(schema, out, depth)
        elif kind == "enum":
            symbols = self._constant(tuple(schema["symbols"]))
            index = self._name("e")
            self._read_long(index, depth)
            self._line(depth, f"if {index} < 0: raise IndexError('enum index')")
            self._line(depth, f"{out} = {symbols}[{index}]")
        elif kind in ("array", "map"):
            self._blocks(schema, kind, out, depth)
        else:
            raise UnsupportedSchema(f"type {kind!r} is not supported")
        return out

    def _record(self, schema: Mapping[str, Any], out: str, depth: int) -> None:
        if schema["name"] in self._open:
            raise UnsupportedSchema(f"recursive record {schema['name']!r}")
        self._open.add(schema["name"])
        values = [(field["name"], self.emit(field["type"], depth)) for field in schema["fields"]]
        self._open.discard(schema["name"])
        items = ", ".join(f"{name!r}: {local}" for name, local in values)
        self._line(depth, f"{out} = {{{items}}}")

    def _blocks(self, schema: Mapping[str, Any], kind: str, out: str, depth: int) -> None:
        # Blocks of items, each a count (negative: its byte size follows), ended by a 0.
        count = self._name("b")
        self._line(depth, f"{out} = [] if {kind!r} == 'array' else {{}}")
        self._line(depth, "while True:")
        self._read_long(count, depth + 1)
        self._line(depth + 1, f"if {count} == 0: break")
        self._line(depth + 1, f"if {count} < 0:")
        skipped = self._name("z")
        self._read_long(skipped, depth + 2)
        self._line(depth + 2, f"{count} = -{count}")
        self._line(depth + 1, f"for _ in range({count}):")
        if kind == "array":
            item = self.emit(schema["items"], depth + 2)
            self._line(depth + 2, f"{out}.append({item})")
        else:
            key = self.emit("string", depth + 2)
            item = self.emit(schema["values"], depth + 2)
            self._line(depth + 2, f"{out}[{key}] = {item}")

    def _union(self, branches: list[Any], depth: int) -> str:
        if len(branches) != 2 or "null" not in branches:
            raise UnsupportedSchema(
                f"union {branches!r}: only optional unions (null and one branch) are supported"
            )
        null = branches.index("null")
        out, index = self._name("u"), self._name("i")
        self._read_long(index, depth)
        self._line(depth, f"if {index} == {null}:")
        self._line(depth + 1, f"{out} = None")
        self._line(depth, f"elif {index} == {1 - null}:")
        value = self.emit(branches[1 - null], depth + 1)
        self._line(depth + 1, f"{out} = {value}")
        self._line(depth, "else:")
        self._line(depth + 1, f"raise ValueError(f'union branch {{{index}}}')")
        return out
