"""The partner index on both backends, each for real (a SQLite file, a PostgreSQL server):
idempotent, version-ordered, tombstone-aware, and answering every search the same way; and
the audited searches over it, their index kept open between them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from psycopg import sql

from consumers.index import Index, IndexUnavailable, index_path, open_index
from consumers.index.postgres import PostgresIndex
from consumers.index.query import Criteria, prepare
from consumers.index.records import open_kept
from consumers.index.sqlite import SqliteIndex
from consumers.search import Searcher, SearchRequest
from mutualaid.configfile import ConfigError
from mutualaid.crypto import generate_keypair, load_keyring
from mutualaid.disclosure import new_disclosure
from mutualaid.events import new_envelope
from mutualaid.plates import plate_key
from mutualaid.settings import Settings, load_settings
from mutualaid.topics import Kind
from support.events import shared_by_router
from support.indexes import both_index_backends, index_rows
from support.processes import wait_for
from support.regions import random_ori

T0 = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)


def shared(
    record_id: str,
    plate: str | None,
    *,
    version: int = 1,
    minutes: int = 0,
    op: str = "UPSERT",
    tier: str = "FULL",
    owner: str = "NV0990300",
) -> dict:
    body = (
        None
        if op == "DELETE" or tier == "POINTER"
        else {
            "plate": plate,
            "plate_state": "NV",
            "camera_name": "Stateline",
            "latitude": 38.96,
            "longitude": -119.94,
        }
    )
    return {
        "envelope": new_envelope(
            source_ori=owner,
            source_system="t",
            kind=Kind.ALPR_READ,
            op=op,
            record_id=record_id,
            version=version,
            occurred_at=T0 + timedelta(minutes=minutes),
            now=T0,
        ),
        "disclosure": new_disclosure("CA0990100", ("a", 1), tier)
        | {"contact": "Records 555-0300" if tier == "POINTER" else None},
        "body": body,
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Index]:
    """Opens (again) one agency's index on the backend under test, with the region's hash key
    if given one; each test its own."""
    if request.param == "sqlite":
        return lambda hash_key=None: SqliteIndex(tmp_path / "idx" / "ca0990100.sqlite", hash_key)
    url, schema = request.getfixturevalue("postgres_url"), f"test_{uuid.uuid4().hex[:12]}"
    return lambda hash_key=None: PostgresIndex(url, schema, hash_key)


@pytest.fixture
def index(opener: Callable[..., Index]) -> Iterator[Index]:
    opened = opener()
    yield opened
    opened.close()


def ids(hits: list) -> list[str]:
    return [h.record_id for h in hits]


def free_text(index: Index) -> list[tuple]:
    """(row id, what the full-text index holds) for every record with any."""
    if isinstance(index, SqliteIndex):
        query = "select rowid, text from records_text order by rowid"
    else:
        query = "select id, words::text from records where words is not null order by id"
    return [tuple(r) for r in index._db.execute(query)]


def dump(index: Index) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """Every stored row, tombstones, free text and people included: what 'unchanged' means."""
    records = [tuple(r) for r in index._db.execute("select * from records order by id")]
    people = "select record, first_name, last_name, dob from persons order by record, dob"
    return records, free_text(index), [tuple(r) for r in index._db.execute(people)]


def test_plate_key_folds_misreads() -> None:
    assert plate_key("8O5-ZIS") == plate_key("b05 215") == "805215"
    assert plate_key("7abc 123") == "7A8C123"
    assert plate_key("8OS1Z3") == plate_key("BO51Z3") == "805123"


def test_upsert_then_exact_search(index: Index) -> None:
    assert index.apply([shared("r1", "7ABC123"), shared("r2", "7ABC124")]) == 2
    [hit] = index.search(Criteria(plate="7abc-123"))
    assert (hit.source_ori, hit.kind, hit.record_id, hit.version) == (
        "NV0990300",
        "alpr.read",
        "r1",
        1,
    )
    assert (hit.occurred_at, hit.tier, hit.contact, hit.agreement_id) == (T0, "FULL", None, "a")
    assert hit.body == {
        "plate": "7ABC123",
        "plate_state": "NV",
        "camera_name": "Stateline",
        "latitude": 38.96,
        "longitude": -119.94,
    }
    assert index.count() == 2


def test_misread_found_after_exact(index: Index) -> None:
    # The camera read 8OS1Z3; an officer types BO51Z3 from a witness. Both are one key.
    index.apply(
        [
            shared("misread", "8OS1Z3", minutes=9),
            shared("exact", "BO51Z3", minutes=1),
            shared("other", "8OS1Z4", minutes=5),
        ]
    )
    assert ids(index.search(Criteria(plate="BO51Z3"))) == ["exact", "misread"]
    assert ids(index.search(Criteria(plate="8OS1Z3"))) == ["misread", "exact"]
    assert ids(index.search(Criteria(plate="BO51Z3", limit=1))) == ["exact"]


def test_exact_first_then_misreads_newest_first(index: Index) -> None:
    index.apply(
        [
            shared("r1", "8OS123", minutes=1),
            shared("r2", "BOS123", minutes=5),
            shared("r3", "BO5I23", minutes=3),
            shared("r4", "XYZ999"),
        ]
    )
    assert ids(index.search(Criteria(plate="BOS123"))) == ["r2", "r3", "r1"]
    assert ids(index.search(Criteria(plate="xyz-999"))) == ["r4"]


def test_wildcards(index: Index) -> None:
    index.apply(
        [
            shared("r1", "7ABC123"),
            shared("r2", "7ABD999", minutes=1),
            shared("r3", "8ABC123", minutes=2),
            shared("r4", "7XBC123"),
        ]
    )
    assert ids(index.search(Criteria(plate="7AB*"))) == ["r2", "r1"]
    assert ids(index.search(Criteria(plate="?ABC123"))) == ["r3", "r1"]


def test_replay_changes_nothing(index: Index) -> None:
    batch = [
        shared("r1", "7ABC123"),
        shared("r2", "7ABC123", minutes=1),
        shared("r2", "7ABC124", version=2, minutes=1),
        shared("r3", "7ABC123", version=1),
        shared("r3", None, version=2, op="DELETE"),
    ]
    assert index.apply(batch) == 5
    before = dump(index)
    assert ids(index.search(Criteria(plate="7ABC123"))) == ["r1"]
    assert index.apply(batch) == 0
    assert index.apply(list(reversed(batch))) == 0
    assert dump(index) == before


def test_equal_version_upsert_does_not_overwrite(index: Index) -> None:
    index.apply([shared("r1", "FIRST1", version=2)])
    assert index.apply([shared("r1", "SECOND", version=2)]) == 0
    assert ids(index.search(Criteria(plate="FIRST1"))) == ["r1"]
    assert index.search(Criteria(plate="SECOND")) == []


def test_older_version_never_overwrites_newer(index: Index) -> None:
    index.apply([shared("r1", "NEW111", version=3)])
    assert index.apply([shared("r1", "OLD111", version=2)]) == 0
    assert ids(index.search(Criteria(plate="NEW111"))) == ["r1"]
    assert index.search(Criteria(plate="OLD111")) == []


def test_delete_leaves_a_tombstone_that_older_versions_cannot_pass(index: Index) -> None:
    index.apply([shared("r1", "7ABC123", version=1)])
    assert index.apply([shared("r1", None, version=2, op="DELETE")]) == 1
    assert index.search(Criteria(plate="7ABC123")) == [] and index.count() == 0
    assert index.apply([shared("r1", "7ABC123", version=1)]) == 0
    assert index.search(Criteria(plate="7ABC123")) == []
    assert index.apply([shared("r1", "7ABC123", version=3)]) == 1
    assert ids(index.search(Criteria(plate="7ABC123"))) == ["r1"]


def test_same_version_delete_wins(index: Index) -> None:
    # A recall withdraws the copy the partner holds at the version it holds.
    index.apply([shared("r1", "7ABC123", version=4)])
    assert index.apply([shared("r1", None, version=4, op="DELETE")]) == 1
    assert index.search(Criteria(plate="7ABC123")) == [] and index.count() == 0
    assert index.apply([shared("r1", None, version=4, op="DELETE")]) == 0
    assert index.apply([shared("r1", "7ABC123", version=4)]) == 0


def test_pointer_tier_stores_no_body(index: Index) -> None:
    pointer = shared("r1", "7ABC123", tier="POINTER")
    pointer["body"] = {"plate": "7ABC123", "camera_name": "leaked"}  # must not be kept
    assert index.apply([pointer]) == 1
    assert index.count() == 1
    assert index.search(Criteria(plate="7ABC123")) == []  # a pointer carries no plate to search by
    assert index.search(Criteria(text="leaked")) == []
    [hit] = index.search(Criteria(source_ori="NV0990300"))
    assert (hit.record_id, hit.tier, hit.contact, hit.body) == (
        "r1",
        "POINTER",
        "Records 555-0300",
        None,
    )
    [row] = index._db.execute("select body, plate, plate_key from records").fetchall()
    assert tuple(row) == (None, None, None)


def test_free_text_follows_updates_and_deletes(index: Index) -> None:
    first = shared("r1", "7ABC123")
    first["body"]["vehicle_make"] = "Subaru"
    second = shared("r1", "7ABC123", version=2)
    second["body"]["vehicle_make"] = "Toyota"
    index.apply([first, shared("r2", "7ABC124")])
    assert ids(index.search(Criteria(text="subaru"))) == ["r1"]
    index.apply([second])
    assert index.search(Criteria(text="subaru")) == []
    assert ids(index.search(Criteria(text="toyota"))) == ["r1"]
    index.apply([shared("r1", None, version=3, op="DELETE")])
    assert index.search(Criteria(text="toyota")) == []
    assert ids(index.search(Criteria(text="stateline"))) == ["r2"]
    sqlite = isinstance(index, SqliteIndex)
    stored = "7ABC124 NV Stateline" if sqlite else "'7abc124':1 'nv':2 'stateline':3"
    assert free_text(index) == [(2, stored)]


def test_plate_searches_use_the_plate_indexes(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "a.sqlite", os.urandom(32))  # plates also by keyed hash
    statements: list[str] = []
    index._db.set_trace_callback(statements.append)
    index.search(Criteria(plate="7ABC123"))
    index.search(Criteria(plate="7AB*"))
    index._db.set_trace_callback(None)
    plans = [
        " | ".join(r[3] for r in index._db.execute(f"explain query plan {sql}"))
        for sql in statements
    ]
    assert "USING INDEX records_plate_key (plate_key=?)" in plans[0]
    assert "USING INDEX records_plate (plate>? AND plate<?)" in plans[1]


def test_search_audit_requires_user_and_reason(index: Index) -> None:
    with pytest.raises(ValueError, match="user and a reason"):
        index.record_search("det.rivera", "  ", {"plate": "X"}, 0)
    with pytest.raises(ValueError, match="user and a reason"):
        index.record_search("", "case 24-001", {"plate": "X"}, 0)
    index.record_search("det.rivera", "case 24-001", {"plate": "X"}, 2)
    rows = index._db.execute('select "user", reason, query_json, result_count from search_audit')
    assert [tuple(r) for r in rows] == [("det.rivera", "case 24-001", '{"plate": "X"}', 2)]


@both_index_backends
def test_concurrent_searches_each_get_an_index_and_each_is_logged(
    tmp_path: Path, index_url: str | None
) -> None:
    settings, ori = Settings(data_dir=tmp_path, index_url=index_url), random_ori("CA")
    with closing(open_index(settings, ori)) as index:
        index.apply([shared("r1", "7AB0123")])
    searcher = Searcher(settings, ori)
    misread = Criteria(plate="7ABO123")
    request = SearchRequest(ori, "det.rivera", "case 24-001", misread)
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda _: ids(searcher.search(request)), range(40)))
    searcher.close()
    assert found == [["r1"]] * 40
    assert index_rows(settings, ori, "select count(*) from search_audit") == [(40,)]


def test_a_kept_connection_the_server_dropped_is_replaced(
    tmp_path: Path, postgres_url: str
) -> None:
    settings, ori = Settings(data_dir=tmp_path, index_url=postgres_url), random_ori("CA")
    with closing(open_index(settings, ori)) as index:
        index.apply([shared("r1", "7ABC123")])
    with closing(psycopg.connect(postgres_url, autocommit=True)) as admin:
        since = admin.execute("select now()").fetchone()[0]

        def searchers() -> list[int]:
            """Connections opened during this test whose last statement logged a search."""
            return [
                pid
                for (pid,) in admin.execute(
                    "select pid from pg_stat_activity where backend_start >= %s "
                    "and query like 'insert into search_audit%%'",
                    (since,),
                )
            ]

        request = SearchRequest(ori, "det.rivera", "case 24-001", Criteria(plate="7ABC123"))
        searcher = Searcher(settings, ori)
        assert ids(searcher.search(request)) == ["r1"]
        kept = searchers()
        assert len(kept) == 1  # open between searches, not closed after each
        admin.execute("select pg_terminate_backend(%s)", (kept[0],))  # a server restart, say
        assert ids(searcher.search(request)) == ["r1"]
        assert index_rows(settings, ori, "select count(*) from search_audit") == [(2,)]
        searcher.close()
        wait_for(lambda: searchers() == [], 10, "the searcher's connections to close")

        once = Searcher(settings, ori, reuse_seconds=0)
        assert ids(once.search(request)) == ["r1"]
        wait_for(lambda: searchers() == [], 10, "an index past its reuse time to be closed")


def test_durable_across_reopen(opener: Callable[..., Index]) -> None:
    first = opener()
    first.apply([shared("r1", "7ABC123"), shared("r2", "7ABC124", tier="POINTER")])
    first.apply([shared("r3", "7ABC125"), shared("r3", None, version=2, op="DELETE")])
    first.record_search("det.rivera", "case 24-001", {"plate": "7ABC123"}, 1)
    first.close()
    again = opener()
    if isinstance(again, SqliteIndex):
        # WAL for concurrent readers; FULL (2) so a committed batch survives power loss too.
        assert again._db.execute("pragma journal_mode").fetchone()[0] == "wal"
        assert again._db.execute("pragma synchronous").fetchone()[0] == 2
    else:  # a commit returns only once it is on disk, whatever the server's default
        assert again._db.execute("show synchronous_commit").fetchone()[0] == "on"
    assert ids(again.search(Criteria(plate="7ABC123"))) == ["r1"]
    assert again.search(Criteria(plate="7ABC123"))[0].body["camera_name"] == "Stateline"
    assert again.count() == 2
    assert again.apply([shared("r3", "7ABC125")]) == 0  # the tombstone survived too
    assert [r.user for r in again.unpublished_searches()] == ["det.rivera"]
    again.close()


def rms_record(
    record_id: str,
    persons: list[dict],
    *,
    narrative: str,
    minutes: int = 0,
    where: tuple[float, float] = (38.94, -119.98),
    owner: str = "CA0990200",
) -> dict:
    event = shared(record_id, None, minutes=minutes, owner=owner)
    event["envelope"]["kind"] = "rms.record"
    event["body"] = {
        "incident_number": f"INC-{record_id}",
        "persons": persons,
        "narrative": narrative,
        "location": {"latitude": where[0], "longitude": where[1]},
    }
    return event


@pytest.fixture
def reports(index: Index) -> Index:
    index.apply(
        [
            rms_record(
                "a",
                [{"first_name": "Jordan", "last_name": "Ellis", "dob": "1984-03-09"}],
                narrative="silver Camry taken from driveway",
                minutes=10,
            ),
            rms_record(
                "b",
                [{"first_name": "Maria", "last_name": "Johnson", "dob": "1990-07-01"}],
                narrative="catalytic converter cut from truck",
                minutes=20,
                where=(38.60, -120.40),
            ),
            rms_record(
                "c",
                [{"first_name": "Mario", "last_name": "Jonson", "dob": "1979-01-15"}],
                narrative="shoplifting, Lake Pkwy market",
                minutes=30,
                owner="NV0990300",
            ),
            shared("p1", "7ABC123", minutes=5),
        ]
    )
    return index


def test_person_name_tolerates_misspelling(reports: Index) -> None:
    assert ids(reports.search(Criteria(name="Johnson"))) == ["c", "b"]
    # Close enough to both Maria Johnson and Mario Jonson: a dispatcher sees both, newest first.
    assert ids(reports.search(Criteria(name="Maria Jonhson"))) == ["c", "b"]
    assert ids(reports.search(Criteria(name="Jordan Elis"))) == ["a"]
    assert ids(reports.search(Criteria(name="Elis"))) == ["a"]
    assert reports.search(Criteria(name="Smith")) == []


def test_dob_incident_and_text(reports: Index) -> None:
    assert ids(reports.search(Criteria(dob="1984-03-09"))) == ["a"]
    assert ids(reports.search(Criteria(incident_number="INC-b"))) == ["b"]
    assert ids(reports.search(Criteria(text="camry"))) == ["a"]
    assert ids(reports.search(Criteria(text="converter OR shoplifting"))) == ["c", "b"]


def test_filters_narrow_a_search(reports: Index) -> None:
    everything = Criteria(text="Lake OR camry OR converter")
    assert ids(reports.search(everything)) == ["c", "b", "a"]
    assert ids(reports.search(replace(everything, source_ori="NV0990300"))) == ["c"]
    assert ids(
        reports.search(
            replace(everything, since=T0 + timedelta(minutes=15), until=T0 + timedelta(minutes=25))
        )
    ) == ["b"]
    assert ids(reports.search(replace(everything, kind="alpr.read"))) == []


def test_distance_from_a_point(reports: Index) -> None:
    # b is ~50 km away from the others.
    assert ids(reports.search(Criteria(near=(38.94, -119.98, 5)))) == ["c", "a", "p1"]
    assert ids(reports.search(Criteria(near=(38.60, -120.40, 5)))) == ["b"]


def test_search_audit_is_an_outbox(index: Index) -> None:
    index.record_search("det.rivera", "case 24-001", {"plate": "X"}, 2)
    index.record_search("det.cho", "case 24-002", {"name": "Ellis"}, 0)
    pending = index.unpublished_searches()
    assert [(r.user, r.result_count) for r in pending] == [("det.rivera", 2), ("det.cho", 0)]
    assert json.loads(pending[1].query_json) == {"name": "Ellis"}
    assert pending[0].at.tzinfo is not None
    index.mark_published([pending[0].id])
    assert [r.user for r in index.unpublished_searches()] == ["det.cho"]


def test_records_past_retention_are_purged_and_stay_gone(index: Index) -> None:
    old, fresh = shared("old", "7ABC123"), shared("fresh", "7ABC123", minutes=1)
    old["disclosure"]["retain_until"] = T0 + timedelta(days=30)
    fresh["disclosure"]["retain_until"] = T0 + timedelta(days=90)
    index.apply([old, fresh, shared("forever", "7ABC123", minutes=2)])
    assert index.purge_expired(T0 + timedelta(days=31)) == 1
    assert ids(index.search(Criteria(plate="7ABC123"))) == ["forever", "fresh"]
    assert index.apply([old]) == 0  # a replay of the topic does not bring it back
    assert index.purge_expired(T0 + timedelta(days=31)) == 0
    # The tombstone keeps nothing a search could find or show.
    kept = index._db.execute(
        "select deleted, plate, plate_key, plate_state, latitude, longitude, body, "
        "incident_number from records where record_id = 'old'"
    ).fetchall()
    assert [tuple(r) for r in kept] == [(True, None, None, None, None, None, None, None)]


def test_text_phrases_prefixes_and_refusals(reports: Index) -> None:
    assert ids(reports.search(Criteria(text='"silver camry"'))) == ["a"]
    assert reports.search(Criteria(text='"camry silver"')) == []
    assert ids(reports.search(Criteria(text="conver* OR shop*"))) == ["c", "b"]
    assert ids(reports.search(Criteria(text="lake pkwy"))) == ["c"]  # AND
    assert ids(reports.search(Criteria(text="Pkwy-market"))) == ["c"]  # words, as stored
    assert ids(reports.search(Criteria(text="(camry)"))) == ["a"]  # no operator syntax
    for bad in ("-- ;", "camry OR", "OR"):
        with pytest.raises(ValueError, match="needs a word"):
            reports.search(Criteria(text=bad))
    with pytest.raises(ValueError, match="identifier '--' has no letters or digits"):
        reports.search(Criteria(identifier="--"))


def test_postgres_searches_use_its_indexes(postgres_url: str) -> None:
    hash_key = os.urandom(32)  # searches also by keyed hash, as in a region with one
    index = PostgresIndex(postgres_url, f"test_{uuid.uuid4().hex[:12]}", hash_key)
    plates = [f"{n % 10}{chr(65 + n % 26)}{chr(65 + n // 26 % 26)}X{n:03d}" for n in range(3000)]
    index.apply([shared(f"r{n}", plate) for n, plate in enumerate(plates)])
    names = [{"first_name": "Pat", "last_name": f"Name{p}"} for p in plates]
    index.apply([rms_record(f"p{n}", [who], narrative="") for n, who in enumerate(names)])
    index._db.execute("analyze")

    def plan(criteria: Criteria) -> str:
        statement, args = index._select(prepare(criteria, hash_key))
        rows = index._db.execute(f"explain {statement}", args).fetchall()
        return " | ".join(r[0] for r in rows)

    assert "records_plate_key" in plan(Criteria(plate="7ABC123"))
    assert "records_plate" in plan(Criteria(plate="?ABC12*"))  # the trigram index, any wildcard
    assert "persons_name" in plan(Criteria(name="Ellis"))
    assert "persons_last_name" in plan(Criteria(name="Ellis"))  # or its keyed hash
    assert "persons_dob" in plan(Criteria(dob="1984-03-09"))
    assert "records_words" in plan(Criteria(text="camry"))
    index.close()


def test_agencies_share_a_server_each_in_its_own_schema(postgres_url: str) -> None:
    settings = Settings(index_url=postgres_url)
    county, city = open_index(settings, "CA0990200"), open_index(settings, "CA0990100")
    county.apply([shared("r1", "7ABC123")])
    assert ids(county.search(Criteria(plate="7ABC123"))) == ["r1"]
    assert city.search(Criteria(plate="7ABC123")) == [] and city.count() == 0
    assert county._db.execute("show search_path").fetchone()[0].startswith("mutualaid_ca0990200")
    county.close()
    city.close()


def test_the_setting_chooses_the_backend(tmp_path: Path, postgres_url: str) -> None:
    local = open_index(Settings(data_dir=tmp_path), "CA0990100")
    assert isinstance(local, SqliteIndex)
    assert index_path(Settings(data_dir=tmp_path), "CA0990100").exists()
    local.close()
    shared_server = open_index(Settings(index_url=postgres_url), "CA0990100")
    assert isinstance(shared_server, PostgresIndex)
    shared_server.close()


def test_a_bad_index_url_stops_start_up(tmp_path: Path) -> None:
    config = tmp_path / "m.yaml"
    config.write_text("index_url: /var/lib/mutualaid/index.db\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert f"{config}:1: index_url: '/var/lib/mutualaid/index.db' is not allowed" in str(
        caught.value
    )
    assert "expected a PostgreSQL URL such as postgresql://" in str(caught.value)
    config.write_text("index_url: postgresql://db.example:port/search\n")
    with pytest.raises(ConfigError, match="port must be a number"):
        load_settings(config)


PLATE_SEARCH = ["--plate", "7ABC123", "--reason", "case 24-001"]


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    url = f"postgresql://mutualaid@/search?host={tmp_path}&port=1"  # nobody listens there
    with pytest.raises(IndexUnavailable, match="cannot connect to the PostgreSQL index at"):
        open_index(Settings(index_url=url), "CA0990100")
    search = subprocess.run(
        [sys.executable, "-m", "cli", "search", "--agency", "CA0990100", *PLATE_SEARCH],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MUTUALAID_INDEX_URL": url, "PATH": "/usr/bin:/bin"},
    )
    assert search.returncode == 1
    assert search.stderr.startswith(
        f"mutualaid: cannot open the search index: cannot connect to the PostgreSQL index at "
        f"{tmp_path}:1/search"
    )
    assert "Check index_url and that the server is running" in search.stderr


# --- fields kept encrypted, found by blind index --------------------------------------------

PARTNER = "CA0990100"
KEPT = {
    "persons[].first_name": "encrypt_indexed",
    "persons[].last_name": "encrypt_indexed",
    "persons[].dob": "encrypt_indexed",
    "persons[].drivers_license": "encrypt_indexed",
    "narrative": "encrypt",
}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[bytes, Path]:
    """A hash key and the partner's key pair, made for this test alone: (hash key, key dir)."""
    generate_keypair(PARTNER, tmp_path / "keys" / "public", tmp_path / "keys" / "private")
    return os.urandom(32), tmp_path / "keys"


