"""Searching an agency's own index: always by a named user, for a stated reason, and logged.

The log is written to the agency's own store in the same call, before any result is returned;
the agency's projector then publishes it to ``audit.search`` (an outbox), so searching keeps
working while the broker is unreachable and no search goes unaudited.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from consumers.index import open_index
from consumers.query import BadCriteria, Criteria, Hit, prepare
from mutualaid.metrics import SEARCHES
from mutualaid.settings import Settings
from mutualaid.topics import check_ori


class SearchRefused(Exception):
    """A search without the user, reason or criteria that policy requires; nothing was searched."""


@dataclass(frozen=True)
class SearchRequest:
    agency_ori: str
    user: str
    reason: str
    criteria: Criteria

    def __post_init__(self) -> None:
        if not self.user.strip():
            raise SearchRefused("every search needs a user (--user) so it can be audited")
        if not self.reason.strip():
            raise SearchRefused(
                "every search needs a reason, such as a case or incident number (--reason)"
            )
        if self.criteria.is_empty():
            raise SearchRefused(
                "say what to look for: a plate, name, date of birth, incident number, text or "
                "a place (--near); time, agency and kind only narrow a search"
            )
        try:
            prepare(self.criteria)
        except BadCriteria as exc:
            raise SearchRefused(str(exc)) from None


def run_search(settings: Settings, request: SearchRequest) -> list[Hit]:
    """The records the agency holds that match, after logging who searched and why."""
    ori = check_ori(request.agency_ori)
    index = open_index(settings, ori)
    try:
        hits = index.search(request.criteria)
        query = {k: v for k, v in asdict(request.criteria).items() if v is not None}
        index.record_search(request.user, request.reason, query, len(hits))
    finally:
        index.close()
    SEARCHES.labels(agency=ori).inc()
    return hits


def parse_near(text: str | None) -> tuple[float, float, float] | None:
    """'38.94,-119.98,5' -> (38.94, -119.98, 5.0); ValueError naming the expected form."""
    if not text:
        return None
    try:
        lat, lon, km = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"near {text!r}: expected LAT,LON,KM such as 38.94,-119.98,5") from None
    return lat, lon, km
