"""Reading one NIBRS report (IEPD 4.2 elements, by local name) into a ``mutualaid.rms.Record``.

``producers.rms`` parses the document safely, strips the namespaces and decides what the report
is (type, action, record id, version); this module reads what the report holds. Each NIBRS data
element has one place in the record; the element numbers are the FBI's (NIBRS User Manual):

    Incident (2-5, 2A)  ActivityIdentification/IdentificationID, ActivityDate (DateTime, else
                        Date: never a stray YearMonthDate), IncidentReportDateIndicator,
                        OffenseCargoTheftIndicator, IncidentExceptionalClearanceCode/-Date
    Offense (6-13)      OffenseUCRCode, OffenseAttemptedIndicator, OffenseFactorCode,
                        OffenseFactorBiasMotivationCode, LocationCategoryCode (directly or via
                        OffenseLocationAssociation), OffenseStructuresEnteredQuantity,
                        PassagePointMethodCode, CriminalActivityCategoryCode, ForceCategoryCode
    Item, Substance     ItemStatusCode and StatusDescriptionText, Amount, ItemValueDate,
    (14-22)             ItemCategoryNIBRSPropertyCategoryCode, ItemQuantity, DrugCategoryCode,
                        SubstanceQuantityMeasure/MeasureDecimalValue + SubstanceUnitCode
    Victim (23-35)      VictimSequenceNumberText, OffenseVictimAssociation, VictimCategoryCode,
                        EnforcementOfficial (25A-C), the Person's age, sex, race, ethnicity and
                        PersonResidentCode, VictimAggravatedAssaultHomicideFactorCode,
                        VictimJustifiableHomicideFactorCode, InjuryCategoryCode,
                        SubjectVictimAssociation/VictimToSubjectRelationshipCode
    Subject (36-39A)    SubjectSequenceNumberText and the Person
    Arrestee, Arrest    ArrestSequenceID, ActivityIdentification (the arrest transaction number),
    (40-52)             ActivityDate, ArrestCategoryCode, ArrestSubjectCountCode, ChargeUCRCode,
                        ArresteeArmedWithCode, the Person, ArresteeJuvenileDispositionCode,
                        ArresteeClearanceIndicator; linked by ArrestSubjectAssociation

Persons come only from the role elements that declare them (``j:Victim``, ``j:Subject``,
``j:Arrestee`` without ``s:ref``); the ``s:ref`` copies inside association elements are links,
not persons. Ages keep what they mean: an exact age sets ``age``, ``age_min`` and ``age_max``; a
range (``MeasureIntegerRange``, offender 25-30) only the bounds; the special ages ``NN`` (under 24
hours), ``NB`` (1-6 days), ``BB`` (7-364 days), also spelled NEONATAL, NEWBORN, BABY, are age 0
with their ``age_code``; ``00``/UNKNOWN is an unknown age with its code. Vehicles
(``nc:Vehicle``, not in IEPD 4.2 but in RMS exports) are read as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.etree.ElementTree import Element

from mutualaid.plates import normalize_plate
from producers.parsing import text
from producers.runner import Rejected

ROLES = {"Victim": "VICTIM", "Subject": "OFFENDER", "Arrestee": "ARRESTEE"}
# A few of the NIBRS offense codes, for a readable description; the code always travels.
UCR_DESCRIPTIONS = {
    "09A": "Murder and nonnegligent manslaughter",
    "100": "Kidnapping/abduction",
    "120": "Robbery",
    "13A": "Aggravated assault",
    "13B": "Simple assault",
    "13C": "Intimidation",
    "200": "Arson",
    "220": "Burglary/breaking and entering",
    "23C": "Shoplifting",
    "23F": "Theft from motor vehicle",
    "23H": "All other larceny",
    "240": "Motor vehicle theft",
    "250": "Counterfeiting/forgery",
    "26A": "False pretenses/swindle/confidence game",
    "290": "Destruction/damage/vandalism of property",
    "35A": "Drug/narcotic violations",
    "520": "Weapon law violations",
    "64A": "Human trafficking, commercial sex acts",
    "90A": "Bad checks",
    "90D": "Driving under the influence",
    "90G": "Liquor law violations",
    "90Z": "All other offenses",
}
# NIBRS special ages, by code and by the words the IEPD 4.2 samples write in MeasureValueText.
AGE_CODES = {
    "NN": "NN",
    "NEONATAL": "NN",
    "NB": "NB",
    "NEWBORN": "NB",
    "BB": "BB",
    "BABY": "BB",
    "00": "00",
    "UNKNOWN": "00",
}
_AGE_RANGE = re.compile(r"^(\d{1,3})\s*-\s*(\d{1,3})$")


def local(tag: object) -> str:
    """'{http://...}Offense' -> 'Offense' (comments and processing instructions -> '')."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def strip_namespaces(root: Element) -> Element:
    """Every tag and attribute name by its local name, once, so lookups are plain and fast."""
    for element in root.iter():
        element.tag = local(element.tag)
        if element.attrib:
            element.attrib = {local(k): v for k, v in element.attrib.items()}
    return root


