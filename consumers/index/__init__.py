"""The search index an agency holds, whichever store keeps it, and how a deployment picks one.

``index_url`` unset: one SQLite file per agency under ``<data_dir>/index/`` (the embedded
default). ``index_url: postgresql://...``: one schema per agency on that server, so several
agencies' indexes can share it. Both backends implement ``Index`` with the same semantics.
"""

from __future__ import annotations

from pathlib import Path

from consumers.index.base import Index, IndexUnavailable
from consumers.index.sqlite import SqliteIndex
from mutualaid.crypto import load_hash_key
from mutualaid.settings import Settings
from mutualaid.topics import check_ori


def index_path(settings: Settings, agency_ori: str) -> Path:
    """Each agency's own SQLite index file: the agency holds it, nobody else reads it."""
    return settings.data_dir / "index" / f"{check_ori(agency_ori).lower()}.sqlite"


def schema_name(agency_ori: str) -> str:
    """Each agency's own schema on a shared PostgreSQL server."""
    return f"mutualaid_{check_ori(agency_ori).lower()}"


def open_index(settings: Settings, agency_ori: str) -> Index:
    """The agency's index on the backend the settings choose; IndexUnavailable if it cannot
    be opened (server unreachable, driver missing, no rights to create the schema). With the
    region's hash key at hand, its searches also match values shared hashed."""
    hash_key = load_hash_key(settings.hash_key_file)
    if settings.index_url is None:
        return SqliteIndex(index_path(settings, agency_ori), hash_key)
    try:
        # Imported only here: psycopg is an optional dependency (the postgres extra).
        from consumers.index.postgres import PostgresIndex
    except ImportError as exc:
        raise IndexUnavailable(
            f"index_url names a PostgreSQL server but its driver is missing ({exc}); "
            "pip install 'mutualaid[postgres]'"
        ) from None
    return PostgresIndex(settings.index_url, schema_name(agency_ori), hash_key)
