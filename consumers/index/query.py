"""What a search asks for, checked and normalised once for every index backend, and what it
returns. Each backend only renders a ``Query`` into its own SQL; the tests SQL can only
narrow (distance, name similarity) run here, on the rows it returns.

Given the region's hash key, a query also carries the keyed hash (the blind index) of each
value that can be matched exactly: plate, surname and first name, date of birth, incident
number and identifier. A field a partner receives hashed, or encrypted with a blind index,
is found by that, though never by a misspelling, a misread or a wildcard.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from difflib import SequenceMatcher
from typing import Any

from consumers.index.records import sealed_paths
from consumers.own import OWN_RECORDS
from mutualaid import fieldpaths, pointers
from mutualaid.disclosure import keyed_hash
from mutualaid.errors import Refused
from mutualaid.plates import normalize_plate, plate_key
from mutualaid.policy import distance_km
from mutualaid.text import words

NAME_SIMILARITY = 0.8
KIND_WORDS = {
    "alpr.read": "plate read",
    "cad.incident": "CAD incident",
    "rms.record": "RMS report",
    "hotlist.entry": "hotlist",
}


@dataclass(frozen=True)
class Criteria:
    """What to look for; every criterion given must match (AND)."""

    plate: str | None = None  # misread-tolerant; * and ? are wildcards
    name: str | None = None  # "last" or "first last"; tolerant of small misspellings
    dob: str | None = None  # YYYY-MM-DD
    incident_number: str | None = None
    text: str | None = None  # words anywhere in the record: OR, "a phrase", prefix*
    identifier: str | None = None  # licence, SSN, VIN, phone...: in clear or by blind index
    since: datetime | None = None
    until: datetime | None = None
    source_ori: str | None = None
    kind: str | None = None
    near: tuple[float, float, float] | None = None  # latitude, longitude, km
    limit: int = 100

    def is_empty(self) -> bool:
        return not any(
            (
                self.plate,
                self.name,
                self.dob,
                self.incident_number,
                self.text,
                self.identifier,
                self.near,
            )
        )


@dataclass(frozen=True)
class Hit:
    """One record as a search returns it: enough to show it, cite the agreement that let it in,
    and (for a pointer, whose body is None) say whom to call."""

    source_ori: str
    kind: str
    record_id: str
    version: int
    occurred_at: datetime
    tier: str
    contact: str | None
    body: dict | None  # fields kept encrypted are null here, and named in encrypted_fields
    agreement_id: str
    encrypted_fields: tuple[str, ...] = ()
    sealed: str | None = None  # what ``consumers.index.records.open_kept`` opens

    def shown(self) -> dict[str, Any]:
        """What a search shows of the hit, the same from the command line (``--json``) and the
        API: everything but the agreement id and the sealed fields' ciphertext."""
        return {
            "source_ori": self.source_ori,
            "kind": self.kind,
            "record_id": self.record_id,
            "version": self.version,
            "occurred_at": self.occurred_at,
            "tier": self.tier,
            "contact": self.contact,
            "body": self.body,
            "encrypted_fields": list(self.encrypted_fields),
            "own": self.own,
        }

    @property
    def own(self) -> bool:
        """One of the searching agency's own records (``consumers.own``), not a partner's."""
        return self.agreement_id == OWN_RECORDS

    def pointer_message(self, owner_name: str = "") -> str | None:
        """For a pointer, all a searcher is told: who holds a matching record and whom to call
        (``record_id`` is the pointer's opaque reference, to quote when calling)."""
        if self.tier != "POINTER":
            return None
        who = f"{self.source_ori} {owner_name}".strip()
        what = KIND_WORDS.get(self.kind, self.kind)
        return f"{who} holds a matching {what} record: call {self.contact or 'the agency'}"


class BadCriteria(Refused, ValueError):
    """A criterion no index can answer; nothing was searched."""


@dataclass(frozen=True)
class Term:
    """One word, or a phrase of several in a row; ``prefix``: the last may start a longer one."""

    words: tuple[str, ...]
    prefix: bool = False


# Alternatives (OR), each a conjunction (AND) of terms: "camry OR silver truck".
TextQuery = tuple[tuple[Term, ...], ...]