# After strip_namespaces, ElementTree's own (C) lookups do the work.
def child(element: Element | None, *path: str) -> Element | None:
    return element.find("/".join(path)) if element is not None else None


def value(element: Element | None, *path: str) -> str | None:
    found = child(element, *path)
    return text(found.text) if found is not None else None


def first_value(element: Element | None, *names: str) -> str | None:
    """The text of the first descendant with any of these local names."""
    if element is None:
        return None
    for name in names:
        for found in element.iter(name):
            if text(found.text):
                return text(found.text)
    return None


def all_values(element: Element | None, name: str) -> list[str]:
    """The texts of every descendant called ``name``, in document order."""
    if element is None:
        return []
    return [t for e in element.iter(name) if (t := text(e.text))]


def declared(elements: list[Element]) -> list[Element]:
    """The elements that declare something, not the ``s:ref`` links to them."""
    return [e for e in elements if e.get("ref") is None]


def refs(element: Element | None, name: str) -> list[str]:
    """The ``s:ref`` targets of the ``name`` children of an association element."""
    if element is None:
        return []
    return [r for e in element.findall(name) if (r := e.get("ref"))]


def boolean(raw: str | None, where: str) -> bool | None:
    if raw is None:
        return None
    lowered = raw.lower()
    if lowered in {"true", "1"}:
        return True
    if lowered in {"false", "0"}:
        return False
    raise Rejected("bad_value", f"{where} {raw!r} is not true or false")


def integer(raw: str | None, where: str) -> int | None:
    """A whole number written as an xsd:decimal ('1', '1.0')."""
    if raw is None:
        return None
    try:
        number = Decimal(raw)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite() or number != number.to_integral_value() or number < 0:
        raise Rejected("bad_value", f"{where} {raw!r} is not a whole number")
    return int(number)


def decimal(raw: str | None, where: str) -> float | None:
    if raw is None:
        return None
    try:
        return float(Decimal(raw))
    except InvalidOperation:
        raise Rejected("bad_value", f"{where} {raw!r} is not a number") from None


def iso_date(element: Element | None, where: str) -> str | None:
    """The date of a NIEM date element (its Date, else its DateTime), ISO 8601."""
    raw = value(element, "Date") or value(element, "DateTime")
    if raw is None:
        return None
    try:
        day = date.fromisoformat(raw) if len(raw) == 10 else datetime.fromisoformat(raw).date()
        return day.isoformat()
    except ValueError:
        raise Rejected("bad_timestamp", f"{raw!r} in {where} is not an ISO 8601 date") from None


