"""The agency registry: who takes part, what kind of agency each is, and where it is.

Agreements and the router read it to decide who may receive what (a federal partner, an
out-of-state partner, a dispatch center), so it is validated whole before anything starts.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mutualaid.configfile import load_model
from mutualaid.errors import UsageError
from mutualaid.topics import check_ori

US_STATES = frozenset(
    [
        "AL",
        "AK",
        "AZ",
        "AR",
        "CA",
        "CO",
        "CT",
        "DE",
        "DC",
        "FL",
        "GA",
        "HI",
        "ID",
        "IL",
        "IN",
        "IA",
        "KS",
        "KY",
        "LA",
        "ME",
        "MD",
        "MA",
        "MI",
        "MN",
        "MS",
        "MO",
        "MT",
        "NE",
        "NV",
        "NH",
        "NJ",
        "NM",
        "NY",
        "NC",
        "ND",
        "OH",
        "OK",
        "OR",
        "PA",
        "RI",
        "SC",
        "SD",
        "TN",
        "TX",
        "UT",
        "VT",
        "VA",
        "WA",
        "WV",
        "WI",
        "WY",
        "PR",
        "GU",
        "VI",
        "AS",
        "MP",
    ]
)


class UnknownAgency(UsageError, KeyError):
    """An ORI that is not in the registry."""

    def __str__(self) -> str:
        return str(self.args[0])


class AgencyType(StrEnum):
    LOCAL = "local"
    COUNTY = "county"
    STATE = "state"
    FEDERAL = "federal"


class Jurisdiction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    latitude: float = Field(ge=-90, le=90, description="centre latitude in decimal degrees")
    longitude: float = Field(ge=-180, le=180, description="centre longitude in decimal degrees")
    radius_km: float = Field(gt=0, le=1000, description="radius in kilometres around the centre")


class Agency(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ori: str = Field(description="NCIC ORI, 9 characters, e.g. CA0194200")
    name: str = Field(min_length=1, description="the agency's name as partners know it")
    state: str = Field(description="two-letter USPS state code, e.g. CA")
    type: AgencyType = Field(description="one of local, county, state, federal")
    dispatch_center: bool = Field(False, description="true if it dispatches units (gets alerts)")
    contact: str = Field("", description="whom partners call about a record, e.g. records desk")
    jurisdiction: Jurisdiction | None = Field(None, description="centre and radius of its area")

    @field_validator("ori")
    @classmethod
    def _ori(cls, value: str) -> str:
        return check_ori(value)

    @field_validator("state")
    @classmethod
    def _state(cls, value: str) -> str:
        code = value.strip().upper()
        if code not in US_STATES:
            raise ValueError(f"{value!r} is not a two-letter USPS state or territory code")
        return code


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agencies: list[Agency] = Field(description="a list of agencies, one per ORI")

    @field_validator("agencies")
    @classmethod
    def _unique(cls, agencies: list[Agency]) -> list[Agency]:
        seen: set[str] = set()
        for agency in agencies:
            if agency.ori in seen:
                raise ValueError(f"ORI {agency.ori} is listed twice; each agency once")
            seen.add(agency.ori)
        return agencies

    def get(self, ori: str) -> Agency:
        """The agency with this ORI, or KeyError naming the registry's ORIs."""
        wanted = check_ori(ori)
        for agency in self.agencies:
            if agency.ori == wanted:
                return agency
        raise UnknownAgency(
            f"{wanted} is not in the agency registry (known: {', '.join(self.oris)})"
        )

    @property
    def oris(self) -> list[str]:
        return [a.ori for a in self.agencies]


def load_registry(path: Path) -> Registry:
    return load_model(path, Registry)