def as_router_shares(event: dict, fields: dict[str, str], keys: tuple[bytes, Path]) -> dict:
    hash_key, key_dir = keys
    return shared_by_router(event, PARTNER, fields, key_dir / "public", hash_key)


def ellis(record_id: str, licence: str, narrative: str) -> dict:
    person = {"first_name": "Jordan", "last_name": "Ellis", "dob": "1984-03-09"}
    return rms_record(record_id, [person | {"drivers_license": licence}], narrative=narrative)


def test_kept_encrypted_fields_are_found_by_their_blind_index(
    opener: Callable[..., Index], keys: tuple[bytes, Path]
) -> None:
    kept = as_router_shares(ellis("kept", "D123-4567", "silver Camry"), KEPT, keys)
    in_clear = ellis("clear", "D765-4321", "silver Camry")
    index = opener(keys[0])
    index.apply([kept, in_clear])
    # Exact values match hashed ones whatever the case or punctuation; misspellings only
    # match names in clear, and encrypted free text is no text at all.
    for name in ("Jordan Ellis", "JORDAN ellis", "Ellis"):
        assert sorted(ids(index.search(Criteria(name=name)))) == ["clear", "kept"], name
    assert ids(index.search(Criteria(name="Jordan Elis"))) == ["clear"]
    assert ids(index.search(Criteria(name="Morgan Ellis"))) == ["clear"]  # near enough in clear
    assert ids(index.search(Criteria(name="Morgan Smith"))) == []
    assert sorted(ids(index.search(Criteria(dob="1984-03-09")))) == ["clear", "kept"]
    assert ids(index.search(Criteria(dob="1984-03-10"))) == []
    assert ids(index.search(Criteria(identifier="d1234567"))) == ["kept"]
    assert ids(index.search(Criteria(identifier="D765-4321"))) == ["clear"]
    assert ids(index.search(Criteria(text="Camry"))) == ["clear"]
    assert ids(index.search(Criteria(text="Camry", identifier="D123 4567"))) == []
    (hit,) = index.search(Criteria(identifier="D123-4567"))
    assert hit.body["persons"][0]["last_name"] is None
    assert hit.body["narrative"] is None
    assert sorted(hit.encrypted_fields) == [
        "narrative",
        "persons[0].dob",
        "persons[0].drivers_license",
        "persons[0].first_name",
        "persons[0].last_name",
    ]
    opened = open_kept(hit.sealed, load_keyring(PARTNER, keys[1] / "private"))
    assert json.loads(opened["persons[0].last_name"]) == "Ellis"
    assert json.loads(opened["narrative"]) == "silver Camry"
    index.close()
    # Without the region's hash key nothing hashed can be matched.
    without = opener()
    assert ids(without.search(Criteria(name="Jordan Ellis"))) == ["clear"]
    assert ids(without.search(Criteria(identifier="D123-4567"))) == []
    without.close()


