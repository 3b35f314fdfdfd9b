"""The label vocabulary and the one derivation every connector uses."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from mutualaid import labels
from mutualaid.labels import Person


def test_spelling_is_normalised_but_typos_are_refused_with_a_suggestion() -> None:
    assert labels.check("Juvenile") == "juvenile"
    assert labels.check(" Domestic-Violence ") == "domestic_violence"
    with pytest.raises(labels.UnknownLabel, match="did you mean 'sealed'"):
        labels.check("seald")
    with pytest.raises(labels.UnknownLabel, match="known labels: "):
        labels.check("zzz")


def test_check_all_sorts_and_removes_duplicates() -> None:
    assert labels.check_all(["sealed", "Juvenile", "juvenile"]) == ["juvenile", "sealed"]


def test_an_extended_vocabulary_is_honoured() -> None:
    assert labels.check("gang", [*labels.VOCABULARY, "gang"]) == "gang"
    with pytest.raises(labels.UnknownLabel):
        labels.check("gang")


def test_protected_and_withdrawing_labels_are_in_the_vocabulary() -> None:
    assert labels.PROTECTED <= labels.VOCABULARY
    assert labels.WITHDRAWING <= labels.PROTECTED


@pytest.mark.parametrize(
    ("person", "juvenile"),
    [
        (Person.of_age(17), True),
        (Person.of_age(18), False),
        (Person.of_age(0), True),  # NIBRS NN/NB/BB: under a year
        (Person(16, 20), True),  # a range that may be a minor
        (Person(25, 30), False),
        (Person(), False),  # nothing known
        (Person(birth_date=date(2012, 5, 1)), True),  # born 2012, incident 2026
        (Person(birth_date=date(2008, 11, 30)), False),  # 18 two days before
        (Person(birth_date=date(2008, 12, 3)), True),  # 18 the day after
    ],
)
def test_juvenile_is_derived_from_age_range_or_birth_date_at_the_incident(
    person: Person, juvenile: bool
) -> None:
    at = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert labels.is_juvenile(person, at) is juvenile
    assert ("juvenile" in labels.derive([], people=[person], at=at)) is juvenile


def test_a_birth_date_without_the_incident_date_derives_nothing() -> None:
    assert labels.derive([], people=[Person(birth_date=date(2012, 1, 1))], at=None) == []


def test_derive_keeps_and_checks_the_source_labels() -> None:
    at = date(2026, 1, 1)
    assert labels.derive(["Sealed"], people=[Person.of_age(15)], at=at) == ["juvenile", "sealed"]
    with pytest.raises(labels.UnknownLabel):
        labels.derive(["seald"], at=at)