@dataclass(frozen=True)
class Query:
    """Criteria checked and normalised: what every backend renders into SQL."""

    plate: str | None  # exact plate, ranked first
    plate_keys: tuple[str, ...]  # what SQL matches on: its misread-folded key, and its hash
    plate_pattern: str | None  # upper case with * and ? wildcards, instead of the two above
    incident_numbers: tuple[str, ...]  # as typed, and its keyed hash; either matches
    dobs: tuple[str, ...]  # likewise
    text: TextQuery
    name: str | None
    name_grams: tuple[str, ...]  # candidates share one of these with a person's name
    name_hashes: BlindName | None  # or carry one of these hashed
    since: datetime | None  # UTC
    until: datetime | None
    source_ori: str | None
    kind: str | None
    near: tuple[float, float, float] | None
    box: tuple[float, float, float, float] | None  # lat min, lat max, lon min, lon max
    limit: int
    # A pointer matches instead if it holds one key of every group (``pointer_keys``); empty
    # when the search asks for something no pointer can be found by.
    pointer_keys: tuple[tuple[str, ...], ...] = ()

    @property
    def filters_rows(self) -> bool:
        """Whether rows SQL returns still go through ``keeps`` (so SQL must not LIMIT)."""
        return self.near is not None or self.name is not None

    def keeps(
        self,
        latitude: float | None,
        longitude: float | None,
        people: Iterable[tuple[str | None, str | None]],
    ) -> bool:
        """The exact tests SQL only narrowed: distance from the point, similar names."""
        if self.near is not None:
            if latitude is None or longitude is None:
                return False
            if distance_km((latitude, longitude), self.near[:2]) > self.near[2]:
                return False
        if self.name is not None:
            return any(self._same_person(first, last) for first, last in people)
        return True

    def _same_person(self, first: str | None, last: str | None) -> bool:
        assert self.name is not None
        if _name_similarity(self.name, first, last) >= NAME_SIMILARITY:
            return True
        if self.name_hashes is None:
            return False
        # Some part held as a keyed hash: that part must be the hash of what was asked, and
        # every other part asked for similar in clear.
        blind = self.name_hashes
        parts = [(blind.surname_words, blind.surname, last)]
        if blind.first_names:
            parts.append((blind.first_words, blind.first_names, first))
        by_hash = [have in hashes for _, hashes, have in parts]
        similar = [_similar(typed, have) for typed, _, have in parts]
        return any(by_hash) and all(h or c for h, c in zip(by_hash, similar, strict=True))


@dataclass(frozen=True)
class BlindName:
    """A name asked for, as words and as the keyed hashes a hashed name part could hold."""

    surname_words: str
    surname: tuple[str, ...]
    first_words: str
    first_names: tuple[str, ...]


def prepare(c: Criteria, hash_key: bytes | None = None) -> Query:
    """The query for ``c``; BadCriteria names a criterion nothing could match. With the
    region's ``hash_key``, exact values also match where a partner received them hashed."""
    if c.limit < 1:
        raise BadCriteria(f"limit {c.limit}: ask for at least one result")

    def exact(value: str | None) -> tuple[str, ...]:
        if not value or not value.strip():
            return ()
        return (value.strip(), *_blind(value, hash_key))

    plate = plate_pattern = None
    if c.plate:
        pattern = re.sub(r"[^0-9A-Z*?]", "", c.plate.upper())
        if not pattern.strip("*?"):
            raise BadCriteria(f"{c.plate!r} has no letters or digits to search for")
        if "*" in pattern or "?" in pattern:
            plate_pattern = pattern
        else:
            plate = normalize_plate(c.plate)
    name = grams = blind_name = None
    if c.name:
        name_words = words(c.name)
        if not name_words:
            raise BadCriteria(f"name {c.name!r} has no letters to search for")
        name, surname = c.name, name_words[-1]
        grams = tuple(sorted({surname[i : i + 3] for i in range(len(surname) - 2)} or {surname}))
        blind_name = _blind_name(name_words, hash_key) if hash_key else None
    return Query(
        plate=plate,
        plate_keys=_plate_keys(plate, hash_key) if plate else (),
        plate_pattern=plate_pattern,
        incident_numbers=exact(c.incident_number),
        dobs=exact(c.dob),
        text=_all_of(
            parse_text(c.text) if c.text else (),
            _identifier(c.identifier, hash_key) if c.identifier else (),
        ),
        name=name,
        name_grams=grams or (),
        name_hashes=blind_name,
        since=c.since.astimezone(UTC) if c.since else None,
        until=c.until.astimezone(UTC) if c.until else None,
        source_ori=c.source_ori or None,
        kind=c.kind or None,
        near=_checked_near(c.near) if c.near else None,
        box=_box(c.near) if c.near else None,
        limit=c.limit,
        pointer_keys=_pointer_keys(c, plate, hash_key),
    )


def _pointer_keys(
    c: Criteria, plate: str | None, hash_key: bytes | None
) -> tuple[tuple[str, ...], ...]:
    """The match keys a pointer must hold to answer ``c``: one group per criterion, each a
    kind of value a pointer can be found by (``mutualaid.pointers``). Nothing if the search
    also asks for what a pointer does not carry (text, a place, a plate pattern, an incident
    number, a name without a date of birth): a pointer cannot be shown to match that."""
    if hash_key is None:
        return ()
    if c.text or c.near or c.incident_number or (c.plate and plate is None):
        return ()
    if bool(c.name) != bool(c.dob):
        return ()
    groups = []
    if plate:
        groups.append((pointers.plate_key(hash_key, plate),))
    if c.name and c.dob:
        groups.append(pointers.query_person_keys(hash_key, c.name, c.dob))
    if c.identifier:
        groups.append((pointers.identifier_key(hash_key, c.identifier),))
    return tuple(groups)


