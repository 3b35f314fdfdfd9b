"""Sharing agreements, the rules above them, and the decisions they make. Default deny.

An agreement names an owner, the partners (by ORI or by class, e.g. every county agency in CA),
the kinds of record, conditions every shared record must meet, what happens to each field, and
a tier (``full``, or ``pointer``: only that the record exists and whom to call).

The guarantee: **an agreement grants; a rule or a protected label forbids; when several
agreements grant the same record to the same partner, the partner gets the most protective
combination of them.** ``Policy.decide`` returns one Decision per partner that any agreement for
the event's owner and kind names:

- Every agreement naming the partner is evaluated; those whose conditions hold *grant*. One
  whose conditions fail grants nothing, and revokes nothing another grants.
- A rule (``mutualaid.rules``) governing the record that the partner does not meet forbids it,
  whatever the agreements say.
- A protected label (``mutualaid.labels.PROTECTED``: juvenile, sealed, expunged, informant, or the
  ``protected_labels`` setting) forbids it unless *every* granting agreement allows the label by
  name (``conditions.allow_labels``, or excludes it with ``on_excluded_label: pointer``, which
  grants a pointer). One agreement written for juvenile records cannot open them under another
  that never considered them. ``sealed`` and ``expunged`` can never be allowed: they withdraw.
- Of the granting agreements, the lowest tier wins (pointer over full), the shortest retention,
  and for each field the most protective action of any of them, in this order:

  ``drop > hash > mask > encrypt > encrypt_indexed > keep``

  drop reveals nothing; hash reveals no value, only that two records match, to those holding the
  region's hash key; mask shows four characters, but to anyone who holds the copy; encrypt shows
  the whole value, but only to the partner's key; encrypt_indexed is encrypt plus a keyed hash
  that anyone with the hash key can match; keep shows it to anyone reading the topic or index.
  A dropped field takes every field inside it along (nothing under ``persons`` leaves if
  ``persons`` is dropped, however another agreement treats ``persons[].ssn``).

Nothing depends on file names, file order or agreement order: agreements, rules and partners
are taken in id order wherever order reaches a decision, its steps or the audit. Each Decision
names every contributing agreement, the rules applied, the combined field actions with the
agreements each came from, and every step, for ``mutualaid agreements explain`` and the audit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from mutualaid import fieldpaths, labels
from mutualaid.agencies import Agency, AgencyType, Registry, check_state, start_of
from mutualaid.configfile import ConfigError, Problem, load_model, yaml_files
from mutualaid.pointers import FoundBy
from mutualaid.rules import Rule, RuleFile, checked_labels
from mutualaid.serde import BODY_SCHEMA, SchemaStore
from mutualaid.topics import Kind, check_ori

Outcome = Literal["SHARED", "POINTER", "DENIED"]


class FieldAction(StrEnum):
    KEEP = "keep"
    DROP = "drop"
    MASK = "mask"
    HASH = "hash"
    ENCRYPT = "encrypt"
    # Encrypt, and leave a keyed hash (a blind index) in the field, so a partner can match the
    # value exactly (a case's SSN, a DL number) without decrypting anything.
    ENCRYPT_INDEXED = "encrypt_indexed"


# Most protective first; why, in the module docstring.
PROTECTION_ORDER = (
    FieldAction.DROP,
    FieldAction.HASH,
    FieldAction.MASK,
    FieldAction.ENCRYPT,
    FieldAction.ENCRYPT_INDEXED,
    FieldAction.KEEP,
)
_PROTECTION = {action: len(PROTECTION_ORDER) - i for i, action in enumerate(PROTECTION_ORDER)}


def most_protective(actions: Iterable[FieldAction]) -> FieldAction:
    return max(actions, key=_PROTECTION.__getitem__)


class Tier(StrEnum):
    FULL = "full"
    POINTER = "pointer"


def _known_ori(value: str, info: ValidationInfo) -> str:
    ori = check_ori(value)
    registry: Registry | None = (info.context or {}).get("registry")
    if registry is not None and ori not in registry.oris:
        raise ValueError(f"{ori} is not in the agency registry; add it there first")
    return ori


class PartnerClass(BaseModel):
    """Every agency in the registry that matches all the given attributes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: AgencyType | None = Field(None, description="local, county, state or federal")
    state: str | None = Field(None, description="two-letter state code")
    dispatch_center: bool | None = Field(None, description="true for dispatch centers only")

    @field_validator("state")
    @classmethod
    def _state(cls, value: str | None) -> str | None:
        return None if value is None else check_state(value)

    def matches(self, agency: Agency) -> bool:
        return (
            (self.type is None or agency.type == self.type)
            and (self.state is None or agency.state == self.state.upper())
            and (self.dispatch_center is None or agency.dispatch_center == self.dispatch_center)
        )

    def describe(self) -> str:
        parts = [self.type or "any type", f"in {self.state.upper()}" if self.state else ""]
        if self.dispatch_center:
            parts.append("dispatch center")
        return " ".join(p for p in parts if p)


