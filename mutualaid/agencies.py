"""The agency registry: who takes part, what kind of agency each is, and where it is.

Agreements and the router read it to decide who may receive what (a federal partner, an
out-of-state partner, a dispatch center), so it is validated whole before anything starts.
"""

from __future__ import annotations

import difflib
from datetime import UTC, date, datetime, time
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mutualaid.configfile import load_model
from mutualaid.errors import UsageError
from mutualaid.topics import check_ori

# USPS codes of the states, DC and the territories, with their names: a name where a code
# belongs (``state: Nevada``) is an error that names the code.
STATE_NAMES: dict[str, str] = dict(
    entry.strip().split(" ", 1)
    for entry in """
AL Alabama, AK Alaska, AZ Arizona, AR Arkansas, CA California, CO Colorado, CT Connecticut,
DE Delaware, DC District of Columbia, FL Florida, GA Georgia, HI Hawaii, ID Idaho, IL Illinois,
IN Indiana, IA Iowa, KS Kansas, KY Kentucky, LA Louisiana, ME Maine, MD Maryland,
MA Massachusetts, MI Michigan, MN Minnesota, MS Mississippi, MO Missouri, MT Montana,
NE Nebraska, NV Nevada, NH New Hampshire, NJ New Jersey, NM New Mexico, NY New York,
NC North Carolina, ND North Dakota, OH Ohio, OK Oklahoma, OR Oregon, PA Pennsylvania,
RI Rhode Island, SC South Carolina, SD South Dakota, TN Tennessee, TX Texas, UT Utah,
VT Vermont, VA Virginia, WA Washington, WV West Virginia, WI Wisconsin, WY Wyoming,
PR Puerto Rico, GU Guam, VI U.S. Virgin Islands, AS American Samoa, MP Northern Mariana Islands
""".split(",")  # noqa: SIM905 (a table is easier to check by eye than 56 quoted strings)
)
US_STATES = frozenset(STATE_NAMES)


def check_state(value: str) -> str:
    """The two-letter code, upper-cased, or ValueError saying which code was meant."""
    code = value.strip().upper()
    if code in US_STATES:
        return code
    by_name = {name.upper(): c for c, name in STATE_NAMES.items()}
    close = difflib.get_close_matches(code, by_name, n=1, cutoff=0.75)
    hint = f"; {STATE_NAMES[by_name[close[0]]]} is {by_name[close[0]]}" if close else ""
    raise ValueError(f"{value!r} is not a two-letter USPS state or territory code{hint}")


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


def start_of(day: date) -> datetime:
    """Midnight UTC at the start of ``day``: where a dated document takes or loses effect."""
    return datetime.combine(day, time(0), tzinfo=UTC)


class Assurance(BaseModel):
    """A documented assurance a partner gave (how it will use the data), on file for a rule.

    In effect from the start of ``signed`` (UTC) until the start of ``expires``: a document
    that expires on 2027-01-15 no longer counts on that day.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: str = Field(
        pattern=r"^[a-z0-9][a-z0-9.-]*$",
        description="the rule it satisfies, e.g. ca-alpr-1798.90.55",
    )
    document: str = Field(
        min_length=1, description="where the signed document is, e.g. MOU 2026-014 section 4"
    )
    signed: date = Field(description="the date it was signed, YYYY-MM-DD")
    expires: date = Field(description="the date it stops counting, YYYY-MM-DD")

    @model_validator(mode="after")
    def _in_order(self) -> Assurance:
        if self.expires <= self.signed:
            raise ValueError(f"expires {self.expires} is not after signed {self.signed}")
        return self

    def in_effect(self, now: datetime) -> bool:
        return start_of(self.signed) <= now < start_of(self.expires)


class Agency(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ori: str = Field(description="NCIC ORI, 9 characters, e.g. CA0194200")
    name: str = Field(min_length=1, description="the agency's name as partners know it")
    state: str = Field(description="two-letter USPS state code, e.g. CA")
    type: AgencyType = Field(description="one of local, county, state, federal")
    dispatch_center: bool = Field(False, description="true if it dispatches units (gets alerts)")
    contact: str = Field("", description="whom partners call about a record, e.g. records desk")
    jurisdiction: Jurisdiction | None = Field(None, description="centre and radius of its area")
    assurances: list[Assurance] = Field(
        [], description="documented assurances on file, each for a rule (e.g. CA ALPR sharing)"
    )

    @field_validator("ori")
    @classmethod
    def _ori(cls, value: str) -> str:
        return check_ori(value)

    @field_validator("state")
    @classmethod
    def _state(cls, value: str) -> str:
        return check_state(value)


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
