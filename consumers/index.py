"""The search index an agency holds, whichever store keeps it, and how a deployment picks one.

``index_url`` unset: one SQLite file per agency under ``<data_dir>/index/`` (the embedded
default). ``index_url: postgresql://...``: one schema per agency on that server, so several
agencies' indexes can share it. Both backends implement ``Index`` with the same semantics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from consumers.query import Criteria, Hit
from consumers.records import Layout, LoggedSearch
from consumers.sqliteindex import SqliteIndex
from mutualaid.crypto import load_hash_key
from mutualaid.errors import MutualaidError
from mutualaid.settings import Settings
from mutualaid.topics import check_ori


class IndexUnavailable(MutualaidError):
    """The configured index cannot be opened; the message says why and what to check."""

    prefix = "cannot open the search index: "


class Index(Protocol):
    """One agency's index. A single projector writes it; searches read it concurrently."""

    def layout(self) -> Layout:
        """Its epoch (which names the projector's group) and whether it keeps sealed fields."""
        ...

    def reset(self, keeps_sealed: bool) -> Layout:
        """Forget every record, leaving no copy behind, under a new epoch: the projector then
        rebuilds it from the topics. The search log stays."""
        ...

    def apply(self, events: Sequence[dict]) -> int:
        """Apply a batch of shared events, durably committed before returning; returns how
        many events changed the index (older versions and replays change nothing)."""
        ...

    def search(self, criteria: Criteria) -> list[Hit]:
        """Records matching every criterion: exact plates first, then misreads; newest first."""
        ...

    def purge_expired(self, now: datetime) -> int:
        """Purge records past their retention, keeping tombstones; returns how many."""
        ...

    def count(self) -> int:
        """Records held (pointers included); tombstones are not records."""
        ...

    def record_search(
        self,
        user: str,
        reason: str,
        query: dict,
        result_count: int,
        result_owners: Iterable[str] = (),
    ) -> None:
        """Log who searched what and why, and whose records it returned (ValueError without a
        user and a reason)."""
        ...

    def unpublished_searches(self, limit: int = 500) -> list[LoggedSearch]:
        """The oldest logged searches not yet published to ``audit.search``."""
        ...

    def mark_published(self, ids: list[int]) -> None: ...

    def close(self) -> None: ...


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
        from consumers.pgindex import PostgresIndex
    except ImportError as exc:
        raise IndexUnavailable(
            f"index_url names a PostgreSQL server but its driver is missing ({exc}); "
            "pip install 'mutualaid[postgres]'"
        ) from None
    return PostgresIndex(settings.index_url, schema_name(agency_ori), hash_key)
