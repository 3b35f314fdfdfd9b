"""What ``mutualaid agreements check`` and ``explain`` tell a supervisor about a policy.

``findings`` reads the whole policy for what a valid file can still get wrong:

- an agreement naming a partner that a rule forbids for that kind (nothing will be shared with
  it: an error, since the agreement says something that will never happen);
- a rule that forbids only some records (by label) for a partner an agreement names (a warning);
- two or more agreements granting the same owner's records of a kind to the same partner (a
  warning with the combination that partner gets where they all apply);
- an assurance a rule needs that expires within 30 days (a warning).

``describe`` is one decision in words: outcome, agreements, rules, the field actions with the
agreements each came from, and every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from mutualaid.agencies import start_of
from mutualaid.policy import Decision, Policy, Tier

EXPIRY_WARNING = timedelta(days=30)


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    text: str

    def __str__(self) -> str:
        return f"{self.level}: {self.text}"


def findings(policy: Policy, now: datetime) -> list[Finding]:
    """Every finding, errors first, each group in a fixed order (agreement id, kind, ORI)."""
    found = _contradictions(policy, now) + _overlaps(policy) + _expiring(policy, now)
    return sorted(found, key=lambda f: f.level != "error")


def _contradictions(policy: Policy, now: datetime) -> list[Finding]:
    out = []
    agencies = {a.ori: a for a in policy.registry.agencies}
    for agreement in policy.agreements:
        owner = agencies[agreement.owner]
        for kind in sorted(agreement.kinds):
            for partner_ori in policy.partners_of(agreement):
                partner = agencies[partner_ori]
                for rule in policy.rules:
                    if not rule.governs_some(owner, kind):
                        continue
                    refusal = rule.refuses(owner, partner, now)
                    if refusal is None:
                        continue
                    if rule.governs.labels:
                        labelled = ", ".join(rule.governs.labels)
                        what = f"records labelled {labelled} will not be shared"
                        out.append(
                            Finding(
                                "warning",
                                f"{agreement.id}: names {partner_ori} for {kind}, but rule "
                                f"{rule.id} forbids {what} ({refusal})",
                            )
                        )
                    else:
                        out.append(
                            Finding(
                                "error",
                                f"{agreement.id}: names {partner_ori} for {kind}, but rule "
                                f"{rule.id} forbids it: nothing will be shared ({refusal})",
                            )
                        )
    return out


def _overlaps(policy: Policy) -> list[Finding]:
    out = []
    keys = sorted({(a.owner, str(k)) for a in policy.agreements for k in a.kinds})
    for owner, kind in keys:
        covering = policy.covering(owner, kind)
        partners = sorted({p for _, named in covering for p in named})
        for partner in partners:
            both = tuple(a for a, named in covering if partner in named)
            if len(both) < 2:
                continue
            names = ", ".join(f"{a.id} v{a.version}" for a in both)
            actions, sources, _ = policy.combination(kind, both)
            tier = Tier.POINTER if any(a.tier == Tier.POINTER for a in both) else Tier.FULL
            parts = [f"tier {tier}"]
            parts += [f"{p}: {act} (from {', '.join(sources[p])})" for p, act in actions.items()]
            retentions = [a.retention_days for a in both if a.retention_days is not None]
            if retentions:
                parts.append(f"retention {min(retentions)} days")
            text = (
                f"{names} all grant {owner} {kind} records to {partner}; where more than one "
                f"applies it gets their most protective combination: {'; '.join(parts)}"
            )
            allowed = sorted({label for a in both for label in a.conditions.allow_labels})
            for label in allowed:
                silent = [
                    a.id
                    for a in both
                    if label not in a.conditions.allow_labels
                    and label not in a.conditions.exclude_labels
                ]
                if silent:
                    text += (
                        f". {label} records are denied wherever {', '.join(silent)} also "
                        f"applies, as it does not allow {label}"
                    )
            out.append(Finding("warning", text))
    return out


def _expiring(policy: Policy, now: datetime) -> list[Finding]:
    needed = {r.id for r in policy.rules if r.partners_must.have_assurance}
    out = []
    for agency in policy.registry.agencies:
        for assurance in agency.assurances:
            ends = start_of(assurance.expires)
            if assurance.rule in needed and now <= ends < now + EXPIRY_WARNING:
                out.append(
                    Finding(
                        "warning",
                        f"{agency.ori}: assurance {assurance.document!r} for {assurance.rule} "
                        f"expires on {assurance.expires}; what it covers is withdrawn then",
                    )
                )
    return out


def describe(decision: Decision) -> list[str]:
    """The decision as ``agreements explain`` prints it."""
    lines = [f"{decision.partner_ori}: {decision.outcome}"]
    if decision.shares:
        refs = ", ".join(f"{i} v{v}" for i, v in decision.agreement_refs)
        lines.append(f"  under: {refs}")
        if decision.outcome == "SHARED":
            if decision.actions:
                lines.append("  field actions:")
            for path, action in decision.actions.items():
                lines.append(f"    {path}: {action} (from {', '.join(decision.sources[path])})")
        if decision.retention_days is not None:
            lines.append(f"  retention: {decision.retention_days} days")
    for rule in decision.rules:
        lines.append(f"  rule {rule.ref}: {rule.citation}")
    lines += [f"  - {step}" for step in decision.steps]
    return lines
