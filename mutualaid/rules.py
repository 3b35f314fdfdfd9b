"""Rules: what the law (or the region) forbids, whatever an agreement grants.

An agreement grants; a rule forbids. A rule names the records it governs (kinds, the owner's
state, optionally labels) and what every partner receiving them must be (types, same state as
the owner, a documented assurance on file). A partner that is not is denied those records
outright, not even a pointer: the rules shipped here protect the information itself (that a
plate was read somewhere), which a pointer would reveal.

Rules live in ``rules_dir`` (default ``deploy/rules/``), one or more ``*.yaml`` files loaded and
validated like agreements. Assurances are registry entries of the partner (``assurances:`` in
the agency registry), each naming the rule it satisfies; one past its expiry date no longer
counts, and ``Policy.next_change`` says when that will next happen.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from mutualaid import labels as vocabulary
from mutualaid.agencies import Agency, AgencyType, check_state, start_of
from mutualaid.topics import Kind


def checked_labels(values: list[str], info: ValidationInfo) -> list[str]:
    """Labels in their one spelling, against the vocabulary the loader was given."""
    known = (info.context or {}).get("vocabulary", vocabulary.VOCABULARY)
    return vocabulary.check_all(values, known)


class Governs(BaseModel):
    """The records a rule governs: all of the kinds' records whose owner and labels match."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: list[Kind] = Field(min_length=1, description="e.g. [alpr.read]")
    owner_states: list[str] = Field(
        [], description="only records of owners in these states, e.g. [CA]; empty: every owner"
    )
    labels: list[str] = Field(
        [], description="only records carrying any of these labels; empty: every record"
    )

    @field_validator("owner_states")
    @classmethod
    def _states(cls, values: list[str]) -> list[str]:
        return sorted({check_state(v) for v in values})

    @field_validator("labels")
    @classmethod
    def _labels(cls, values: list[str], info: ValidationInfo) -> list[str]:
        return checked_labels(values, info)


class PartnersMust(BaseModel):
    """What every partner receiving a governed record must be. Each one set must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    be_types: list[AgencyType] | None = Field(
        None, description="partner types allowed, e.g. [local, county, state]"
    )
    be_in_owner_state: bool = Field(False, description="true: only partners in the owner's state")
    have_assurance: bool = Field(
        False, description="true: only partners with an assurance for this rule in the registry"
    )


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        min_length=1,
        pattern=r"^[a-z0-9][a-z0-9.-]*$",
        description="a short unique name, e.g. ca-alpr-1798.90.55",
    )
    version: int = Field(ge=1, description="raise it whenever the rule changes")
    citation: str = Field(min_length=1, description="the law or policy it enforces, in words")
    governs: Governs = Field(description="the records it governs")
    partners_must: PartnersMust = Field(description="what every partner receiving them must be")
    description: str = Field("", description="what it means, in words a supervisor would use")

    @property
    def ref(self) -> str:
        return f"{self.id} v{self.version}"

    def governs_some(self, owner: Agency, kind: str) -> bool:
        """Whether it governs some of this owner's records of this kind (labels aside)."""
        g = self.governs
        return kind in g.kinds and (not g.owner_states or owner.state in g.owner_states)

    def governs_record(self, owner: Agency, kind: str, labels: frozenset[str]) -> bool:
        g = self.governs
        return self.governs_some(owner, kind) and (not g.labels or bool(labels & set(g.labels)))

    def refuses(self, owner: Agency, partner: Agency, now: datetime) -> str | None:
        """Why this partner may not receive the records this rule governs, or None."""
        must = self.partners_must
        if must.be_types is not None and partner.type not in must.be_types:
            allowed = ", ".join(must.be_types)
            return f"{partner.ori} is a {partner.type} agency; the rule allows {allowed} only"
        if must.be_in_owner_state and partner.state != owner.state:
            return f"{partner.ori} is in {partner.state}; the rule allows {owner.state} only"
        if must.have_assurance:
            mine = [a for a in partner.assurances if a.rule == self.id]
            if not mine:
                return f"{partner.ori} has no assurance for {self.id} on file in the registry"
            if not any(a.in_effect(now) for a in mine):
                latest = max(mine, key=lambda a: a.expires)
                if now < start_of(latest.signed):
                    return f"{partner.ori}: assurance {latest.document!r} starts {latest.signed}"
                return f"{partner.ori}: assurance {latest.document!r} expired on {latest.expires}"
        return None


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Rule] = Field(description="a list of rules")
