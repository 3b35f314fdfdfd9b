"""Sharing agreements and the decisions they make. Default deny.

An agreement names an owner, the partners (by ORI or by class, e.g. every county agency in CA),
the kinds of record, conditions every shared record must meet, what happens to each field, and
a tier (``full``, or ``pointer``: only that the record exists and whom to call).

``Policy.decide`` returns one Decision per partner that any agreement for the event's owner and
kind names, with every step that led to it, so ``mutualaid agreements explain`` and the audit
can show a supervisor exactly why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from mutualaid import fieldpaths
from mutualaid.agencies import Agency, AgencyType, Registry
from mutualaid.configfile import ConfigError, Problem, load_model
from mutualaid.pointers import FoundBy
from mutualaid.serde import SchemaStore
from mutualaid.topics import Kind, check_ori

BODY_SCHEMA = {
    Kind.ALPR_READ: "mutualaid.alpr.Read",
    Kind.CAD_INCIDENT: "mutualaid.cad.Incident",
    Kind.RMS_RECORD: "mutualaid.rms.Record",
    Kind.HOTLIST_ENTRY: "mutualaid.hotlist.Entry",
}

Outcome = Literal["SHARED", "POINTER", "DENIED"]
_RANK = {"SHARED": 2, "POINTER": 1, "DENIED": 0}


class FieldAction(StrEnum):
    KEEP = "keep"
    DROP = "drop"
    MASK = "mask"
    HASH = "hash"
    ENCRYPT = "encrypt"
    # Encrypt, and leave a keyed hash (a blind index) in the field, so a partner can match the
    # value exactly (a case's SSN, a DL number) without decrypting anything.
    ENCRYPT_INDEXED = "encrypt_indexed"


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
        schemas: dict[Kind, dict] | None = (info.context or {}).get("body_schemas")
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

    def actions_for(self, kind: Kind, body_schema: dict) -> dict[str, FieldAction]:
        """The field actions that apply to this kind (paths the kind has)."""
        out = {}
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
    """What one partner receives of one event, and why."""

    partner_ori: str
    outcome: Outcome
    agreement: Agreement | None
    steps: tuple[str, ...] = field(default=())

    @property
    def shares(self) -> bool:
        return self.outcome != "DENIED"

    @property
    def agreement_ref(self) -> tuple[str, int] | None:
        return (self.agreement.id, self.agreement.version) if self.agreement else None


def _location(body: dict | None) -> tuple[float, float] | None:
    if not body:
        return None
    where = body.get("location") if isinstance(body.get("location"), dict) else body
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
    """Every agreement in force, indexed by (owner, kind) for the router's hot path."""

    def __init__(self, agreements: list[Agreement], registry: Registry) -> None:
        self.agreements = agreements
        self.registry = registry
        self._agencies = {a.ori: a for a in registry.agencies}
        self._covering: dict[tuple[str, str], list[tuple[Agreement, list[str]]]] = {}
        for agreement in agreements:
            partners = self.partners_of(agreement)
            for kind in agreement.kinds:
                key = (agreement.owner, str(kind))
                self._covering.setdefault(key, []).append((agreement, partners))

    def partners_of(self, agreement: Agreement) -> list[str]:
        named = list(agreement.partners)
        for agency in self.registry.agencies:
            if (
                any(c.matches(agency) for c in agreement.partner_classes)
                and agency.ori not in named
            ):
                named.append(agency.ori)
        return [p for p in named if p != agreement.owner]

    def decide(self, event: dict, now: datetime | None = None) -> list[Decision]:
        """One decision per partner named by an agreement covering this owner and kind.

        Agencies no agreement names are denied by default and get no decision record: there
        was nothing to decide. Where several agreements name a partner, the most open outcome
        wins (shared over pointer over denied), so one agreement cannot revoke another's grant.
        """
        envelope = event["envelope"]
        best: dict[str, Decision] = {}
        for agreement, partners in self._covering.get(
            (envelope["source_ori"], envelope["kind"]), []
        ):
            for partner in partners:
                decision = self._evaluate(agreement, partner, event, now or datetime.now(UTC))
                current = best.get(partner)
                if current is None or _RANK[decision.outcome] > _RANK[current.outcome]:
                    best[partner] = decision
        return list(best.values())

    def partners(self) -> set[str]:
        return {p for entries in self._covering.values() for _, ps in entries for p in ps}

    def _evaluate(self, a: Agreement, partner_ori: str, event: dict, now: datetime) -> Decision:
        envelope, body = event["envelope"], event.get("body")
        owner, partner = self._agencies[a.owner], self._agencies[partner_ori]
        steps = [f"agreement {a.id} v{a.version} covers {a.owner} {envelope['kind']} records"]
        steps.append(self._membership(a, partner))
        c = a.conditions

        def denied(reason: str, outcome: Outcome = "DENIED") -> Decision:
            return Decision(partner_ori, outcome, a, (*steps, f"{outcome.lower()}: {reason}"))

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
            return Decision(
                partner_ori, "POINTER", a, (*steps, "pointer: agreement tier is pointer")
            )
        return Decision(partner_ori, "SHARED", a, (*steps, "shared"))

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

    def may_still_hold(
        self, owner_ori: str, kind: str, partner_ori: str, labels: list[str]
    ) -> str | None:
        """After agreements change: None if some agreement still lets the partner hold a record
        of this owner, kind and labels; else why not. Content conditions (place, age, offense)
        are not re-judged here: they are, with everything else, at the record's next version."""
        reasons = []
        for agreement, partners in self._covering.get((owner_ori, kind), []):
            if partner_ori not in partners:
                continue
            gate = self._partner_gate(
                agreement, self._agencies[owner_ori], self._agencies[partner_ori], labels, []
            )
            if gate is None or gate[1] == "POINTER":
                return None
            reasons.append(f"{agreement.id} v{agreement.version}: {gate[0]}")
        return "; ".join(reasons) or "no agreement names it any more"

    def next_change(self, now: datetime) -> datetime | None:
        """The earliest moment after ``now`` at which a decision could change by time alone,
        so the router rechecks what partners hold then; None: no such moment. Today none: no
        condition lapses with time while a partner holds a record (``max_age_days`` limits
        what is shared, ``retention_days`` how long it is kept, which partners purge)."""
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
    def _offense_check(c: Conditions, body: dict | None) -> str | None:
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
    def _geography(c: Conditions, partner: Agency, body: dict | None) -> str | None:
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