class Conditions(BaseModel):
    """What a record must meet to reach a partner. Every condition set must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exclude_labels: list[str] = Field(
        [], description="labels that keep a record back, e.g. juvenile, sealed, informant"
    )
    on_excluded_label: Literal["deny", "pointer"] = Field(
        "deny", description="deny, or pointer: say only that it exists and whom to call"
    )
    allow_labels: list[str] = Field(
        [],
        description="protected labels this agreement shares records with, e.g. [juvenile]; "
        "without it a record with a protected label is denied",
    )
    partner_types: list[AgencyType] | None = Field(
        None, description="only partners of these types, e.g. [local, county, state]"
    )
    same_state_only: bool = Field(False, description="true: never to a partner in another state")
    within_partner_jurisdiction: bool = Field(
        False, description="true: only records located inside the partner's jurisdiction"
    )
    within_km: float | None = Field(
        None, gt=0, description="only records within this many km of the partner's centre"
    )
    max_age_days: int | None = Field(
        None, gt=0, description="only records that occurred in the last N days"
    )
    offenses_include: list[str] = Field(
        [], description="RMS only: share a report only if it has one of these NIBRS codes"
    )
    offenses_exclude: list[str] = Field(
        [], description="RMS only: never share a report with any of these NIBRS codes"
    )

    @field_validator("exclude_labels", "allow_labels")
    @classmethod
    def _labels(cls, values: list[str], info: ValidationInfo) -> list[str]:
        return checked_labels(values, info)

    @field_validator("allow_labels")
    @classmethod
    def _not_withdrawing(cls, values: list[str]) -> list[str]:
        barred = sorted(set(values) & labels.WITHDRAWING)
        if barred:
            raise ValueError(
                f"{', '.join(barred)} records are withdrawn from every partner; no agreement "
                "can allow them (remove them from allow_labels)"
            )
        return values

    @model_validator(mode="after")
    def _not_both(self) -> Conditions:
        both = sorted(set(self.exclude_labels) & set(self.allow_labels))
        if both:
            raise ValueError(f"{', '.join(both)} is both excluded and allowed; keep one")
        return self


class Agreement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        min_length=1,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="a short unique name in lower case, e.g. riverbend-mesa-alpr",
    )
    version: int = Field(ge=1, description="raise it whenever the agreement changes")
    owner: str = Field(description="ORI of the agency whose records this shares")
    partners: list[str] = Field([], description="ORIs that may receive them")
    partner_classes: list[PartnerClass] = Field(
        [], description="classes of partner, e.g. [{type: county, state: CA}]"
    )
    kinds: list[Kind] = Field(
        min_length=1, description="any of cad.incident, alpr.read, rms.record"
    )
    tier: Tier = Field(Tier.FULL, description="full, or pointer (existence and contact only)")
    conditions: Conditions = Field(Conditions(), description="conditions every record must meet")
    fields: dict[str, FieldAction] = Field(
        {},
        description="field path -> keep, drop, mask, hash, encrypt or encrypt_indexed, "
        "e.g. persons[].ssn: encrypt",
    )
    retention_days: int | None = Field(
        None, gt=0, description="partners purge a record this many days after it occurred"
    )
    pointer_found_by: list[FoundBy] = Field(
        [],
        description="what a pointer (tier pointer, or on_excluded_label: pointer) may be found "
        "by in a partner's search: any of plate, name_dob, identifier; none by default",
    )
    description: str = Field("", description="what it is for, in words a supervisor would use")

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str, info: ValidationInfo) -> str:
        return _known_ori(value, info)

    @field_validator("partners")
    @classmethod
    def _partners(cls, values: list[str], info: ValidationInfo) -> list[str]:
        return [_known_ori(v, info) for v in values]

    @field_validator("fields")
    @classmethod
    def _paths(cls, fields: dict[str, FieldAction], info: ValidationInfo) -> dict[str, FieldAction]:
        schemas: dict[Kind, dict[str, Any]] | None = (info.context or {}).get("body_schemas")
        kinds: list[Kind] = info.data.get("kinds") or []
        if not schemas or not kinds:
            return fields
        problems = []
        for path, action in fields.items():
            types, errors = [], []
            for kind in kinds:
                try:
                    types.append(fieldpaths.schema_type(schemas[kind], path))
                except ValueError as exc:
                    errors.append(f"{kind}: {exc}" if len(kinds) > 1 else str(exc))
            if not types:
                problems.append("; ".join(errors))
            elif action in (
                FieldAction.MASK,
                FieldAction.HASH,
                FieldAction.ENCRYPT_INDEXED,
            ) and not all(fieldpaths.is_string(t) for t in types):
                problems.append(
                    f"{path!r}: {action} works on text fields only; use drop or encrypt"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return fields

    @model_validator(mode="after")
    def _someone(self) -> Agreement:
        if not self.partners and not self.partner_classes:
            raise ValueError("name partners (ORIs) or partner_classes, or both")
        return self

    def actions_for(self, kind: Kind, body_schema: dict[str, Any]) -> dict[str, FieldAction]:
        """The field actions that apply to this kind (paths the kind has)."""
        out: dict[str, FieldAction] = {}
        for path, action in self.fields.items():
            try:
                fieldpaths.schema_type(body_schema, path)
            except ValueError:
                continue
            if action != FieldAction.KEEP:
                out[path] = action
        return out


class AgreementFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agreements: list[Agreement] = Field(description="a list of agreements")


@dataclass(frozen=True)
class Decision:
    """What one partner receives of one event, and why.

    ``agreements``: for a grant, every agreement that granted it (in id order); for a denial,
    every agreement that named the partner. ``actions`` are the combined field actions for the
    kind (most protective first applied deepest path first), ``sources`` the agreements each
    came from, ``rules`` the rules that governed the record.
    """

    partner_ori: str
    outcome: Outcome
    agreements: tuple[Agreement, ...] = ()
    steps: tuple[str, ...] = field(default=())
    actions: Mapping[str, FieldAction] = field(default_factory=dict)
    sources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    retention_days: int | None = None
    rules: tuple[Rule, ...] = ()

    @classmethod
    def under(
        cls,
        partner_ori: str,
        agreement: Agreement,
        actions: Mapping[str, FieldAction],
        outcome: Outcome = "SHARED",
    ) -> Decision:
        """The decision one agreement alone makes (for tests and tools that hold one)."""
        return cls(
            partner_ori,
            outcome,
            (agreement,),
            actions=actions,
            retention_days=agreement.retention_days,
        )

    @property
    def shares(self) -> bool:
        return self.outcome != "DENIED"

    @property
    def agreement(self) -> Agreement | None:
        """The first contributing agreement (by id): what single-agreement fields record."""
        return self.agreements[0] if self.agreements else None

    # Worked out once per decision: the policy hands the same decision to every event that
    # settles the same way, and the router reads these for each of them.
    @cached_property
    def agreement_ref(self) -> tuple[str, int] | None:
        return (self.agreement.id, self.agreement.version) if self.agreement else None

    @cached_property
    def agreement_refs(self) -> list[tuple[str, int]]:
        return [(a.id, a.version) for a in self.agreements]

    @cached_property
    def rule_refs(self) -> list[str]:
        return [r.ref for r in self.rules]

    @cached_property
    def retention(self) -> timedelta | None:
        """How long the partner may keep its copy, from the record's time (None: no limit)."""
        return None if self.retention_days is None else timedelta(days=self.retention_days)

    @cached_property
    def agreement_names(self) -> str:
        """The agreements behind it, as errors name them."""
        return ", ".join(a for a, _ in self.agreement_refs)