def _blind(value: str, hash_key: bytes | None) -> tuple[str, ...]:
    """The value's keyed hash, what a field shared hashed holds; nothing without the key."""
    return (keyed_hash(hash_key, value),) if hash_key else ()


def _plate_keys(plate: str, hash_key: bytes | None) -> tuple[str, ...]:
    """The records' plate_key values that match: the folded plate, and the plate's keyed hash
    (which a plate shared hashed holds there)."""
    return (plate_key(plate), *_blind(plate, hash_key))


def _blind_name(name_words: list[str], hash_key: bytes) -> BlindName:
    """Any split of the words into first name and surname: "Juan de la Cruz" may be filed as
    Juan / De La Cruz or as Juan De La / Cruz."""
    splits = range(len(name_words))
    return BlindName(
        surname_words=name_words[-1],
        surname=tuple(sorted({keyed_hash(hash_key, "".join(name_words[i:])) for i in splits})),
        first_words=" ".join(name_words[:-1]),
        first_names=tuple(
            sorted({keyed_hash(hash_key, "".join(name_words[:i])) for i in splits if i})
        ),
    )


def _identifier(value: str, hash_key: bytes | None) -> TextQuery:
    """An identifier as text alternatives: its words in a row, or its keyed hash (a hashed
    field's hash is a word of the record's text, as every string of its body is)."""
    clear = tuple(words(value))
    if not clear:
        raise BadCriteria(f"identifier {value!r} has no letters or digits to search for")
    blind = tuple((Term((h,)),) for h in _blind(value, hash_key))
    return ((Term(clear),), *blind)


def _all_of(a: TextQuery, b: TextQuery) -> TextQuery:
    """Both text queries: (a1 OR a2) AND (b1 OR b2), as alternatives of conjunctions."""
    if not a or not b:
        return a or b
    return tuple(x + y for x in a for y in b)


def parse_text(text: str) -> TextQuery:
    """'camry OR "silver truck" lake*' -> alternatives of terms; BadCriteria if no words."""
    alternatives: list[tuple[Term, ...]] = []
    current: list[Term] = []
    for phrase, word in re.findall(r'"([^"]*)"?|(\S+)', text):
        if word == "OR":
            alternatives.append(tuple(current))
            current = []
            continue
        found = tuple(words(phrase or word))
        if found:
            current.append(Term(found, prefix=(phrase or word).endswith("*")))
    alternatives.append(tuple(current))
    if not all(alternatives):
        raise BadCriteria(f"text {text!r}: every side of OR needs a word to search for")
    return tuple(alternatives)


def to_hit(row: Mapping[str, Any]) -> Hit:
    """A stored row as a search result, times in UTC; ``body`` is JSON text, ``occurred_at``
    a timestamp (or, from SQLite, ISO 8601 text). A field kept encrypted shows as null (in
    the body it holds the keyed hash it is matched by), named in ``encrypted_fields``."""
    at = row["occurred_at"]
    body = json.loads(row["body"]) if row["body"] else None
    encrypted = sealed_paths(row["sealed"]) if row["sealed"] else []
    for path in encrypted if body else ():
        fieldpaths.set_concrete(body, path, None)
    return Hit(
        source_ori=row["source_ori"],
        kind=row["kind"],
        record_id=row["record_id"],
        version=row["version"],
        occurred_at=(at if isinstance(at, datetime) else datetime.fromisoformat(at)).astimezone(
            UTC
        ),
        tier=row["tier"],
        contact=row["contact"],
        body=body,
        agreement_id=row["agreement_id"],
        encrypted_fields=tuple(encrypted),
        sealed=row["sealed"],
    )


def _checked_near(near: tuple[float, float, float]) -> tuple[float, float, float]:
    lat, lon, km = near
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and km > 0):
        raise BadCriteria(f"near {lat},{lon},{km}: needs a latitude, a longitude and km > 0")
    return near


def _box(near: tuple[float, float, float]) -> tuple[float, float, float, float]:
    """A box around the circle, for an index to narrow by before the exact distance test."""
    lat, lon, km = near
    dlat, dlon = km / 111.0, km / (111.0 * max(math.cos(math.radians(lat)), 0.01))
    return lat - dlat, lat + dlat, lon - dlon, lon + dlon


def _similar(typed: str, have: str | None) -> bool:
    return SequenceMatcher(None, typed, (have or "").lower()).ratio() >= NAME_SIMILARITY


def _name_similarity(wanted: str, first: str | None, last: str | None) -> float:
    wanted_parts = wanted.lower().split()
    have = [(first or "").lower(), (last or "").lower()]
    if len(wanted_parts) == 1:
        return SequenceMatcher(None, wanted_parts[0], have[1]).ratio()
    return SequenceMatcher(None, " ".join(wanted_parts), " ".join(have)).ratio()