def load_policy(directory: Path, registry: Registry) -> Policy:
    """Every ``*.yaml`` under ``directory``; all problems in all files are reported together."""
    store = SchemaStore()
    context: dict[str, Any] = {
        "registry": registry,
        "body_schemas": {kind: store.get(name) for kind, name in BODY_SCHEMA.items()},
    }
    problems: list[Problem] = []
    agreements: list[Agreement] = []
    first_seen: dict[str, Path] = {}
    files = sorted(directory.glob("*.yaml"))
    if not files:
        problems.append(
            Problem(
                directory,
                None,
                "",
                "no agreement files (*.yaml) found",
                "add one, or point agreements_dir at the right folder",
            )
        )
    for path in files:
        try:
            loaded = load_model(path, AgreementFile, context=context)
        except ConfigError as exc:
            problems += exc.problems
            continue
        for i, agreement in enumerate(loaded.agreements):
            if agreement.id in first_seen:
                problems.append(
                    Problem(
                        path,
                        None,
                        f"agreements[{i}].id",
                        f"{agreement.id!r} is already defined in {first_seen[agreement.id]}",
                        "give each agreement its own id",
                    )
                )
            first_seen.setdefault(agreement.id, path)
            agreements.append(agreement)
    if problems:
        raise ConfigError(problems)
    return Policy(agreements, registry)