class _Verdict(NamedTuple):
    """One agreement's answer for one partner, before the combination (a tuple: the hot path
    makes one per agreement and partner)."""

    agreement: Agreement
    outcome: Outcome
    steps: tuple[str, ...]
    last: str  # the concluding step: "shared", "denied: <why>", "pointer: <why>"

    def allows(self, label: str) -> bool:
        """Whether this grant was made with the protected label in mind."""
        c = self.agreement.conditions
        return label in c.allow_labels or (label in c.exclude_labels and self.outcome == "POINTER")


# Decisions remembered by Policy at most (see _decide_for); a few hundred are common.
_DECISIONS_KEPT = 4096


def _ref(agreement: Agreement) -> str:
    return f"{agreement.id} v{agreement.version}"


def _inside(path: str, parent: str) -> bool:
    return path.startswith((parent + ".", parent + "[]"))


def _location(body: dict[str, Any] | None) -> tuple[float, float] | None:
    if not body:
        return None
    where = body.get("location")
    if not isinstance(where, dict):
        where = body
    lat, lon = where.get("latitude"), where.get("longitude")
    return (lat, lon) if lat is not None and lon is not None else None


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine), good to a few metres at regional scale."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


class Policy:
    """Every agreement and rule in force, indexed by (owner, kind) for the router's hot path."""

    def __init__(
        self,
        agreements: list[Agreement],
        registry: Registry,
        rules: Iterable[Rule] = (),
        *,
        protected: Iterable[str] = labels.PROTECTED,
        store: SchemaStore | None = None,
    ) -> None:
        self.agreements = sorted(agreements, key=lambda a: a.id)
        self.rules = sorted(rules, key=lambda r: r.id)
        self.registry = registry
        self.protected = frozenset(protected) | labels.WITHDRAWING
        self._agencies = {a.ori: a for a in registry.agencies}
        store = store or SchemaStore()
        # Each agreement's field actions per kind, keep included, for the paths the kind has.
        self._fields: dict[tuple[str, str], dict[str, FieldAction]] = {}
        self._covering: dict[tuple[str, str], list[tuple[Agreement, frozenset[str]]]] = {}
        for agreement in self.agreements:
            partners = frozenset(self.partners_of(agreement))
            for kind in agreement.kinds:
                key = (agreement.owner, str(kind))
                self._covering.setdefault(key, []).append((agreement, partners))
                schema = store.get(BODY_SCHEMA[kind])
                self._fields[(agreement.id, str(kind))] = {
                    path: action
                    for path, action in sorted(agreement.fields.items())
                    if _has_path(schema, path)
                }
        self._rules: dict[str, list[Rule]] = {}
        for rule in self.rules:
            for kind in rule.governs.kinds:
                self._rules.setdefault(str(kind), []).append(rule)
        self._combined: dict[
            tuple[Any, ...],
            tuple[dict[str, FieldAction], dict[str, tuple[str, ...]], tuple[str, ...]],
        ] = {}
        # The hot path's caches (see decide): what an event's owner, kind, labels and partner
        # alone settle is worked out once, not per event. Keys hold every input of what they
        # cache, so a cached answer is the one computed afresh.
        self._named: dict[tuple[str, str], list[tuple[str, list[Agreement]]]] = {}
        for key, entries in self._covering.items():
            covered = sorted({p for _, named in entries for p in named})
            self._named[key] = [(p, [a for a, named in entries if p in named]) for p in covered]
        self._verdicts: dict[tuple[str, str, str, frozenset[str]], _Verdict] = {}
        self._governing: dict[tuple[str, str, frozenset[str]], tuple[Rule, ...]] = {}
        self._decisions: dict[tuple[Any, ...], Decision] = {}

    def partners_of(self, agreement: Agreement) -> list[str]:
        named = list(agreement.partners)
        for agency in self.registry.agencies:
            if (
                any(c.matches(agency) for c in agreement.partner_classes)
                and agency.ori not in named
            ):
                named.append(agency.ori)
        return sorted(p for p in named if p != agreement.owner)

    def actions(self, agreement: Agreement, kind: str) -> dict[str, FieldAction]:
        """One agreement's field actions that change something, for this kind."""
        fields = self._fields.get((agreement.id, str(kind)), {})
        return {p: a for p, a in fields.items() if a != FieldAction.KEEP}

    def covering(self, owner_ori: str, kind: str) -> list[tuple[Agreement, frozenset[str]]]:
        """The agreements of this owner for this kind, in id order, each with its partners."""
        return self._covering.get((owner_ori, str(kind)), [])

    def decide(self, event: dict[str, Any], now: datetime | None = None) -> list[Decision]:
        """One decision per partner named by an agreement covering this owner and kind, in ORI
        order.

        Agencies no agreement names are denied by default and get no decision record: there
        was nothing to decide.
        """
        envelope = event["envelope"]
        covering = self.covering(envelope["source_ori"], envelope["kind"])
        if not covering:
            return []
        now = now or datetime.now(UTC)
        named = self._named[(envelope["source_ori"], str(envelope["kind"]))]
        return [self._decide_for(partner, agreements, event, now) for partner, agreements in named]

    def partners(self) -> set[str]:
        return {p for entries in self._covering.values() for _, ps in entries for p in ps}

    def next_change(self, now: datetime) -> datetime | None:
        """The earliest moment after ``now`` at which a decision can change by time alone: an
        assurance some rule needs taking effect or expiring. None if none ever will.

        The router rechecks what partners hold then (an expired assurance withdraws what it
        covered). A record's own age (``max_age_days``) is not counted here: it only ever
        narrows, and is judged again at the record's next version and by retention.
        """
        needed = {r.id for r in self.rules if r.partners_must.have_assurance}
        moments = [
            start_of(day)
            for agency in self.registry.agencies
            for assurance in agency.assurances
            if assurance.rule in needed
            for day in (assurance.signed, assurance.expires)
        ]
        future = [m for m in moments if m > now]
        return min(future) if future else None

    def _decide_for(
        self, partner_ori: str, agreements: list[Agreement], event: dict[str, Any], now: datetime
    ) -> Decision:
        envelope = event["envelope"]
        kind, record_labels = envelope["kind"], frozenset(envelope["labels"])
        owner = self._agencies[envelope["source_ori"]]
        partner = self._agencies[partner_ori]
        verdicts = [self._verdict(a, partner_ori, event, record_labels, now) for a in agreements]
        rule_key = (kind, owner.ori, record_labels)
        governing = self._governing.get(rule_key)
        if governing is None:
            governing = tuple(
                r for r in self._rules.get(kind, ()) if r.governs_record(owner, kind, record_labels)
            )
            self._governing[rule_key] = governing
        # Rules are judged per event (an assurance can lapse at any moment); what follows from
        # the verdicts, the refusals and the labels is the same for every event that has them.
        refusals = tuple(rule.refuses(owner, partner, now) for rule in governing)
        key = (
            partner_ori,
            owner.ori,
            kind,
            record_labels,
            refusals,
            tuple((v.agreement.id, v.outcome, v.steps, v.last) for v in verdicts),
        )
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._combine(
                partner_ori, kind, record_labels, agreements, verdicts, governing, refusals
            )
            if len(self._decisions) >= _DECISIONS_KEPT:
                # Steps that quote an event's contents (its age, its distance) make new keys;
                # starting afresh bounds the memory, and the common keys come straight back.
                self._decisions.clear()
            self._decisions[key] = decision
        return decision

    def _verdict(
        self,
        a: Agreement,
        partner_ori: str,
        event: dict[str, Any],
        record_labels: frozenset[str],
        now: datetime,
    ) -> _Verdict:
        """``_evaluate``, remembered per (agreement, kind, partner, labels) for an agreement
        whose conditions never look at a record's contents or age: those are all it reads."""
        c = a.conditions
        if (
            c.offenses_include
            or c.offenses_exclude
            or c.max_age_days is not None
            or c.within_km is not None
            or c.within_partner_jurisdiction
        ):
            return self._evaluate(a, partner_ori, event, now)
        key = (a.id, str(event["envelope"]["kind"]), partner_ori, record_labels)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = self._evaluate(a, partner_ori, event, now)
        return verdict

    def _combine(
        self,
        partner_ori: str,
        kind: str,
        record_labels: frozenset[str],
        agreements: list[Agreement],
        verdicts: list[_Verdict],
        governing: tuple[Rule, ...],
        refusals: tuple[str | None, ...],
    ) -> Decision:
        """The partner's decision from each agreement's verdict and the governing rules."""
        steps: list[str] = []
        for verdict in verdicts:
            steps += verdict.steps
            if len(verdicts) > 1:
                steps.append(f"{verdict.agreement.id}: {verdict.last}")

        def denied(reason: str) -> Decision:
            return Decision(
                partner_ori,
                "DENIED",
                tuple(agreements),
                (*steps, f"denied: {reason}"),
                rules=governing,
            )

        for rule, refusal in zip(governing, refusals, strict=True):
            if refusal is not None:
                steps.append(f"rule {rule.ref} ({rule.citation}) forbids it: {refusal}")
                return denied(f"rule {rule.id} forbids it: {refusal}")
            steps.append(f"ok: rule {rule.ref} ({rule.citation}) is met")
        grants = [v for v in verdicts if v.outcome != "DENIED"]
        if not grants:
            if len(verdicts) == 1:
                return Decision(
                    partner_ori,
                    "DENIED",
                    tuple(agreements),
                    (*steps, verdicts[0].last),
                    rules=governing,
                )
            return denied("no agreement grants it")
        for label in sorted(record_labels & self.protected):
            if label in labels.WITHDRAWING:
                return denied(f"record is {label}: withdrawn from every partner")
            without = [v.agreement.id for v in grants if not v.allows(label)]
            if without:
                return denied(
                    f"record is labelled {label}, a protected label, and "
                    f"{', '.join(without)} does not allow it (conditions.allow_labels)"
                )
            steps.append(f"ok: protected label {label} is allowed by every granting agreement")
        granting = tuple(v.agreement for v in grants)
        actions, sources, field_steps = self.combination(kind, granting)
        steps += field_steps
        retentions = [a.retention_days for a in granting if a.retention_days is not None]
        retention = min(retentions) if retentions else None
        outcome: Outcome = "POINTER" if any(v.outcome == "POINTER" for v in grants) else "SHARED"
        if len(grants) == 1:
            last = grants[0].last
        else:
            if retention is not None:
                steps.append(f"retention: {retention} days, the shortest")
            names = ", ".join(_ref(a) for a in granting)
            last = f"{outcome.lower()}: the most protective combination of {names}"
        return Decision(
            partner_ori,
            outcome,
            granting,
            (*steps, last),
            actions=actions,
            sources=sources,
            retention_days=retention,
            rules=governing,
        )

    def combination(
        self, kind: str, granting: tuple[Agreement, ...]
    ) -> tuple[dict[str, FieldAction], dict[str, tuple[str, ...]], tuple[str, ...]]:
        """The most protective action per field of the granting agreements, the agreements
        each came from, and the steps saying so. Cached per set of agreements."""
        key = (kind, *(a.id for a in granting))  # ids are unique within a policy
        cached = self._combined.get(key)
        if cached is not None:
            return cached
        offered: dict[str, dict[FieldAction, list[str]]] = {}
        for agreement in granting:
            for path, action in self._fields.get((agreement.id, kind), {}).items():
                offered.setdefault(path, {}).setdefault(action, []).append(_ref(agreement))
        chosen = {path: most_protective(by) for path, by in offered.items()}
        dropped = [p for p, a in chosen.items() if a == FieldAction.DROP]
        steps: list[str] = []
        actions: dict[str, FieldAction] = {}
        sources: dict[str, tuple[str, ...]] = {}
        # Deepest first, so a field inside an encrypted one is treated before it is sealed.
        for path in sorted(chosen, key=lambda p: (-p.count(".") - p.count("[]"), p)):
            action, by = chosen[path], offered[path]
            covering = next((d for d in sorted(dropped) if _inside(path, d)), None)
            if covering is not None:
                steps.append(f"field {path}: dropped with {covering}")
                continue
            others = [f"{', '.join(refs)}: {a}" for a, refs in sorted(by.items()) if a != action]
            note = f"; not {'; '.join(others)}" if others else ""
            if action != FieldAction.KEEP or others:
                steps.append(f"field {path}: {action} (from {', '.join(by[action])}{note})")
            sources[path] = tuple(by[action])
            if action != FieldAction.KEEP:
                actions[path] = action
        result = (actions, sources, tuple(steps))
        self._combined[key] = result
        return result

    def _evaluate(
        self, a: Agreement, partner_ori: str, event: dict[str, Any], now: datetime
    ) -> _Verdict:
        envelope, body = event["envelope"], event.get("body")
        owner, partner = self._agencies[a.owner], self._agencies[partner_ori]
        steps = [f"agreement {_ref(a)} covers {a.owner} {envelope['kind']} records"]
        steps.append(self._membership(a, partner))
        c = a.conditions

        def denied(reason: str, outcome: Outcome = "DENIED") -> _Verdict:
            return _Verdict(a, outcome, tuple(steps), f"{outcome.lower()}: {reason}")

        gate = self._partner_gate(a, owner, partner, envelope["labels"], steps)
        if gate is not None:
            return denied(*gate)
        reason = self._offense_check(c, body)
        if reason is not None:
            return denied(reason)
        if c.offenses_include or c.offenses_exclude:
            steps.append("ok: offense codes allowed")
        if c.max_age_days is not None:
            age = now - envelope["occurred_at"]
            if age > timedelta(days=c.max_age_days):
                return denied(f"occurred {age.days} days ago; limit {c.max_age_days} days")
            steps.append(f"ok: occurred within {c.max_age_days} days")
        reason = self._geography(c, partner, body)
        if reason is not None:
            return denied(reason)
        if c.within_km is not None or c.within_partner_jurisdiction:
            steps.append("ok: located within the partner's area")
        if a.tier == Tier.POINTER:
            return _Verdict(a, "POINTER", tuple(steps), "pointer: agreement tier is pointer")
        return _Verdict(a, "SHARED", tuple(steps), "shared")

    @staticmethod
    def _partner_gate(
        a: Agreement, owner: Agency, partner: Agency, labels: list[str], steps: list[str]
    ) -> tuple[str, Outcome] | None:
        """The conditions that depend on who the partner is and how the record is labelled, not
        on its contents: (reason, outcome) if one fails, else None (passed steps appended)."""
        c = a.conditions
        if c.partner_types is not None:
            if partner.type not in c.partner_types:
                return f"partner is {partner.type}; allowed: {', '.join(c.partner_types)}", "DENIED"
            steps.append(f"ok: partner type {partner.type} is allowed")
        if c.same_state_only:
            if partner.state != owner.state:
                return (
                    f"partner is in {partner.state}, owner in {owner.state}: same state only",
                    "DENIED",
                )
            steps.append(f"ok: partner is in {owner.state}, as the owner")
        excluded = sorted(set(labels) & set(c.exclude_labels))
        if excluded:
            outcome: Outcome = "POINTER" if c.on_excluded_label == "pointer" else "DENIED"
            return (
                f"record is labelled {', '.join(excluded)}, which this agreement excludes",
                outcome,
            )
        if c.exclude_labels:
            steps.append(f"ok: none of the excluded labels ({', '.join(c.exclude_labels)})")
        return None

    @staticmethod
    def _membership(a: Agreement, partner: Agency) -> str:
        if partner.ori in a.partners:
            return f"ok: {partner.ori} is named as a partner"
        matched = next(c for c in a.partner_classes if c.matches(partner))
        return (
            f"ok: {partner.ori} ({partner.type}, {partner.state}) is in class {matched.describe()}"
        )

    @staticmethod
    def _offense_check(c: Conditions, body: dict[str, Any] | None) -> str | None:
        if not (c.offenses_include or c.offenses_exclude):
            return None
        codes = {o.get("nibrs_code") for o in (body or {}).get("offenses") or []}
        if c.offenses_include and not codes & set(c.offenses_include):
            return (
                f"no offense among {', '.join(c.offenses_include)} (has {sorted(codes - {None})})"
            )
        barred = sorted(codes & set(c.offenses_exclude))
        if barred:
            return f"has excluded offense {', '.join(barred)}"
        return None

    @staticmethod
    def _geography(c: Conditions, partner: Agency, body: dict[str, Any] | None) -> str | None:
        if c.within_km is None and not c.within_partner_jurisdiction:
            return None
        if partner.jurisdiction is None:
            return f"partner {partner.ori} has no jurisdiction in the registry to measure from"
        where = _location(body)
        if where is None:
            return "record has no coordinates, so it cannot be shown to be in the area"
        j = partner.jurisdiction
        km = distance_km(where, (j.latitude, j.longitude))
        limit = min(
            x
            for x in (c.within_km, j.radius_km if c.within_partner_jurisdiction else None)
            if x is not None
        )
        if km > limit:
            return f"record is {km:.1f} km from the partner's centre; limit {limit:g} km"
        return None


