"""An agency's transparency report: what it shares, with whom, on what terms, and how partners
used it, for the public and the city council.

Everything comes from the agreements in force and the two audit topics, read whole:

- ``audit.dissemination`` (owner = the agency): records shared, pointers, denials and
  withdrawals per partner and kind; records sent in hit alerts (the matcher's records, told
  apart by their last reason); and what partners still hold (shared, not withdrawn since).
- ``audit.search``: searches by *other* agencies whose results held the agency's records
  (``result_owners``), counted by reason category.

No personal data leaves: no record id, plate, name, query, user or reason text; only counts,
agreement terms (field *paths*, never values), agency names and dates. A search's reason is
classified into one of ``REASON_CATEGORIES`` and then forgotten.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from consumers.export import Window, topic_records
from mutualaid.agencies import Registry
from mutualaid.audit import is_hit_alert
from mutualaid.labels import PROTECTED
from mutualaid.policy import Agreement, FieldAction, Policy, load_policy_from
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    SEARCH_AUDIT,
    DeserializationError,
    SerializationContext,
    codecs_for,
)
from mutualaid.settings import Settings
from mutualaid.topics import AUDIT_DISSEMINATION, AUDIT_SEARCH, Kind, check_ori

FORMAT = "mutualaid-transparency/1"

# A search's stated reason, in one of a few categories a reader can weigh; the first that
# matches wins, so the most specific purposes come first. A case number with "stolen car"
# is a stolen-vehicle search; a bare case or report number is "case or incident number".
OTHER = "other"
REASON_CATEGORIES: tuple[tuple[str, re.Pattern[str] | None], ...] = (
    (
        "missing person / AMBER",
        re.compile(
            r"\b(amber|missing|runaway|abduct\w*|kidnap\w*|endangered|silver alert|"
            r"welfare check)\b"
        ),
    ),
    ("warrant", re.compile(r"\bwarrants?\b")),
    (
        "stolen vehicle",
        re.compile(
            r"\b(10851|carjack\w*|(auto|car|vehicle|motor vehicle) theft|gta)\b|"
            r"\bstolen\b.*\b(vehicle|car|truck|auto|van|plates?|motorcycle|suv)\b"
        ),
    ),
    (
        "case or incident number",
        re.compile(
            r"\b(case|incident|inc|report|rpt|cr|cad|file|event)\b\W*(no\b|number|#)?\W*\w*\d|"
            r"\b[a-z]{0,4}\d{2,}[-/]\d{2,}\b"
        ),
    ),
    (OTHER, None),
)
CATEGORY_NAMES = tuple(name for name, _ in REASON_CATEGORIES)


def reason_category(reason: str) -> str:
    """The category of a search's stated reason (see ``REASON_CATEGORIES``)."""
    text = " ".join(reason.lower().split())
    for name, pattern in REASON_CATEGORIES:
        if pattern is None or pattern.search(text):
            return name
    return OTHER


# --- agreements in plain words --------------------------------------------------------------

_KIND_WORDS: dict[str, str] = {
    Kind.CAD_INCIDENT: "dispatch (CAD) incidents",
    Kind.ALPR_READ: "license plate reader (ALPR) reads",
    Kind.RMS_RECORD: "records management (RMS) reports",
    Kind.HOTLIST_ENTRY: "hotlist entries",
}
_ACTION_GROUPS = {
    FieldAction.DROP: "withheld",
    FieldAction.MASK: "masked",
    FieldAction.HASH: "hashed",
    FieldAction.ENCRYPT: "encrypted",
    FieldAction.ENCRYPT_INDEXED: "encrypted",
}


def kind_words(kind: str) -> str:
    """A kind as a reader knows it; an unknown one as it is."""
    return _KIND_WORDS.get(kind, kind)


def _allowed_labels(agreement: Agreement) -> list[str]:
    """Protected labels this agreement lets through by name. ``allow_labels`` is being added
    to agreements by the policy work; until it is there, none is allowed (the default)."""
    named = getattr(agreement, "allow_labels", None) or getattr(
        agreement.conditions, "allow_labels", None
    )
    return sorted(set(named or ()) & PROTECTED)


def _conditions(agreement: Agreement) -> list[str]:
    c = agreement.conditions
    out = []
    if c.exclude_labels:
        then = "only a pointer is sent" if c.on_excluded_label == "pointer" else "not shared"
        out.append(f"records labelled {', '.join(c.exclude_labels)}: {then}")
    if c.partner_types:
        out.append(f"only to partners of type {', '.join(c.partner_types)}")
    if c.same_state_only:
        out.append("never to a partner in another state")
    if c.within_partner_jurisdiction:
        out.append("only records located inside the partner's jurisdiction")
    if c.within_km is not None:
        out.append(f"only records within {c.within_km:g} km of the partner's centre")
    if c.max_age_days is not None:
        out.append(f"only records from the last {c.max_age_days} days")
    if c.offenses_include:
        out.append(f"only reports with one of the offences {', '.join(c.offenses_include)}")
    if c.offenses_exclude:
        out.append(f"never reports with any of the offences {', '.join(c.offenses_exclude)}")
    return out


