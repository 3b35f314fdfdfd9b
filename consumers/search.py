"""Searching an agency's own index: always by a named user, for a stated reason, and logged."""

from __future__ import annotations

from dataclasses import dataclass

from consumers.index import Hit, SqliteIndex
from consumers.projector import index_path
from mutualaid.metrics import SEARCHES
from mutualaid.plates import normalize_plate
from mutualaid.settings import Settings
from mutualaid.topics import check_ori


class SearchRefused(Exception):
    """A search without the user or reason that policy requires; nothing was searched."""


@dataclass(frozen=True)
class PlateQuery:
    agency_ori: str
    plate: str
    user: str
    reason: str

    def __post_init__(self) -> None:
        if not self.user.strip():
            raise SearchRefused("every search needs a user (--user) so it can be audited")
        if not self.reason.strip():
            raise SearchRefused(
                "every search needs a reason, such as a case or incident number (--reason)"
            )
        if not normalize_plate(self.plate.replace("*", "").replace("?", "")):
            raise SearchRefused(f"{self.plate!r} has no letters or digits to search for")


def search_plate(settings: Settings, query: PlateQuery, limit: int = 100) -> list[Hit]:
    """Reads of a plate the agency may see, exact matches first, then likely misreads."""
    ori = check_ori(query.agency_ori)
    index = SqliteIndex(index_path(settings, ori))
    try:
        hits = index.search_plate(query.plate, limit=limit)
        index.record_search(query.user, query.reason, {"plate": query.plate}, len(hits))
    finally:
        index.close()
    SEARCHES.labels(agency=ori).inc()
    return hits
