"""How an index orders the copies a recall sends, on both backends (a SQLite file and a
PostgreSQL server, as in test_index): a more protective copy of the same record version
replaces the one held, and replaying the topic changes nothing."""

from __future__ import annotations

from test_index import dump, shared
from test_index import index as index  # the fixture: each test's own index, on both backends
from test_index import opener as opener

from consumers.index import Index
from consumers.query import Criteria


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