def stored_text(index: Index) -> str:
    """Every value the index stores, as text: tables, full text and (SQLite) the raw file."""
    if isinstance(index, SqliteIndex):
        path = Path(index._db.execute("pragma database_list").fetchone()["file"])
        files = [path, path.with_name(path.name + "-wal")]
        return "".join(f.read_bytes().decode("latin-1") for f in files if f.exists())
    tables = ("records", "persons", "search_audit", "layout")
    return "".join(str(row) for t in tables for row in index._db.execute(f"select {t} from {t}"))


def test_an_index_keeping_fields_encrypted_holds_no_clear_copy(
    opener: Callable[..., Index], keys: tuple[bytes, Path]
) -> None:
    index = opener(keys[0])
    index.apply([as_router_shares(ellis("kept", "D123-4567", "silver Camry"), KEPT, keys)])
    assert index.count() == 1
    stored = stored_text(index)
    assert "kept" in stored  # the record is there: the scan can see what the index holds
    for secret in ("Ellis", "ELLIS", "ellis", "Jordan", "1984-03-09", "D123", "Camry"):
        assert secret not in stored
    index.close()


def test_a_plate_shared_hashed_matches_only_exactly(
    opener: Callable[..., Index], keys: tuple[bytes, Path]
) -> None:
    index = opener(keys[0])
    index.apply([as_router_shares(shared("h1", "7ABC123"), {"plate": "encrypt_indexed"}, keys)])
    assert ids(index.search(Criteria(plate="7abc-123"))) == ["h1"]
    assert ids(index.search(Criteria(plate="7A8C123"))) == []  # no misreads of a hash
    assert ids(index.search(Criteria(plate="7ABC*"))) == []  # nor patterns
    index.close()


