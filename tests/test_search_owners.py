"""A search's log row names whose records it returned (``result_owners``), on both backends,
and indexes made before the column existed gain it in place, their search log kept."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import psycopg
from psycopg import sql
from test_index import shared

from consumers.index import index_path, open_index, schema_name
from consumers.index.query import Criteria
from consumers.search import Searcher, SearchRequest
from mutualaid.settings import Settings
from support.indexes import both_index_backends, index_rows
from support.regions import random_ori


@both_index_backends
def test_a_search_logs_the_owners_of_its_hits(tmp_path: Path, index_url: str | None) -> None:
    settings, ori = Settings(data_dir=tmp_path, index_url=index_url), random_ori("CA")
    with closing(open_index(settings, ori)) as index:
        index.apply(
            [
                shared("r1", "7ABC123", owner="NV0990300"),
                shared("r2", "7ABC123", owner="CA0990100", minutes=1),
                shared("r3", "7ABC123", owner="NV0990300", minutes=2),
                shared("r4", "8XYZ999", owner="CA0990200"),
            ]
        )
    searcher = Searcher(settings, ori)
    try:
        for criteria in (Criteria(plate="7ABC123"), Criteria(plate="1NONE11")):
            searcher.search(SearchRequest(ori, "det.rivera", "case 24-001", criteria))
    finally:
        searcher.close()
    with closing(open_index(settings, ori)) as index:
        logged = index.unpublished_searches()
    # Each owner once, sorted; a search that found nothing names no one.
    assert [(s.result_count, s.result_owners) for s in logged] == [
        (3, ("CA0990100", "NV0990300")),
        (0, ()),
    ]


def test_an_older_sqlite_index_gains_the_column_and_keeps_its_log(tmp_path: Path) -> None:
    settings, ori = Settings(data_dir=tmp_path), random_ori("CA")
    with closing(open_index(settings, ori)) as index:
        index.record_search("det.rivera", "case 24-001", {"plate": "X"}, 2, ["NV0990300"])
    # As an index made before result_owners was: same format version, no such column.
    with closing(sqlite3.connect(index_path(settings, ori))) as db:
        db.execute("alter table search_audit drop column result_owners")
        db.commit()
    with closing(open_index(settings, ori)) as index:
        index.record_search("det.cho", "case 24-002", {"plate": "Y"}, 1, ["CA0990100"])
        logged = [(s.user, s.result_owners) for s in index.unpublished_searches()]
    assert logged == [("det.rivera", ()), ("det.cho", ("CA0990100",))]
    assert not list(tmp_path.glob("index/*.format*"))  # not set aside as an older format


def test_an_older_postgres_schema_gains_the_column_and_keeps_its_log(
    tmp_path: Path, postgres_url: str
) -> None:
    settings, ori = Settings(data_dir=tmp_path, index_url=postgres_url), random_ori("CA")
    with closing(open_index(settings, ori)) as index:
        index.record_search("det.rivera", "case 24-001", {"plate": "X"}, 2, ["NV0990300"])
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(sql.SQL("set search_path to {}").format(sql.Identifier(schema_name(ori))))
        db.execute("alter table search_audit drop column result_owners")
    with closing(open_index(settings, ori)) as index:
        index.record_search("det.cho", "case 24-002", {"plate": "Y"}, 1, ["CA0990100"])
        logged = [(s.user, s.result_owners) for s in index.unpublished_searches()]
    assert logged == [("det.rivera", ()), ("det.cho", ("CA0990100",))]
    assert index_rows(settings, ori, "select count(*) from search_audit") == [(2,)]
