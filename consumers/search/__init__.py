"""Searching an agency's own index: always by a named user, for a stated reason, and logged.

The log is written to the agency's own store in the same call, before any result is returned;
the agency's projector then publishes it to ``audit.search`` (an outbox), so searching keeps
working while the broker is unreachable and no search goes unaudited.

Where the index keeps partners' sealed fields encrypted, a search may ask to ``reveal``
them: they are opened with the agency's private keys for the results alone, and the log
says the search revealed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, replace

from consumers.index import Index, open_index
from consumers.index.query import BadCriteria, Criteria, Hit, prepare
from consumers.index.records import open_kept
from mutualaid.crypto import DecryptionError, PrivateKeyring, load_keyring
from mutualaid.disclosure import restore
from mutualaid.errors import Refused
from mutualaid.metrics import SEARCHES
from mutualaid.settings import Settings
from mutualaid.topics import check_ori

log = logging.getLogger("mutualaid.search")


class SearchRefused(Refused):
    """A search without the user, reason or criteria that policy requires; nothing was searched."""


@dataclass(frozen=True)
class SearchRequest:
    agency_ori: str
    user: str
    reason: str
    criteria: Criteria
    reveal: bool = False  # open fields the index keeps encrypted
    download: str | None = None  # "csv": the results leave as a file (the log says so)

    def __post_init__(self) -> None:
        if not self.user.strip():
            raise SearchRefused("every search needs a user (--user) so it can be audited")
        if not self.reason.strip():
            raise SearchRefused(
                "every search needs a reason, such as a case or incident number (--reason)"
            )
        if self.criteria.is_empty():
            raise SearchRefused(
                "say what to look for: a plate, name, date of birth, incident number, "
                "identifier, text or a place (--near); time, agency and kind only narrow a search"
            )
        try:
            prepare(self.criteria)
        except BadCriteria as exc:
            raise SearchRefused(str(exc)) from None


def run_search(settings: Settings, request: SearchRequest) -> list[Hit]:
    """The records the agency holds that match, after logging who searched and why: a single
    search, its index opened and closed for it (the command line)."""
    searcher = Searcher(settings, request.agency_ori)
    try:
        return searcher.search(request)
    finally:
        searcher.close()


@dataclass(frozen=True)
class _Opened:
    at: float  # time.monotonic() when opened
    index: Index


class Searcher:
    """Audited searches for one agency from a long-running process (the search API), with
    its index kept open between searches: on PostgreSQL, opening one (a connection and its
    setup) takes ten times as long as the search itself (`./run bench`).

    An open index serves one search at a time; concurrent searches each take their own. One
    is kept for at most ``reuse_seconds`` after it was opened, so a new hash key or anything
    else read at opening is picked up within that time. A search that fails on a kept index
    is tried once more on a new one: the server may have dropped the idle connection (a
    restart, an idle timeout); a failure that is not the connection's repeats and is raised.
    """

    def __init__(self, settings: Settings, agency_ori: str, reuse_seconds: float = 60) -> None:
        self.settings = settings
        self.agency_ori = check_ori(agency_ori)
        self.reuse_seconds = reuse_seconds
        self._kept: list[_Opened] = []  # idle
        self._lock = threading.Lock()

    def search(self, request: SearchRequest) -> list[Hit]:
        if check_ori(request.agency_ori) != self.agency_ori:
            raise ValueError(f"this searcher searches {self.agency_ori}'s index only")
        kept = self._take()
        if kept is None:
            hits = self._logged_search(self._open(), request)
        else:
            try:
                hits = self._logged_search(kept, request)
            except Exception as exc:
                log.warning(
                    "%s: a search failed on an index kept open (%s: %s); trying a new one",
                    self.agency_ori,
                    type(exc).__name__,
                    exc,
                )
                hits = self._logged_search(self._open(), request)
        SEARCHES.labels(agency=self.agency_ori).inc()
        if request.reveal:
            keyring = load_keyring(self.agency_ori, self.settings.private_keys_dir)
            hits = [_revealed(hit, keyring) for hit in hits]
        return hits

    def close(self) -> None:
        with self._lock:
            kept, self._kept = self._kept, []
        for opened in kept:
            opened.index.close()

    def _logged_search(self, opened: _Opened, request: SearchRequest) -> list[Hit]:
        """Search and log on ``opened``; kept for the next search if it did not fail."""
        index = opened.index
        try:
            hits = index.search(request.criteria)
            query = {k: v for k, v in asdict(request.criteria).items() if v is not None}
            if request.reveal:
                query["reveal"] = True
            if request.download:
                query["download"] = request.download
            owners = [hit.source_ori for hit in hits]
            index.record_search(request.user, request.reason, query, len(hits), owners)
        except BaseException:
            index.close()
            raise
        self._keep(opened)
        return hits

    def _open(self) -> _Opened:
        return _Opened(time.monotonic(), open_index(self.settings, self.agency_ori))

    def _take(self) -> _Opened | None:
        with self._lock:
            while self._kept:
                opened = self._kept.pop()
                if self._fresh(opened):
                    return opened
                opened.index.close()
        return None

    def _keep(self, opened: _Opened) -> None:
        if not self._fresh(opened):
            opened.index.close()
            return
        with self._lock:
            self._kept.append(opened)

    def _fresh(self, opened: _Opened) -> bool:
        return time.monotonic() - opened.at < self.reuse_seconds


def _revealed(hit: Hit, keyring: PrivateKeyring) -> Hit:
    """The hit with its encrypted fields opened; as it was if they do not open (the key was
    removed, or the row altered), which the log notes."""
    if hit.sealed is None or hit.body is None:
        return hit
    try:
        values = open_kept(hit.sealed, keyring)
    except DecryptionError:
        log.warning(
            "%s/%s/%s: its encrypted fields do not open with %s's keys %s",
            hit.source_ori,
            hit.kind,
            hit.record_id,
            keyring.agency_ori,
            keyring.key_ids,
        )
        return hit
    return replace(hit, body=restore(hit.body, values), encrypted_fields=(), sealed=None)


def parse_near(text: str | None) -> tuple[float, float, float] | None:
    """'38.94,-119.98,5' -> (38.94, -119.98, 5.0); ValueError naming the expected form."""
    if not text:
        return None
    try:
        lat, lon, km = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"near {text!r}: expected LAT,LON,KM such as 38.94,-119.98,5") from None
    return lat, lon, km
