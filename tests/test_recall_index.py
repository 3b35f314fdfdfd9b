"""How an index orders the copies a recall sends, on both backends (a SQLite file and a
PostgreSQL server, as in test_index): a more protective copy of the same record version
replaces the one held, and replaying the topic changes nothing."""

from __future__ import annotations

from test_index import dump, shared
from test_index import index as index  # the fixture: each test's own index, on both backends
from test_index import opener as opener

from consumers.index import Index
from consumers.index.query import Criteria
from mutualaid.pointers import FoundBy, match_keys


def revised(event: dict, revision: int, **disclosure: object) -> dict:
    return {**event, "disclosure": {**event["disclosure"], "revision": revision, **disclosure}}


def test_a_higher_revision_of_the_same_version_replaces_the_copy(index: Index) -> None:
    first = shared("r1", "7ABC123")
    narrower = revised(shared("r1", None), 5)  # the recall's copy: the plate withheld
    assert index.apply([first]) == 1
    assert index.apply([narrower]) == 1
    assert index.search(Criteria(plate="7ABC123")) == []
    # An older revision (the open copy, replayed) does not come back over it.
    assert index.apply([first]) == 0
    assert index.search(Criteria(plate="7ABC123")) == []
    # A new version is a new version, whatever revision the router gave it.
    assert index.apply([revised(shared("r1", "7ABC999", version=2), 0)]) == 1
    assert [h.version for h in index.search(Criteria(plate="7ABC999"))] == [2]


def test_a_withdrawal_at_a_higher_revision_wins_and_replay_changes_nothing(index: Index) -> None:
    topic = [
        shared("r1", "7ABC123"),
        revised(shared("r1", "7ABC123", op="DELETE"), 7),
        shared("r1", "7ABC123"),  # a late duplicate of the open copy
    ]
    assert index.apply(topic) == 2
    before = dump(index)
    assert index.search(Criteria(plate="7ABC123")) == []
    assert index.apply(topic) == 0
    assert dump(index) == before


KEY = b"region-hash-key-for-tests-0123456"
PERSON = {"first_name": "John", "last_name": "O'Brien", "dob": "1980-05-01", "ssn": "123-45-6789"}


def pointer(record_id: str, found_by: list[str], *, version: int = 1, op: str = "UPSERT") -> dict:
    """A pointer as the router sends it: no body, its keys from the owner's record."""
    event = shared(record_id, None, tier="POINTER", version=version, op=op)
    body = {"plate": "7ABC123", "persons": [PERSON]}
    keys = match_keys(body, [FoundBy(f) for f in found_by], KEY) if op != "DELETE" else []
    return revised(event, 0, match_keys=keys)


def test_a_pointer_is_found_by_what_the_owner_allows_and_nothing_else(opener) -> None:
    index = opener(KEY)
    try:
        index.apply(
            [pointer("ptr-1", ["plate", "name_dob", "identifier"]), shared("r2", "7ABC123")]
        )
        by_plate = index.search(Criteria(plate="7abc 123"))
        assert sorted((h.record_id, h.tier) for h in by_plate) == [
            ("ptr-1", "POINTER"),
            ("r2", "FULL"),
        ]
        for found in (
            Criteria(name="John O'Brien", dob="1980-05-01"),
            Criteria(name="obrien", dob="1980-05-01"),
            Criteria(identifier="123456789"),
            Criteria(identifier="123-45-6789", plate="7ABC123"),
        ):
            assert [h.record_id for h in index.search(found)] == ["ptr-1"], found
        for not_found in (
            Criteria(plate="7AB*"),  # a pattern: a pointer matches exact values only
            Criteria(name="John O'Brien"),  # a name alone
            Criteria(dob="1980-05-01"),
            Criteria(name="Jane O'Brien", dob="1980-05-01"),  # another person, same surname
            Criteria(text="7ABC123"),
            Criteria(identifier="123-45-6789", text="burglary"),  # text it cannot be shown
            Criteria(incident_number="ptr-1"),
        ):
            assert "ptr-1" not in [h.record_id for h in index.search(not_found)], not_found
        (hit,) = index.search(Criteria(identifier="123-45-6789"))
        assert hit.body is None
        assert hit.pointer_message("Desert PD") == (
            "NV0990300 Desert PD holds a matching plate read record: call Records 555-0300"
        )
        # Keys the owner did not allow are not there: a pointer found by plate only.
        index.apply([pointer("ptr-1", ["plate"], version=2)])
        assert index.search(Criteria(identifier="123-45-6789")) == []
        assert [h.record_id for h in index.search(Criteria(plate="7ABC123"))] == ["r2", "ptr-1"]
        # Withdrawn, it is found by nothing.
        index.apply([pointer("ptr-1", [], version=3, op="DELETE")])
        assert [h.record_id for h in index.search(Criteria(plate="7ABC123"))] == ["r2"]
    finally:
        index.close()


def test_a_pointer_is_not_found_without_the_region_key(opener) -> None:
    index = opener(None)
    try:
        index.apply([pointer("ptr-1", ["plate", "identifier"])])
        assert index.search(Criteria(identifier="123-45-6789")) == []
    finally:
        index.close()