class Reading:
    """One report's elements indexed by id, and the links the association elements make."""

    def __init__(self, report: Element) -> None:
        self.report = report
        # One pass over the report, every element by its name, in document order.
        self.named: dict[str, list[Element]] = {}
        goods = []  # items and substances (drugs) are both property, in document order
        for element in report.iter():
            self.named.setdefault(element.tag, []).append(element)
            if element.tag in {"Item", "Substance"}:
                goods.append(element)
        self.goods = declared(goods)
        self.persons = {p.get("id"): p for p in self.declared("Person") if p.get("id")}
        self.offenses = [o for o in self.declared("Offense") if value(o, "OffenseUCRCode")]
        self.offense_codes = {
            o.get("id"): (value(o, "OffenseUCRCode") or "").upper() for o in self.offenses
        }
        self.roles = {name: self.declared(name) for name in ROLES}
        self.arrests = self.declared("Arrest")
        self.sequence = {  # role element id -> its sequence number
            e.get("id"): self._sequence(name, e)
            for name, elements in self.roles.items()
            for e in elements
            if e.get("id")
        }

    @staticmethod
    def _sequence(name: str, element: Element) -> str | None:
        if name == "Arrestee":
            return value(element, "ArrestSequenceID") or value(element, "SubjectSequenceNumberText")
        return value(element, f"{name}SequenceNumberText")

    def declared(self, name: str) -> list[Element]:
        return declared(self.named.get(name, []))

    def associations(self, name: str) -> Iterator[Element]:
        yield from self.named.get(name, [])

    # The record's lists ---------------------------------------------------------------

    def offense_list(self) -> list[dict[str, Any]]:
        located = self._offense_locations()
        out = []
        for offense in self.offenses:
            code = (value(offense, "OffenseUCRCode") or "").upper()
            attempted = boolean(value(offense, "OffenseAttemptedIndicator"), "OffenseAttempted")
            status = value(offense, "OffenseAttemptedCompletedCode") or (
                None if attempted is None else "A" if attempted else "C"
            )
            weapons = all_values(offense, "ForceCategoryCode")
            out.append(
                {
                    "nibrs_code": code,
                    "description": UCR_DESCRIPTIONS.get(code),
                    "attempted_completed": status.upper() if status else None,
                    "location_type": value(offense, "LocationCategoryCode")
                    or located.get(offense.get("id") or ""),
                    "weapon": weapons[0] if weapons else None,
                    "weapons": weapons,
                    "suspected_of_using": all_values(offense, "OffenseFactorCode"),
                    "bias_motivations": all_values(offense, "OffenseFactorBiasMotivationCode"),
                    "premises_entered": integer(
                        value(offense, "OffenseStructuresEnteredQuantity"),
                        "OffenseStructuresEnteredQuantity",
                    ),
                    "entry_method": first_value(offense, "PassagePointMethodCode"),
                    "criminal_activities": all_values(offense, "CriminalActivityCategoryCode"),
                }
            )
        return out

    def _offense_locations(self) -> dict[str, str]:
        """Offense id -> location category, from NIEM's OffenseLocationAssociation."""
        locations = {
            e.get("id"): value(e, "LocationCategoryCode")
            for e in self.declared("Location")
            if e.get("id")
        }
        out = {}
        for link in self.associations("OffenseLocationAssociation"):
            for offense in refs(link, "Offense"):
                for place in refs(link, "Location"):
                    if code := locations.get(place):
                        out[offense] = code
        return out

    def person_list(self) -> list[dict[str, Any]]:
        officers = self._officers()
        victim_offenses = self._victim_offenses()
        relationships = self._relationships()
        out = []
        for name, role in ROLES.items():
            for element in self.roles[name]:
                link = child(element, "RoleOfPerson")
                ref = link.get("ref") if link is not None else None
                person = self.persons.get(ref, element) if ref else element
                entry: dict[str, Any] = {
                    "person_id": self.sequence.get(element.get("id"))
                    or self._sequence(name, element)
                    or element.get("id"),
                    "role": role,
                    **age(person),
                    "sex": first_value(person, "PersonSexCode"),
                    "race": first_value(person, "PersonRaceNDExCode", "PersonRaceCode"),
                    "ethnicity": first_value(person, "PersonEthnicityCode"),
                    "resident_status": first_value(person, "PersonResidentCode"),
                }
                if name == "Victim":
                    officer = officers.get(ref or "")
                    entry.update(
                        victim_type=value(element, "VictimCategoryCode"),
                        officer_activity=value(officer, "EnforcementOfficialActivityCategoryCode"),
                        officer_assignment=value(
                            officer, "EnforcementOfficialAssignmentCategoryCode"
                        ),
                        officer_other_ori=first_value(
                            child(officer, "EnforcementOfficialUnit"), "IdentificationID"
                        ),
                        injuries=all_values(element, "InjuryCategoryCode"),
                        circumstances=all_values(
                            element, "VictimAggravatedAssaultHomicideFactorCode"
                        ),
                        justifiable_homicide_circumstance=value(
                            element, "VictimJustifiableHomicideFactorCode"
                        ),
                        offenses=victim_offenses.get(element.get("id") or "", []),
                        relationships=relationships.get(element.get("id") or "", []),
                    )
                out.append(entry)
        return out

    def _officers(self) -> dict[str, Element]:
        """Person id -> the EnforcementOfficial role of that person (victim type L)."""
        out = {}
        for officer in self.declared("EnforcementOfficial"):
            link = child(officer, "RoleOfPerson")
            if link is not None and link.get("ref"):
                out[link.get("ref") or ""] = officer
        return out

    def _victim_offenses(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for link in self.associations("OffenseVictimAssociation"):
            codes = [
                self.offense_codes[o] for o in refs(link, "Offense") if o in self.offense_codes
            ]
            for victim in refs(link, "Victim"):
                known = out.setdefault(victim, [])
                known.extend(c for c in codes if c not in known)
        return out

    def _relationships(self) -> dict[str, list[dict[str, str | None]]]:
        out: dict[str, list[dict[str, str | None]]] = {}
        for link in self.associations("SubjectVictimAssociation"):
            relationship = first_value(
                link, "VictimToSubjectRelationshipCode", "VictimToSubjectRelationship"
            )
            for victim in refs(link, "Victim"):
                for subject in refs(link, "Subject"):
                    out.setdefault(victim, []).append(
                        {
                            "offender_id": self.sequence.get(subject) or subject,
                            "relationship": relationship,
                        }
                    )
        return out

    def arrest_list(self) -> list[dict[str, Any]]:
        by_id = {a.get("id"): a for a in self.arrests if a.get("id")}
        linked: dict[str, list[Element]] = {}
        for link in self.associations("ArrestSubjectAssociation"):
            for activity in refs(link, "Activity"):
                for subject in refs(link, "Subject"):
                    if activity in by_id:
                        linked.setdefault(subject, []).append(by_id[activity])
        out = []
        for arrestee in self.roles["Arrestee"]:
            # Unlinked: the report's one arrest, if it has only one (else no arrest details).
            arrests: list[Element | None] = list(linked.get(arrestee.get("id") or "", []))
            arrests = arrests or (list(self.arrests) if len(self.arrests) == 1 else [None])
            for arrest in arrests:
                charge = (first_value(arrest, "ChargeUCRCode") or "").upper() or None
                out.append(
                    {
                        "arrestee_id": self.sequence.get(arrestee.get("id"))
                        or self._sequence("Arrestee", arrestee),
                        "arrest_number": value(
                            arrest, "ActivityIdentification", "IdentificationID"
                        ),
                        "arrest_date": iso_date(child(arrest, "ActivityDate"), "Arrest date"),
                        "arrest_type": value(arrest, "ArrestCategoryCode"),
                        "multiple_arrestee_indicator": value(arrestee, "ArrestSubjectCountCode"),
                        "charge": charge,
                        "charge_description": UCR_DESCRIPTIONS.get(charge or ""),
                        "armed_with": all_values(arrestee, "ArresteeArmedWithCode")
                        + all_values(arrestee, "SubjectArmedWithCode"),
                        "juvenile_disposition": value(arrestee, "ArresteeJuvenileDispositionCode"),
                        "clears_incident": boolean(
                            value(arrestee, "ArresteeClearanceIndicator"),
                            "ArresteeClearanceIndicator",
                        ),
                    }
                )
        return out

    def property_list(self) -> list[dict[str, Any]]:
        items = []
        for element in self.goods:
            category = value(element, "ItemCategoryNIBRSPropertyCategoryCode")
            items.append(
                {
                    "description": value(element, "ItemDescriptionText") or category,
                    "loss_type": first_value(element, "ItemStatusCode"),
                    "status_description": value(element, "ItemStatus", "StatusDescriptionText"),
                    "value_usd": decimal(first_value(element, "Amount"), "Item value"),
                    "category": category,
                    "recovered_date": iso_date(
                        child(element, "ItemValue", "ItemValueDate"), "ItemValueDate"
                    ),
                    "quantity": integer(value(element, "ItemQuantity"), "ItemQuantity"),
                    "drug_type": value(element, "DrugCategoryCode"),
                    "drug_measures": [
                        {
                            "quantity": decimal(
                                value(m, "MeasureDecimalValue"), "SubstanceQuantityMeasure"
                            ),
                            "unit": value(m, "SubstanceUnitCode"),
                        }
                        for m in element.findall("SubstanceQuantityMeasure")
                    ],
                }
            )
        return items

    def vehicle_list(self) -> list[dict[str, Any]]:
        vehicles = []
        for vehicle in self.declared("Vehicle"):
            year = value(vehicle, "ItemModelYearDate")
            plate = child(vehicle, "ConveyanceRegistrationPlateIdentification")
            vehicles.append(
                {
                    "plate": normalize_plate(value(plate, "IdentificationID") or "") or None,
                    "plate_state": first_value(
                        plate,
                        "IdentificationJurisdictionText",
                        "LocationStateUSPostalServiceCode",
                        "LocationStateNCICLSTACode",
                    ),
                    "vin": value(vehicle, "VehicleIdentification", "IdentificationID"),
                    "make": value(vehicle, "VehicleMakeCode"),
                    "model": value(vehicle, "VehicleModelCode"),
                    "year": int(year[:4]) if year and year[:4].isdigit() else None,
                    "color": value(vehicle, "ItemColorDescriptionText")
                    or value(vehicle, "VehicleColorPrimaryCode"),
                    "style": value(vehicle, "VehicleStyleCode"),
                    "role": first_value(vehicle, "ItemStatusCode"),
                }
            )
        return vehicles


def age(person: Element) -> dict[str, Any]:
    """age, age_min, age_max and age_code of a Person, as NIBRS means them."""
    out: dict[str, Any] = {"age": None, "age_min": None, "age_max": None, "age_code": None}
    low = first_value(person, "RangeMinimumIntegerValue")
    high = first_value(person, "RangeMaximumIntegerValue")
    if low is not None or high is not None:
        out["age_min"] = integer(low, "RangeMinimumIntegerValue")
        out["age_max"] = integer(high, "RangeMaximumIntegerValue")
        return out
    raw = first_value(person, "MeasureIntegerValue", "PersonAge", "MeasureValueText")
    if raw is None:
        return out
    code = AGE_CODES.get(raw.upper())
    if code == "00":
        out["age_code"] = code
    elif code is not None:  # under a year old
        out.update(age=0, age_min=0, age_max=0, age_code=code)
    elif raw.isdigit():
        out.update(age=int(raw), age_min=int(raw), age_max=int(raw))
    elif ranged := _AGE_RANGE.match(raw):
        out.update(age_min=int(ranged[1]), age_max=int(ranged[2]))
    else:
        raise Rejected(
            "bad_age",
            f"age {raw!r} is not a number of years, a range such as 25-30, or a NIBRS age code "
            "(NN, NB, BB, 00)",
        )
    return out
