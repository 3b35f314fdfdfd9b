"""What a search asks for, checked and normalised once for every index backend, and what it
returns. Each backend only renders a ``Query`` into its own SQL; the tests SQL can only
narrow (distance, name similarity) run here, on the rows it returns.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from difflib import SequenceMatcher
from typing import Any

from mutualaid.plates import normalize_plate, plate_key
from mutualaid.policy import distance_km

NAME_SIMILARITY = 0.8


@dataclass(frozen=True)
class Criteria:
    """What to look for; every criterion given must match (AND)."""

    plate: str | None = None  # misread-tolerant; * and ? are wildcards
    name: str | None = None  # "last" or "first last"; tolerant of small misspellings
    dob: str | None = None  # YYYY-MM-DD
    incident_number: str | None = None
    text: str | None = None  # words anywhere in the record: OR, "a phrase", prefix*
    since: datetime | None = None
    until: datetime | None = None
    source_ori: str | None = None
    kind: str | None = None
    near: tuple[float, float, float] | None = None  # latitude, longitude, km
    limit: int = 100

    def is_empty(self) -> bool:
        return not any(
            (self.plate, self.name, self.dob, self.incident_number, self.text, self.near)
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
    body: dict | None
    agreement_id: str


class BadCriteria(ValueError):
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
    plate_key: str | None  # its misread-folded key: what SQL matches on
    plate_pattern: str | None  # upper case with * and ? wildcards, instead of the two above
    incident_number: str | None
    dob: str | None
    text: TextQuery
    name: str | None
    name_grams: tuple[str, ...]  # candidates share one of these with a person's name
    since: datetime | None  # UTC
    until: datetime | None
    source_ori: str | None
    kind: str | None
    near: tuple[float, float, float] | None
    box: tuple[float, float, float, float] | None  # lat min, lat max, lon min, lon max
    limit: int

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
            wanted = self.name
            return any(_name_similarity(wanted, f, last) >= NAME_SIMILARITY for f, last in people)
        return True


def prepare(c: Criteria) -> Query:
    """The query for ``c``; BadCriteria names a criterion nothing could match."""
    if c.limit < 1:
        raise BadCriteria(f"limit {c.limit}: ask for at least one result")
    plate = plate_pattern = None
    if c.plate:
        pattern = re.sub(r"[^0-9A-Z*?]", "", c.plate.upper())
        if not pattern.strip("*?"):
            raise BadCriteria(f"{c.plate!r} has no letters or digits to search for")
        if "*" in pattern or "?" in pattern:
            plate_pattern = pattern
        else:
            plate = normalize_plate(c.plate)
    name = grams = None
    if c.name:
        surname = "".join(words(c.name)[-1:])
        if not surname:
            raise BadCriteria(f"name {c.name!r} has no letters to search for")
        name = c.name
        grams = tuple(sorted({surname[i : i + 3] for i in range(len(surname) - 2)} or {surname}))
    return Query(
        plate=plate,
        plate_key=plate_key(plate) if plate else None,
        plate_pattern=plate_pattern,
        incident_number=c.incident_number.strip() if c.incident_number else None,
        dob=c.dob or None,
        text=parse_text(c.text) if c.text else (),
        name=name,
        name_grams=grams or (),
        since=c.since.astimezone(UTC) if c.since else None,
        until=c.until.astimezone(UTC) if c.until else None,
        source_ori=c.source_ori or None,
        kind=c.kind or None,
        near=_checked_near(c.near) if c.near else None,
        box=_box(c.near) if c.near else None,
        limit=c.limit,
    )


def words(text: str) -> list[str]:
    """Lower-case words without accents, split as SQLite's unicode61 tokenizer splits them, so
    PostgreSQL indexes and matches the very same words."""
    plain = "".join(
        ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch)
    )
    return re.findall(r"[^\W_]+", plain.lower())


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
    a timestamp (or, from SQLite, ISO 8601 text)."""
    at = row["occurred_at"]
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
        body=json.loads(row["body"]) if row["body"] else None,
        agreement_id=row["agreement_id"],
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


def _name_similarity(wanted: str, first: str | None, last: str | None) -> float:
    wanted_parts = wanted.lower().split()
    have = [(first or "").lower(), (last or "").lower()]
    if len(wanted_parts) == 1:
        return SequenceMatcher(None, wanted_parts[0], have[1]).ratio()
    return SequenceMatcher(None, " ".join(wanted_parts), " ".join(have)).ratio()