def _has_path(schema: dict[str, Any], path: str) -> bool:
    try:
        fieldpaths.schema_type(schema, path)
    except ValueError:
        return False
    return True


def _load_folder(
    directory: Path,
    model: type[AgreementFile] | type[RuleFile],
    context: dict[str, Any],
    problems: list[Problem],
    *,
    what: str,
    setting: str,
    required: bool,
) -> list[Any]:
    """The agreements or rules of every ``*.yaml`` in ``directory`` (editor files skipped),
    each id once; problems appended, never raised, so every file's are reported together."""
    items: list[Any] = []
    first_seen: dict[str, Path] = {}
    files = yaml_files(directory)
    if not directory.is_dir():
        problems.append(
            Problem(directory, None, "", "folder not found", f"create it, or set {setting}")
        )
        return items
    if not files and required:
        problems.append(
            Problem(
                directory,
                None,
                "",
                f"no {what.rstrip('s')} files (*.yaml) found",
                f"add one, or point {setting} at the right folder",
            )
        )
    for path in files:
        try:
            loaded = load_model(path, model, context=context)
        except ConfigError as exc:
            problems += exc.problems
            continue
        for i, item in enumerate(getattr(loaded, what)):
            if item.id in first_seen:
                problems.append(
                    Problem(
                        path,
                        None,
                        f"{what}[{i}].id",
                        f"{item.id!r} is already defined in {first_seen[item.id]}",
                        f"give each {what.rstrip('s')} its own id",
                    )
                )
            first_seen.setdefault(item.id, path)
            items.append(item)
    return items


