"""Field paths into event bodies, as agreements name them: ``caller_phone``, ``persons[].ssn``.

``[]`` means every element of a list. Paths are checked against the kind's Avro schema when an
agreement is loaded, so a typo fails at start-up instead of silently sharing the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

_PATH = re.compile(r"^[a-z_][a-z0-9_]*(\[\])?(\.[a-z_][a-z0-9_]*(\[\])?)*$")


@lru_cache(maxsize=1024)  # an agreement's few paths, walked for every record it shares
def parse(path: str) -> tuple[tuple[str, bool], ...]:
    """'persons[].ssn' -> (('persons', True), ('ssn', False)); ValueError if malformed."""
    if not _PATH.match(path):
        raise ValueError(f"{path!r} is not a field path such as caller_phone or persons[].ssn")
    return tuple((part.removesuffix("[]"), part.endswith("[]")) for part in path.split("."))


def leaves(body: dict, path: str) -> Iterator[tuple[str, dict, str]]:
    """(concrete path, containing dict, key) for every value the path names in ``body``.

    The concrete path numbers list elements (``persons[1].ssn``): it is what ciphertexts are
    bound to, so a ciphertext cannot be moved from one person to another.
    """
    yield from _walk(body, parse(path), "")


def _walk(
    node: Any, parts: tuple[tuple[str, bool], ...], prefix: str
) -> Iterator[tuple[str, dict, str]]:
    if not isinstance(node, dict) or not parts:
        return
    (name, is_list), rest = parts[0], parts[1:]
    here = f"{prefix}.{name}" if prefix else name
    if name not in node:
        return
    if not rest and not is_list:
        yield here, node, name
        return
    value = node[name]
    if is_list:
        for i, item in enumerate(value or []):
            if rest:
                yield from _walk(item, rest, f"{here}[{i}]")
        if not rest:
            yield here, node, name
    else:
        yield from _walk(value, rest, here)


def set_concrete(body: dict, concrete: str, value: Any) -> None:
    """Set the value at a concrete path such as ``persons[1].ssn`` (it must exist)."""
    node: Any = body
    parts = concrete.split(".")
    for part in parts[:-1]:
        node = _step(node, part)
    last = parts[-1]
    if "[" in last:
        name, index = last[:-1].split("[")
        node[name][int(index)] = value
    else:
        node[last] = value


def _step(node: Any, part: str) -> Any:
    if "[" in part:
        name, index = part[:-1].split("[")
        return node[name][int(index)]
    return node[part]


def schema_type(schema: dict, path: str) -> Any:
    """The Avro type the path names inside a body record schema; ValueError if it names none."""
    node: Any = schema
    for name, is_list in parse(path):
        inner = _non_null(node)
        if isinstance(inner, dict) and inner.get("type") == "array":
            raise ValueError(f"{path!r}: the value before {name!r} is a list; add [] after it")
        record = _record(node)
        if record is None:
            raise ValueError(f"{path!r}: {name!r} is inside a value that has no fields")
        field = next((f for f in record["fields"] if f["name"] == name), None)
        if field is None:
            known = ", ".join(f["name"] for f in record["fields"])
            raise ValueError(f"{path!r}: no field {name!r} here (fields: {known})")
        node = field["type"]
        if is_list:
            array = _non_null(node)
            if not (isinstance(array, dict) and array.get("type") == "array"):
                raise ValueError(f"{path!r}: {name!r} is not a list; leave out the []")
            node = array["items"]
    return node


def _non_null(avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        rest = [t for t in avro_type if t != "null"]
        return rest[0] if len(rest) == 1 else rest
    return avro_type


def _record(avro_type: Any) -> dict | None:
    inner = _non_null(avro_type)
    if isinstance(inner, dict) and inner.get("type") == "record":
        return inner
    return None


def is_string(avro_type: Any) -> bool:
    inner = _non_null(avro_type)
    return inner == "string" or (isinstance(inner, dict) and inner.get("type") == "string")
