"""Sharing agreements and the decisions they make. Default deny.

An agreement names an owner agency, the partners it shares with and the kinds of record. The
router asks ``Policy.decide`` for every event; anything no agreement covers goes nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from mutualaid.agencies import Registry
from mutualaid.configfile import ConfigError, Problem, load_model
from mutualaid.events import Envelope
from mutualaid.topics import Kind, check_ori


def _known_ori(value: str, info: ValidationInfo) -> str:
    ori = check_ori(value)
    registry: Registry | None = (info.context or {}).get("registry")
    if registry is not None and ori not in registry.oris:
        raise ValueError(f"{ori} is not in the agency registry; add it there first")
    return ori


class Agreement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        min_length=1,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="a short unique name in lower case, e.g. riverbend-mesa-alpr",
    )
    version: int = Field(ge=1, description="raise it whenever the agreement changes")
    owner: str = Field(description="ORI of the agency whose records this shares")
    partners: list[str] = Field(min_length=1, description="ORIs that may receive them")
    kinds: list[Kind] = Field(
        min_length=1, description="any of cad.incident, alpr.read, rms.record"
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


class AgreementFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agreements: list[Agreement] = Field(description="a list of agreements")


@dataclass(frozen=True)
class Decision:
    """What one agreement lets one partner receive of one event."""

    partner_ori: str
    agreement_id: str
    agreement_version: int
    tier: Literal["FULL", "POINTER"] = "FULL"


class Policy:
    """Every agreement in force, indexed by (owner, kind) for the router's hot path."""

    def __init__(self, agreements: list[Agreement]) -> None:
        self.agreements = agreements
        self._covering: dict[tuple[str, str], list[Agreement]] = {}
        for agreement in agreements:
            for kind in agreement.kinds:
                self._covering.setdefault((agreement.owner, str(kind)), []).append(agreement)

    def decide(self, envelope: Envelope) -> list[Decision]:
        """One decision per partner that may receive this event; none means nobody may."""
        decisions: dict[str, Decision] = {}
        for agreement in self._covering.get((envelope["source_ori"], envelope["kind"]), []):
            for partner in agreement.partners:
                if partner != envelope["source_ori"]:
                    decisions.setdefault(
                        partner, Decision(partner, agreement.id, agreement.version)
                    )
        return list(decisions.values())

    def partners(self) -> set[str]:
        return {p for a in self.agreements for p in a.partners}


def load_policy(directory: Path, registry: Registry) -> Policy:
    """Every ``*.yaml`` under ``directory``; all problems in all files are reported together."""
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
            loaded = load_model(path, AgreementFile, context={"registry": registry})
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
    return Policy(agreements)
