"""Pointers: "this agency holds a matching record: call them", and nothing more.

A pointer carries no body, no labels, and instead of the record's id an opaque reference (a
keyed hash of owner, kind and record id under the region's hash key): stable, so that a new
version or a withdrawal of the record reaches the same pointer, but telling a partner nothing
(not the incident number, not the source system's id). It is found by keyed hashes of the
values the owner allows (an agreement's ``pointer_found_by``): the plate, a person's name with
the date of birth, an identifier. A searcher's index holds the same region key, so a search
for that exact value finds the pointer; the value itself never travels.

Each kind of value is hashed under its own label, so a plate never matches an identifier that
happens to read the same. Every part goes through ``blind_form`` first (letters and digits,
lower case), as the blind index of hashed fields does: "O'Brien" finds "OBRIEN".
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from enum import StrEnum

from mutualaid import fieldpaths
from mutualaid.text import blind_form, words


class FoundBy(StrEnum):
    PLATE = "plate"
    NAME_DOB = "name_dob"  # a person's name together with the date of birth
    IDENTIFIER = "identifier"  # SSN, driver's licence, phone, VIN


PLATE_PATHS = ("plate", "vehicles[].plate")
IDENTIFIER_PATHS = (
    "persons[].ssn",
    "persons[].drivers_license",
    "persons[].phone",
    "vehicles[].vin",
    "caller_phone",
)


def _mac(hash_key: bytes, label: str, *parts: str) -> str:
    message = "\0".join([f"mutualaid pointer {label}", *parts])
    return hmac.new(hash_key, message.encode(), hashlib.sha256).hexdigest()


def record_ref(hash_key: bytes, owner: str, kind: str, record_id: str) -> str:
    """The opaque reference a pointer carries instead of the record id: the same for every
    version of the record (so updates and withdrawals reach it), meaningless without the key."""
    return "ptr-" + _mac(hash_key, "record", owner, kind, record_id)[:32]


def plate_key(hash_key: bytes, plate: str) -> str:
    return _mac(hash_key, "plate", blind_form(plate))


def identifier_key(hash_key: bytes, value: str) -> str:
    return _mac(hash_key, "identifier", blind_form(value))


def person_keys(hash_key: bytes, first: str | None, last: str, dob: str) -> list[str]:
    """A person is found by surname and date of birth, and by full name and date of birth."""
    keys = [_mac(hash_key, "person", blind_form(last), dob.strip())]
    if first and blind_form(first):
        keys.append(_mac(hash_key, "person", blind_form(first), blind_form(last), dob.strip()))
    return keys


def match_keys(body: dict | None, found_by: Iterable[FoundBy], hash_key: bytes) -> list[str]:
    """The keyed hashes a pointer to ``body`` is found by, sorted (no order leaks)."""
    if not body:
        return []
    keys: set[str] = set()
    allowed = set(found_by)
    if FoundBy.PLATE in allowed:
        keys |= {plate_key(hash_key, v) for v in _texts(body, PLATE_PATHS)}
    if FoundBy.IDENTIFIER in allowed:
        keys |= {identifier_key(hash_key, v) for v in _texts(body, IDENTIFIER_PATHS)}
    if FoundBy.NAME_DOB in allowed:
        for person in body.get("persons") or []:
            last, dob = person.get("last_name"), person.get("dob")
            if last and dob and blind_form(last):
                keys |= set(person_keys(hash_key, person.get("first_name"), last, dob))
    return sorted(keys)


def query_person_keys(hash_key: bytes, name: str, dob: str) -> tuple[str, ...]:
    """What a search for ``name`` born ``dob`` matches: a surname alone, or every split of the
    words into first name and surname ("Juan de la Cruz": Juan / De La Cruz, Juan De La /
    Cruz...). A full name never matches by surname alone: "Jane Doe" must not find John."""
    parts = words(name)
    if len(parts) == 1:
        return (_mac(hash_key, "person", parts[0], dob.strip()),)
    return tuple(
        _mac(hash_key, "person", "".join(parts[:i]), "".join(parts[i:]), dob.strip())
        for i in range(1, len(parts))
    )


def _texts(body: dict, paths: Iterable[str]) -> list[str]:
    found = []
    for path in paths:
        for _, holder, key in fieldpaths.leaves(body, path):
            value = holder[key]
            if isinstance(value, str) and blind_form(value):
                found.append(value)
    return found