def test_reset_forgets_every_record_under_a_new_epoch(opener: Callable[..., Index]) -> None:
    index = opener()
    index.apply([shared("r1", "7ABC123"), shared("r2", "8XYZ999")])
    index.record_search("det.rivera", "case 24-001", {"plate": "7ABC123"}, 1)
    before = index.layout()
    assert before.keeps_sealed is False
    after = index.reset(keeps_sealed=True)
    assert after.keeps_sealed is True and after.epoch != before.epoch
    assert index.count() == 0
    assert index.search(Criteria(plate="7ABC123")) == []
    assert free_text(index) == []
    assert [s.user for s in index.unpublished_searches()] == ["det.rivera"]  # the log stays
    index.close()
    again = opener()
    assert again.layout() == after
    assert again.apply([shared("r1", "7ABC123")]) == 1  # rebuilt from the topic as new
    again.close()


def test_an_index_in_an_older_format_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "ca0990100.sqlite"
    with closing(sqlite3.connect(path)) as db:
        db.execute("create table search_audit (id integer primary key, user text)")
        db.execute("insert into search_audit (user) values ('det.rivera')")
        db.execute("pragma user_version = 3")
        db.commit()
    index = SqliteIndex(path)
    assert index.count() == 0 and index.unpublished_searches() == []
    index.close()
    with closing(sqlite3.connect(tmp_path / "ca0990100.sqlite.format3")) as kept:
        assert kept.execute("select user from search_audit").fetchall() == [("det.rivera",)]


