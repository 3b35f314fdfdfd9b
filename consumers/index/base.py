"""What every search index is (``Index``) and the one error opening one raises.

Apart from ``consumers.index`` (which picks a backend) so that the backends, SQLite and
PostgreSQL, depend on this and never on the module that chooses between them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from consumers.index.query import Criteria, Hit
from consumers.index.records import Layout, LoggedSearch
from mutualaid.errors import MutualaidError


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