def _agency(registry: Registry, ori: str) -> dict[str, str]:
    try:
        return {"ori": ori, "name": registry.get(ori).name}
    except KeyError:
        return {"ori": ori, "name": ori}


def _listed(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return " and ".join([", ".join(items[:-1]), items[-1]]) if len(items) > 1 else "".join(items)


def agreement_terms(agreement: Agreement, policy: Policy) -> dict[str, Any]:
    """One agreement as the report tells it: whom, what, how much, on what conditions."""
    registry = policy.registry
    fields: dict[str, list[str]] = {g: [] for g in ("withheld", "masked", "hashed", "encrypted")}
    for path, action in sorted(agreement.fields.items()):
        if action in _ACTION_GROUPS:
            fields[_ACTION_GROUPS[action]].append(path)
    allowed = _allowed_labels(agreement)
    partners = [_agency(registry, p) for p in policy.partners_of(agreement)]
    tier = (
        "full records"
        if agreement.tier == "full"
        else "pointers only (that a record exists and whom to call)"
    )
    kinds = [kind_words(k) for k in agreement.kinds]
    retention = (
        f"partners delete a record {agreement.retention_days} days after it occurred"
        if agreement.retention_days
        else "no retention limit set by this agreement"
    )
    summary = (
        f"{_agency(registry, agreement.owner)['name']} shares {_listed(kinds)} with "
        f"{_listed([p['name'] for p in partners]) or 'no agency at present'} as {tier}; "
        f"{retention}."
    )
    return {
        "id": agreement.id,
        "version": agreement.version,
        "owner": _agency(registry, agreement.owner),
        "description": agreement.description,
        "summary": summary,
        "partners": partners,
        "partner_classes": [c.describe() for c in agreement.partner_classes],
        "kinds": [str(k) for k in agreement.kinds],
        "tier": str(agreement.tier),
        "fields": fields,
        "conditions": _conditions(agreement),
        "protected_labels_allowed": allowed,
        "protected_labels_never_shared": sorted(PROTECTED - set(allowed)),
        "retention_days": agreement.retention_days,
    }


def applicable_rules(policy: Policy, ori: str) -> dict[str, Any]:
    """The region's rules (law and policy no agreement overrides) that govern this agency's
    records: those for every owner, or for owners in its state."""
    state = policy.registry.get(ori).state
    out = [
        {
            "id": rule.id,
            "citation": rule.citation,
            "description": rule.description,
            "kinds": [str(k) for k in rule.governs.kinds],
            "labels": list(rule.governs.labels),
        }
        for rule in policy.rules
        if not rule.governs.owner_states or state in rule.governs.owner_states
    ]
    return {"defined": True, "rules": out}


# --- figures from the audit -----------------------------------------------------------------

DECISIONS = ("SHARED", "POINTER", "DENIED", "WITHDRAWN")


@dataclass
class Figures:
    """What the audit says about one agency's records; fed record by record, in topic order."""

    ori: str
    window: Window
    decisions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    searches: Counter[tuple[str, str]] = field(default_factory=Counter)
    hits: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (partner, kind, record id) -> when it was first shared, while the partner holds it.
    # Record ids stay in memory only; the report gives counts and dates.
    held: dict[tuple[str, str, str], datetime] = field(default_factory=dict)
    unreadable: int = 0

    def dissemination(self, record: dict) -> None:
        if record["source_ori"] != self.ori:
            return
        at, partner, kind = record["decided_at"], record["partner_ori"], record["kind"]
        if self.window.until is not None and at >= self.window.until:
            return
        if is_hit_alert(record["reasons"]):
            if self.window.holds(at):
                self.hits[(partner, kind)] += 1
            return
        key = (partner, kind, record["record_id"])
        if record["decision"] in ("SHARED", "POINTER"):
            self.held.setdefault(key, at)
        elif record["decision"] == "WITHDRAWN":
            self.held.pop(key, None)
        if self.window.holds(at):
            self.decisions[(partner, kind, record["decision"])] += 1

    def search(self, record: dict) -> None:
        if record["agency_ori"] == self.ori or self.ori not in record["result_owners"]:
            return
        if self.window.holds(record["searched_at"]):
            self.searches[(record["agency_ori"], reason_category(record["reason"]))] += 1


def _read(settings: Settings, topic: str, schema: str, figures: Figures) -> Iterator[dict]:
    decode = codecs_for(settings).deserializer(schema)
    for msg in topic_records(settings, topic):
        if msg.value() is None:
            continue
        try:
            record = decode(msg.value(), SerializationContext.of(msg))
        except DeserializationError:
            figures.unreadable += 1  # counted in the report's notes, never guessed at
            continue
        if record is not None:
            yield record


def gather(settings: Settings, ori: str, window: Window) -> Figures:
    """The figures for ``ori`` from the audit topics, read from their beginning."""
    figures = Figures(check_ori(ori), window)
    for record in _read(settings, AUDIT_DISSEMINATION, AUDIT_DISSEMINATION_SCHEMA, figures):
        figures.dissemination(record)
    for record in _read(settings, AUDIT_SEARCH, SEARCH_AUDIT, figures):
        figures.search(record)
    return figures


def _iso(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat(timespec="seconds") if at is not None else None


def report(
    policy: Policy, figures: Figures, generated_at: datetime | None = None
) -> dict[str, Any]:
    """The report as JSON-ready data; the HTML page is drawn from exactly this."""
    registry, ori = policy.registry, figures.ori
    name = _agency(registry, ori)

    sharing = []
    for partner, kind in sorted({(p, k) for p, k, _ in figures.decisions}):
        counts = {d.lower(): figures.decisions[(partner, kind, d)] for d in DECISIONS}
        sharing.append({"partner": _agency(registry, partner), "kind": kind, **counts})
    totals = {d.lower(): sum(n for (_, _, x), n in figures.decisions.items() if x == d)
              for d in DECISIONS}  # fmt: skip

    searches = []
    for partner in sorted({p for p, _ in figures.searches}):
        by = {c: figures.searches[(partner, c)] for c in CATEGORY_NAMES}
        searches.append(
            {"partner": _agency(registry, partner), "by_category": by, "total": sum(by.values())}
        )
    by_category = {c: sum(n for (_, x), n in figures.searches.items() if x == c)
                   for c in CATEGORY_NAMES}  # fmt: skip

    hits = [
        {"center": _agency(registry, center), "kind": kind, "records": n}
        for (center, kind), n in sorted(figures.hits.items())
    ]
    held: dict[tuple[str, str], list[datetime]] = {}
    for (partner, kind, _), since in figures.held.items():
        held.setdefault((partner, kind), []).append(since)
    still_held = [
        {
            "partner": _agency(registry, partner),
            "kind": kind,
            "records": len(times),
            "oldest_shared_at": _iso(min(times)),
        }
        for (partner, kind), times in sorted(held.items())
    ]
    oldest = min(figures.held.values(), default=None)

    shares = [a for a in policy.agreements if a.owner == ori]
    receives = [a for a in policy.agreements if ori in policy.partners_of(a)]
    notes = [
        "Counts come from the region's audit topics; a search is counted when its results "
        "held at least one of this agency's records.",
        "Search reasons are put in categories (" + ", ".join(CATEGORY_NAMES) + "); the "
        "reason, the query and who searched are never published.",
        "A record still held is one shared (or sent as a pointer) and not withdrawn since; "
        "a partner may already have deleted it under the agreement's retention.",
    ]
    if figures.unreadable:
        notes.append(f"{figures.unreadable} audit record(s) could not be read and are not counted.")
    return {
        "format": FORMAT,
        "agency": name,
        "generated_at": _iso(generated_at or datetime.now(UTC)),
        "period": {"since": _iso(figures.window.since), "until": _iso(figures.window.until)},
        "agreements": {
            "shares": [agreement_terms(a, policy) for a in sorted(shares, key=lambda a: a.id)],
            "receives": [
                {
                    "id": a.id,
                    "version": a.version,
                    "owner": _agency(registry, a.owner),
                    "kinds": [str(k) for k in a.kinds],
                    "tier": str(a.tier),
                }
                for a in sorted(receives, key=lambda a: a.id)
            ],
        },
        "rules": applicable_rules(policy, ori),
        "sharing": {"by_partner_and_kind": sharing, "totals": totals},
        "searches_by_partners": {
            "categories": list(CATEGORY_NAMES),
            "by_partner": searches,
            "by_category": by_category,
            "total": sum(by_category.values()),
        },
        "hotlist_hits": {
            "reads": sum(h["records"] for h in hits if h["kind"] == Kind.ALPR_READ),
            "entries": sum(h["records"] for h in hits if h["kind"] == Kind.HOTLIST_ENTRY),
            "by_center": hits,
        },
        "still_held": {
            "records": len(figures.held),
            "oldest_shared_at": _iso(oldest),
            "by_partner_and_kind": still_held,
        },
        "notes": notes,
    }


def build(
    settings: Settings, policy: Policy, ori: str, window: Window | None = None
) -> dict[str, Any]:
    """The agency's report, read now from the audit topics."""
    return report(policy, gather(settings, ori, window or Window()))


class Reports:
    """Reports kept for ``seconds`` and built once at a time, for the API: each build reads
    the audit topics whole, so a page that many people open must not read them per request."""

    def __init__(self, settings: Settings, registry: Registry, seconds: float = 60.0) -> None:
        self.settings, self.registry, self.seconds = settings, registry, seconds
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[float, dict[str, Any]]] = {}

    def get(self, ori: str) -> dict[str, Any]:
        """The agency's report (KeyError if the registry has no such agency; ConfigError if
        the agreements do not load)."""
        ori = self.registry.get(ori).ori
        with self._lock:
            kept = self._kept.get(ori)
            if kept is not None and time.monotonic() - kept[0] < self.seconds:
                return kept[1]
            # Agreements read per build, so a changed agreement shows within ``seconds``.
            policy = load_policy_from(self.settings, self.registry)
            built = build(self.settings, policy, ori)
            self._kept[ori] = (time.monotonic(), built)
            return built