def load_policy(
    directory: Path,
    registry: Registry,
    *,
    rules_dir: Path | None = None,
    registry_file: Path | None = None,
    vocabulary: Iterable[str] = labels.VOCABULARY,
    protected: Iterable[str] = labels.PROTECTED,
) -> Policy:
    """Every agreement under ``directory`` and rule under ``rules_dir`` (``*.yaml``, editor
    files skipped); all problems in all files are reported together, as one ConfigError."""
    store = SchemaStore()
    context: dict[str, Any] = {
        "registry": registry,
        "body_schemas": {kind: store.get(name) for kind, name in BODY_SCHEMA.items()},
        "vocabulary": frozenset(vocabulary),
    }
    problems: list[Problem] = []
    agreements = _load_folder(
        directory,
        AgreementFile,
        context,
        problems,
        what="agreements",
        setting="agreements_dir",
        required=True,
    )
    rules: list[Rule] = []
    if rules_dir is not None:
        rules_ok = not problems  # a rule in a broken file would look unknown
        rules = _load_folder(
            rules_dir,
            RuleFile,
            context,
            problems,
            what="rules",
            setting="rules_dir",
            required=False,
        )
        rules_ok = rules_ok and not problems
        known = {r.id for r in rules}
        for i, agency in enumerate(registry.agencies):
            for j, assurance in enumerate(agency.assurances):
                if rules_ok and assurance.rule not in known:
                    problems.append(
                        Problem(
                            registry_file or Path("(agency registry)"),
                            None,
                            f"agencies[{i}].assurances[{j}].rule",
                            f"{assurance.rule!r} is not a rule in {rules_dir}",
                            f"use one of {', '.join(sorted(known)) or '(no rules)'}",
                        )
                    )
    if problems:
        raise ConfigError(problems)
    return Policy(agreements, registry, rules, protected=protected, store=store)


def load_policy_from(settings: Any, registry: Registry) -> Policy:
    """The policy the settings name: agreements, rules, label vocabulary, protected labels."""
    return load_policy(
        settings.agreements_dir,
        registry,
        rules_dir=settings.rules_dir,
        registry_file=settings.agencies_file,
        vocabulary=settings.label_vocabulary,
        protected=settings.protected,
    )