def test_a_file_another_process_is_creating_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ca0990100.sqlite"
    path.touch()  # what sqlite3.connect leaves before the creator's schema commits: version 0
    index = SqliteIndex(path)
    assert index.apply([shared("r1", "7ABC123")]) == 1
    index.close()
    assert [p.name for p in tmp_path.iterdir()] == ["ca0990100.sqlite"]


def test_an_index_set_up_again_waits_for_the_writer_of_its_schema(postgres_url: str) -> None:
    # A search opening an index that needs SCHEMA (again) while its projector resets it: SCHEMA
    # must wait for the projector's lock on the schema, not take the tables' locks in another
    # order beside its TRUNCATE (the two deadlocked, and the projector exited).
    schema = f"test_{uuid.uuid4().hex[:12]}"
    first = PostgresIndex(postgres_url, schema)
    first._db.execute("drop table pointer_keys")  # as an index made by an older version
    writer = psycopg.connect(postgres_url, autocommit=True)
    writer.execute("select pg_advisory_lock(%s)", (first._lock,))  # a projector mid-reset
    opened: list[PostgresIndex] = []
    opener = threading.Thread(target=lambda: opened.append(PostgresIndex(postgres_url, schema)))
    opener.start()
    opener.join(1.0)
    assert opener.is_alive() and not opened, "set up beside the schema's writer"
    with writer.transaction():  # the projector's TRUNCATE goes through while the opener waits
        writer.execute("set local lock_timeout = '5s'")
        writer.execute(sql.SQL("set local search_path to {}").format(sql.Identifier(schema)))
        writer.execute("truncate persons, records")
    writer.execute("select pg_advisory_unlock(%s)", (first._lock,))
    opener.join(30)
    assert opened and opened[0]._current()  # set up once the writer was done
    opened[0].close()
    first.close()
    writer.close()


