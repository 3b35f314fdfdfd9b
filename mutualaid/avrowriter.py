"""Avro binary encoding compiled once per schema: the hot path's writer.

fastavro walks the schema again for every record it writes, and for an optional field
(``["null", X]``) it first checks the value against each branch: about 0.5 µs a plain field
and 1.2 µs an optional one, so a shared ALPR event cost ~33-44 µs, and the router writes
several records per read. ``compile_writer`` walks the schema once and generates one flat
Python function for it (as ``dataclasses`` generates ``__init__``): a record's fields are
written by straight-line code, with no per-field dispatch. The generated source is kept on
the function (``encode.source``) for whoever wants to read it.

It writes exactly the bytes fastavro writes for every schema in ``avro/``
(``tests/test_avrowriter.py`` compares the two on generated records), and covers what those
schemas use: records, enums, arrays, maps, optional unions (``null`` and one other branch),
the primitive types, ``fixed`` and ``timestamp-millis`` (a naive datetime is taken as UTC;
mutualaid's times are UTC). A record may also be given already written (``Encoded``). Any
other schema raises ``UnsupportedSchema`` when compiled, never at write time. fastavro stays
the reader, the parser and the fingerprinter.

A value that does not fit raises ``AvroWriteError`` (a ``ValueError``) with fastavro's
validation message, which names the field's path; the fast path does not look for the path,
a failed write does.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable, Mapping
from typing import Any

from fastavro.validation import ValidationError, validate

from mutualaid.errors import MutualaidError

Encoder = Callable[[Any], bytes]
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_EPOCH_NAIVE = datetime.datetime(1970, 1, 1)
_ONE_MS = datetime.timedelta(milliseconds=1)
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


class Encoded(bytes):
    """A record already written as Avro, as the named type ``name``: a compiled writer puts it
    in as it is wherever a record of that type goes, so a part several records share (the
    router's copies of one event for several partners carry one envelope) is encoded once.
    Bytes written as another type are refused."""

    name: str

    def __new__(cls, data: bytes, name: str) -> Encoded:
        made = super().__new__(cls, data)
        made.name = name
        return made


def _encoded(value: Encoded, name: str) -> Encoded:
    if value.name != name:
        raise ValueError(f"bytes written as {value.name} where a {name} goes")
    return value


class AvroWriteError(MutualaidError, ValueError):
    """A value that does not fit the schema; the message names the field."""


class UnsupportedSchema(MutualaidError, ValueError):
    """A schema construct this writer does not compile (see the module docstring)."""


def _varint(n: int) -> bytes:
    """Avro's zig-zag variable-length encoding of a long."""
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError(f"{n} does not fit an Avro long")
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Lengths, counts and small numbers are most of what is written: looked up, not computed.
_SMALL = tuple(_varint(i) for i in range(1024))


def _long(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 1024 else _varint(n)


# Arrays of strings already written, by their items: the audit's field lists and reasons, and a
# share's, repeat from one event to the next (the same fields in clear, the same reasons), and
# writing ten short strings costs ten times what one lookup does. Bounded: only arrays short
# once written are kept, and the cache starts over when full.
_STRINGS: dict[tuple[str, ...], bytes] = {}
STRINGS_KEPT = 4096
STRINGS_LONGEST = 512  # bytes written


def _strings(value: list[str] | tuple[str, ...]) -> bytes:
    """A non-empty array of strings as Avro: its count, its items, the closing 0."""
    items = tuple(value)
    known = _STRINGS.get(items)
    if known is not None:
        return known
    out = bytearray(_long(len(items)))
    for item in items:
        data = item.encode()
        out += _long(len(data))
        out += data
    out.append(0)
    written = bytes(out)
    if len(written) <= STRINGS_LONGEST:
        if len(_STRINGS) >= STRINGS_KEPT:
            _STRINGS.clear()
        _STRINGS[items] = written
    return written


def _millis(value: datetime.datetime | int) -> int:
    if isinstance(value, datetime.datetime):
        return (value - (_EPOCH if value.tzinfo is not None else _EPOCH_NAIVE)) // _ONE_MS
    if type(value) is not int:
        raise TypeError(f"expected a datetime or int, got {type(value).__name__}")
    return value


def _fixed_size(value: bytes, size: int) -> bytes:
    if len(value) != size:
        raise ValueError(f"expected {size} bytes, got {len(value)}")
    return value


def _not_a_list(value: Any) -> None:
    raise TypeError(f"expected a list, got {type(value).__name__}")


def compile_writer(schema: Mapping[str, Any]) -> Encoder:
    """A function that encodes one datum of the fastavro-parsed ``schema`` to Avro binary."""
    generator = _Generator(dict(schema.get("__named_schemas", {})))
    generator.emit(schema, "datum", 1)
    source = "\n".join(
        ["def encode(datum):", "    out = bytearray()", *generator.lines, "    return bytes(out)"]
    )
    helpers: dict[str, Any] = {
        "_long": _long,
        "_SMALL": _SMALL,
        "_varint": _varint,
        "_millis": _millis,
        "_fixed_size": _fixed_size,
        "_not_a_list": _not_a_list,
        "_strings": _strings,
        "_Encoded": Encoded,
        "_encoded": _encoded,
        "_double": struct.Struct("<d").pack,
        "_float": struct.Struct("<f").pack,
    }
    fast: Encoder = generator.function(
        source, "encode", f"avro writer for {schema.get('name')}", helpers
    )

    def encode(datum: Any) -> bytes:
        try:
            return fast(datum)
        except (AttributeError, TypeError, KeyError, ValueError, OverflowError, struct.error) as e:
            raise AvroWriteError(_why(datum, schema, e)) from e

    encode.source = source  # type: ignore[attr-defined]
    return encode


def _why(datum: Any, schema: Mapping[str, Any], error: Exception) -> str:
    """What does not fit, by fastavro's validator (which names the path)."""
    try:
        validate(datum, dict(schema), raise_errors=True)
    except ValidationError as exc:
        return "; ".join(str(e) for e in exc.errors) or str(exc)
    except Exception as exc:  # the validator may trip over the same bad value
        return f"{type(exc).__name__}: {exc} ({type(error).__name__}: {error})"
    return f"{type(error).__name__}: {error}"


class SourceGenerator:
    """What both generated codecs need (this writer's, ``avroreader``'s): lines of source,
    fresh local names, and constants the generated function sees by name."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self._count = 0
        self._open: set[str] = set()  # records being emitted (a recursive one is refused)

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def _constant(self, value: Any) -> str:
        name = self._name("_c")
        self.constants[name] = value
        return name

    def _line(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def function(self, source: str, name: str, label: str, helpers: dict[str, Any]) -> Any:
        """Function ``name`` of ``source``, seeing ``helpers`` and the constants by name;
        ``label`` names its file in tracebacks."""
        namespace = {**helpers, **self.constants}
        exec(compile(source, f"<{label}>", "exec"), namespace)
        return namespace[name]


class _Generator(SourceGenerator):
    """Emits the statements that write one value; nested values get fresh local names."""

    def emit(self, schema: Any, value: str, depth: int) -> None:
        """Write the value of expression ``value`` (a plain local name) as ``schema``."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            if schema not in self.named:
                raise UnsupportedSchema(f"unknown named type {schema!r}")
            schema = self.named[schema]
        if isinstance(schema, list):
            return self._union(schema, value, depth)
        kind = schema if isinstance(schema, str) else schema["type"]
        if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
            if kind != "long":
                raise UnsupportedSchema(f"timestamp-millis on {kind!r}")
            return self._line(depth, f"out += _long(_millis({value}))")
        line = {
            "null": None,
            "boolean": f"out.append(1 if {value} else 0)",
            "int": f"out += _long({value})",
            "long": f"out += _long({value})",
            "float": f"out += _float({value})",
            "double": f"out += _double({value})",
        }
        if kind == "bytes":
            size = self._name("n")
            self._line(depth, f"{size} = len({value})")
            self._length(size, depth)
            return self._line(depth, f"out += {value}")
        if kind in line:
            if line[kind] is not None:
                self._line(depth, str(line[kind]))
            return None
        if kind == "string":
            data, size = self._name("s"), self._name("n")
            self._line(depth, f"{data} = {value}.encode(); {size} = len({data})")
            self._length(size, depth)
            self._line(depth, f"out += {data}")
        elif kind in ("record", "error"):
            self._record(schema, value, depth)
        elif kind == "enum":
            symbols = {s: _long(i) for i, s in enumerate(schema["symbols"])}
            self._line(depth, f"out += {self._constant(symbols)}[{value}]")
        elif kind == "fixed":
            self._line(depth, f"out += _fixed_size({value}, {int(schema['size'])})")
        elif kind == "array":
            item = self._name("i")
            # A string is iterable too: without the check it would go out as an array of its
            # characters.
            self._line(depth, f"if not isinstance({value}, (list, tuple)): _not_a_list({value})")
            if schema["items"] == "string":
                self._line(depth, f"out += _strings({value}) if {value} else b'\\x00'")
                return None
            self._line(depth, f"if {value}:")
            self._line(depth + 1, f"out += _long(len({value}))")
            self._line(depth + 1, f"for {item} in {value}:")
            self.emit(schema["items"], item, depth + 2)
            self._line(depth, "out.append(0)")
        elif kind == "map":
            key, item = self._name("k"), self._name("m")
            self._line(depth, f"if {value}:")
            self._line(depth + 1, f"out += _long(len({value}))")
            self._line(depth + 1, f"for {key}, {item} in {value}.items():")
            self.emit("string", key, depth + 2)
            self.emit(schema["values"], item, depth + 2)
            self._line(depth, "out.append(0)")
        else:
            raise UnsupportedSchema(f"type {kind!r} is not supported")
        return None

    def _length(self, size: str, depth: int) -> None:
        # Inline, not a call of _long: lengths are most of the numbers a record holds.
        self._line(depth, f"out += _SMALL[{size}] if {size} < 1024 else _varint({size})")

    def _record(self, schema: Mapping[str, Any], value: str, depth: int) -> None:
        if schema["name"] in self._open:
            raise UnsupportedSchema(f"recursive record {schema['name']!r}")
        self._open.add(schema["name"])
        self._line(depth, f"if type({value}) is _Encoded:")
        self._line(depth + 1, f"out += _encoded({value}, {schema['name']!r})")
        self._line(depth, "else:")
        if not schema["fields"]:
            self._line(depth + 1, "pass")
        # Not a mapping: fastavro's validator says so (the subscripts below raise TypeError).
        for field in schema["fields"]:
            local = self._name("v")
            key = repr(field["name"])
            if "default" in field:
                default = self._constant(field["default"])
                self._line(depth + 1, f"{local} = {value}.get({key}, {default})")
            else:
                self._line(depth + 1, f"{local} = {value}[{key}]")
            self.emit(field["type"], local, depth + 1)
        self._open.discard(schema["name"])

    def _union(self, branches: list[Any], value: str, depth: int) -> None:
        if len(branches) != 2 or "null" not in branches:
            raise UnsupportedSchema(
                f"union {branches!r}: only optional unions (null and one branch) are supported"
            )
        null = branches.index("null")
        self._line(depth, f"if {value} is None:")
        self._line(depth + 1, f"out.append({2 * null})")  # zig-zag of the branch index
        self._line(depth, "else:")
        self._line(depth + 1, f"out.append({2 * (1 - null)})")
        self.emit(branches[1 - null], value, depth + 1)
