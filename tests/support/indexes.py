"""An agency's index, on either backend, as the tests look into it."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import psycopg
import pytest
from psycopg import sql

from consumers.index import index_path, schema_name
from mutualaid.settings import Settings

both_index_backends = pytest.mark.parametrize("index_url", ["sqlite", "postgresql"], indirect=True)


def index_rows(settings: Settings, agency_ori: str, query: str) -> list[tuple]:
    """Rows of ``query`` run on the agency's own index, on whichever backend the settings name
    (write SQL both accept: ``cast(x as text)``, ``deleted = false``)."""
    if settings.index_url is None:
        with closing(sqlite3.connect(index_path(settings, agency_ori))) as db:
            return db.execute(query).fetchall()
    with psycopg.connect(settings.index_url) as db:
        db.execute(sql.SQL("set search_path to {}").format(sql.Identifier(schema_name(agency_ori))))
        return db.execute(query).fetchall()