T = TypeVar("T")


def beside_a_search(url: str, schema: str, what: str, work: Callable[[], T], reads: list[str]) -> T:
    """Run ``work`` while a search (one transaction, as a search's cursor holds) that has read
    records goes on to read ``reads``: ``work`` must wait for the search, and neither may be
    aborted as a deadlock. Returns what ``work`` returned."""
    search = psycopg.connect(url)
    search.execute(sql.SQL("set search_path to {}").format(sql.Identifier(schema)))
    search.execute("select count(*) from records")
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(work())
        except BaseException as exc:  # shown by the assertion below
            failed.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(1.0)
    assert worker.is_alive(), f"{what} did not wait for the search"
    for table in reads:  # in an order other than the search's: a deadlock, here
        search.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(table)))
    search.commit()
    worker.join(30)
    assert not worker.is_alive() and failed == []
    search.close()
    return done[0]


def test_a_reset_beside_a_search_waits_for_it_without_deadlock(postgres_url: str) -> None:
    # A search has read records and goes on to persons while a projector starting up resets
    # the index: the reset waits for the search, and neither is aborted as a deadlock.
    schema = f"test_{uuid.uuid4().hex[:12]}"
    index = PostgresIndex(postgres_url, schema)
    reset = partial(index.reset, keeps_sealed=False)
    beside_a_search(postgres_url, schema, "the reset", reset, ["persons", "pointer_keys"])
    index.close()


def test_schema_set_up_beside_a_search_waits_for_it_without_deadlock(postgres_url: str) -> None:
    # An index opened by a newer version runs SCHEMA again (ALTER TABLE takes each table
    # exclusively) while a search that has read records goes on to persons: SCHEMA reaches
    # records first, as the search did, so it waits instead of deadlocking.
    schema = f"test_{uuid.uuid4().hex[:12]}"
    first = PostgresIndex(postgres_url, schema)
    first._db.execute("drop table pointer_keys")  # as an index made by an older version
    opened = beside_a_search(
        postgres_url, schema, "SCHEMA", lambda: PostgresIndex(postgres_url, schema), ["persons"]
    )
    assert opened._current()
    opened.close()
    first.close()
