"""Record labels: one closed vocabulary, which are protected, and how connectors derive them.

A label says something about a record that decides who may see it (``juvenile``, ``sealed``,
``informant``, ...). Labels are a closed vocabulary so that a typo cannot silently protect
nothing: ``exclude_labels: [seald]`` in an agreement, or a connector mapping that sets
``Juvenile``, is an error with a did-you-mean, never a label that matches no record.

Spelling is forgiving where it cannot change the meaning: case, surrounding spaces and ``-`` or a
space for ``_`` are normalised (``Domestic-Violence`` is ``domestic_violence``). Anything else must
be in the vocabulary.

*Protected* labels (by default juvenile, sealed, expunged, informant) keep a record from every
partner unless an agreement names the label in ``allow_labels``: the law protects these records,
so forgetting to exclude them must not share them.

Connectors derive labels they can tell from the record itself through ``derive`` (one function
for NIBRS XML, SQL polling, EIDO and ALPR), so a juvenile is labelled the same whichever system
the record came from.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from mutualaid.errors import UsageError

# The vocabulary every agreement, rule, setting and connector mapping is checked against.
# Extend it with the ``extra_labels`` setting rather than by editing records by hand.
VOCABULARY: frozenset[str] = frozenset(
    {
        "juvenile",  # a person in the record was under 18 when it occurred
        "sealed",  # sealed by a court: withdrawn from every partner
        "expunged",  # expunged: withdrawn from every partner
        "informant",  # names or describes a confidential informant
        "victim",  # identifies a victim
        "witness",  # identifies a witness
        "domestic_violence",
        "sexual_assault",
        "mental_health",
        "protected_address",  # a person in an address-confidentiality programme
        "officer_safety",
        "investigation_open",  # an active investigation the owner has not cleared for release
    }
)

# Denied to every partner unless an agreement allows the label by name (``allow_labels``).
PROTECTED: frozenset[str] = frozenset({"juvenile", "sealed", "expunged", "informant"})

# Withdraw a record from every partner, whatever the agreements say.
WITHDRAWING: frozenset[str] = frozenset({"sealed", "expunged"})

JUVENILE_AGE = 18


class UnknownLabel(UsageError, ValueError):
    """A label outside the vocabulary; the message names the closest known label."""


def normalise(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def check(name: str, vocabulary: Iterable[str] = VOCABULARY) -> str:
    """The label in its one spelling, or UnknownLabel with a did-you-mean."""
    known = sorted(vocabulary)
    label = normalise(name)
    if label in known:
        return label
    close = difflib.get_close_matches(label, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownLabel(f"unknown label {name!r}: {hint}known labels: {', '.join(known)}")


def check_all(names: Iterable[str], vocabulary: Iterable[str] = VOCABULARY) -> list[str]:
    """Every label checked, duplicates removed, sorted (so equal sets compare equal)."""
    known = frozenset(vocabulary)
    return sorted({check(n, known) for n in names})


@dataclass(frozen=True)
class Person:
    """What a connector knows of a person's age: any of an age, an age range, a date of birth.

    ``age_min``/``age_max`` carry an age range (NIBRS offender "25-30"); an exact age sets both.
    Ages under one year (NIBRS NN, NB, BB) are 0.
    """

    age_min: int | None = None
    age_max: int | None = None
    birth_date: date | None = None

    @classmethod
    def of_age(cls, age: int | None) -> Person:
        return cls(age, age)


def age_at(birth_date: date, when: date) -> int:
    """Whole years from ``birth_date`` to ``when``."""
    return (
        when.year - birth_date.year - ((when.month, when.day) < (birth_date.month, birth_date.day))
    )


def is_juvenile(person: Person, at: date | datetime | None) -> bool:
    """True if the person may have been under 18 at ``at``: the protective reading.

    A range counts if its lower end is under 18 (an offender "16-20" may be a juvenile); a date
    of birth counts only with the date it is measured at. Nothing known: False (there is nothing
    to derive from; agreements and protected labels still apply to what the source labelled).
    """
    if person.birth_date is not None and at is not None:
        when = at.date() if isinstance(at, datetime) else at
        if age_at(person.birth_date, when) < JUVENILE_AGE:
            return True
    low = person.age_min if person.age_min is not None else person.age_max
    return low is not None and low < JUVENILE_AGE


def derive(
    labels: Iterable[str],
    *,
    people: Iterable[Person] = (),
    at: date | datetime | None = None,
    vocabulary: Iterable[str] = VOCABULARY,
) -> list[str]:
    """The record's labels: those the source gave (checked against the vocabulary) plus those
    the record itself shows (``juvenile`` when any person in it may have been under 18 when it
    occurred). Sorted, so the same record always carries the same list."""
    out = set(check_all(labels, vocabulary))
    if any(is_juvenile(p, at) for p in people):
        out.add("juvenile")
    return sorted(out)
