"""An agency's RMS records back out as NIBRS IEPD 4.2 submissions, for ``mutualaid export``.

One ``nibrs:Submission`` per event, as NIBRS submits one report at a time: a record's first
version an incident report (action I, or A for an arrest report), a later one a replacement (R),
a DELETE a deletion (D) naming only the incident or arrest. The elements are the ones
``producers.nibrs`` reads, written in the order the FBI's XSD requires, so a report the RMS
connector read comes out with the same data elements. What NIBRS has no element for (names,
dates of birth, identifiers, vehicles, the narrative) stays in the Avro and NDJSON files;
persons in no NIBRS role (a witness, say) are left out of the XML.

A record NIBRS cannot carry (no incident number for an incident report, no arrest number for an
arrest report) is skipped with the reason, which the export's manifest counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from xml.etree.ElementTree import Element, SubElement, register_namespace, tostring

from mutualaid.errors import MutualaidError

NS = {
    "nibrs": "http://fbi.gov/cjis/nibrs/4.2",
    "cjis": "http://fbi.gov/cjis/1.0",
    "j": "http://release.niem.gov/niem/domains/jxdm/5.2/",
    "nc": "http://release.niem.gov/niem/niem-core/3.0/",
    "s": "http://release.niem.gov/niem/structures/3.0/",
}
for _prefix, _uri in NS.items():
    register_namespace(_prefix, _uri)

GROUP_A = "GROUP A INCIDENT REPORT"
GROUP_B = "GROUP B ARREST REPORT"
ARREST_PREFIX = "arrest-"  # producers.rms: a Group B report's record id is arrest-<number>
# The words IEPD 4.2 writes for the special ages (producers.nibrs.AGE_CODES reads them back).
AGE_WORDS = {"NN": "NEONATAL", "NB": "NEWBORN", "BB": "BABY", "00": "UNKNOWN"}
ROLE_ELEMENTS = {"VICTIM": "Victim", "OFFENDER": "Subject", "ARRESTEE": "Arrestee"}
MAX_RELATIONSHIPS = 10  # the XSD allows ten SubjectVictimAssociations per report


class NotNibrs(MutualaidError, ValueError):
    """An RMS record that no NIBRS report can carry; the message says what it lacks."""


def _q(name: str) -> str:
    prefix, local = name.split(":")
    return f"{{{NS[prefix]}}}{local}"


def _add(parent: Element, name: str, text: object = None, **attrs: str) -> Element:
    element = SubElement(
        parent, _q(name), {_q(k.replace("_", ":", 1)): v for k, v in attrs.items()}
    )
    if text is not None:
        element.text = str(text).lower() if isinstance(text, bool) else str(text)
    return element


def _opt(parent: Element, name: str, text: object) -> None:
    if text is not None and text != "":
        _add(parent, name, text)


def _each(parent: Element, name: str, values: Iterable[object]) -> None:
    for v in values:
        _opt(parent, name, v)


def _id(parent: Element, name: str, identifier: str) -> None:
    _add(_add(parent, name), "nc:IdentificationID", identifier)


def _ori(parent: Element, name: str, ori: str) -> None:
    augmentation = _add(_add(parent, name), "j:OrganizationAugmentation")
    _id(augmentation, "j:OrganizationORIIdentification", ori)


def _date(parent: Element, name: str, iso: str | None) -> None:
    if iso:
        _add(_add(parent, name), "nc:Date", iso)


def _ncname(text: str) -> str:
    """An s:id from a sequence number or code: XML names cannot hold every character."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def submission(event: dict, ori: str, at: datetime | None = None) -> bytes:
    """The NIBRS submission of one RMS event of agency ``ori``; NotNibrs if none can be."""
    envelope, body = event["envelope"], event["body"]
    deleting = envelope["op"] == "DELETE" or body is None
    record_id: str = envelope["record_id"]
    if deleting:
        arrest = record_id.startswith(ARREST_PREFIX)
        category = GROUP_B if arrest else GROUP_A
    else:
        category = body.get("report_type") or (
            GROUP_B if body.get("arrests") and not body.get("incident_number") else GROUP_A
        )
    if category not in (GROUP_A, GROUP_B):
        raise NotNibrs(f"report type {category!r} is neither {GROUP_A} nor {GROUP_B}")
    if deleting:
        action = "D"
    elif envelope["version"] > 1 and body.get("report_action") not in ("I", "A"):
        action = "R"
    else:
        action = body.get("report_action") or ("A" if category == GROUP_B else "I")

    root = Element(_q("nibrs:Submission"))
    metadata = _add(root, "cjis:MessageMetadata")
    _add(metadata, "cjis:MessageDateTime", (at or datetime.now(UTC)).isoformat(timespec="seconds"))
    _id(metadata, "cjis:MessageIdentification", envelope["event_id"])
    _add(metadata, "cjis:MessageImplementationVersion", "4.2")
    _ori(metadata, "cjis:MessageSubmittingOrganization", ori)
    report = _add(root, "nibrs:Report")
    header = _add(report, "nibrs:ReportHeader")
    _add(header, "nibrs:NIBRSReportCategoryCode", category)
    _add(header, "nibrs:ReportActionCategoryCode", action)
    reported = (body or {}).get("report_date") or envelope["occurred_at"].date().isoformat()
    _add(_add(header, "nibrs:ReportDate"), "nc:YearMonthDate", reported[:7])
    _ori(header, "nibrs:ReportingAgency", ori)
    if deleting:
        _deletion(report, category, record_id, envelope["occurred_at"].date().isoformat())
    else:
        _Report(report, body, category).write()
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root) + b"\n"


def _deletion(report: Element, category: str, record_id: str, day: str) -> None:
    if category == GROUP_A:
        incident = _add(report, "nc:Incident")
        _id(incident, "nc:ActivityIdentification", record_id)
        _date(incident, "nc:ActivityDate", day)
        return
    _add(_add(report, "j:Arrestee", s_id="Arrestee1"), "j:ArrestSequenceID", 1)
    arrest = _add(report, "j:Arrest", s_id="Arrest1")
    _id(arrest, "nc:ActivityIdentification", record_id[len(ARREST_PREFIX) :])
    _date(arrest, "nc:ActivityDate", day)
    link = _add(report, "j:ArrestSubjectAssociation")
    _add(link, "nc:Activity", s_ref="Arrest1")
    _add(link, "j:Subject", s_ref="Arrestee1")


class _Report:
    """The report elements of one record's body, each kind in the XSD's order."""

    def __init__(self, report: Element, body: dict[str, Any], category: str) -> None:
        self.report, self.body, self.category = report, body, category
        self.offenses = [o for o in body.get("offenses") or [] if o.get("nibrs_code")]
        self.offense_ids: dict[str, str] = {}
        for n, offense in enumerate(self.offenses, 1):
            self.offense_ids.setdefault(offense["nibrs_code"], f"Offense{n}")
        self.persons = [p for p in body.get("persons") or [] if p.get("role") in ROLE_ELEMENTS]
        self.arrests = body.get("arrests") or []

    def write(self) -> None:
        if self.category == GROUP_A:
            number = self.body.get("incident_number")
            if not number:
                raise NotNibrs("an incident report needs its incident number (NIBRS element 2)")
            self._incident(number)
        elif not any(a.get("arrest_number") for a in self.arrests):
            raise NotNibrs("an arrest report needs its arrest number (NIBRS element 41)")
        self._offenses()
        self._locations()
        self._property()
        self._persons()
        self._roles()
        self._arrests()
        self._associations()

    def _incident(self, number: str) -> None:
        body = self.body
        incident = _add(self.report, "nc:Incident")
        _id(incident, "nc:ActivityIdentification", number)
        day, hour = body.get("incident_date"), body.get("incident_hour")
        if day:
            when = _add(incident, "nc:ActivityDate")
            if hour is not None:
                _add(when, "nc:DateTime", f"{day}T{hour:02d}:00:00")
            else:
                _add(when, "nc:Date", day)
        if (
            body.get("incident_date_is_report_date") is not None
            or body.get("cargo_theft") is not None
        ):
            cjis = _add(incident, "cjis:IncidentAugmentation")
            _opt(cjis, "cjis:IncidentReportDateIndicator", body.get("incident_date_is_report_date"))
            _opt(cjis, "j:OffenseCargoTheftIndicator", body.get("cargo_theft"))
        if body.get("cleared_exceptionally"):
            j = _add(incident, "j:IncidentAugmentation")
            _add(j, "j:IncidentExceptionalClearanceCode", body["cleared_exceptionally"])
            _date(j, "j:IncidentExceptionalClearanceDate", body.get("cleared_exceptionally_date"))

    def _offenses(self) -> None:
        for n, o in enumerate(self.offenses, 1):
            offense = _add(self.report, "j:Offense", s_id=f"Offense{n}")
            _add(offense, "nibrs:OffenseUCRCode", o["nibrs_code"])
            _each(offense, "nibrs:CriminalActivityCategoryCode", o.get("criminal_activities") or [])
            _each(offense, "j:OffenseFactorBiasMotivationCode", o.get("bias_motivations") or [])
            _opt(offense, "j:OffenseStructuresEnteredQuantity", o.get("premises_entered"))
            for factor in o.get("suspected_of_using") or []:
                _add(_add(offense, "j:OffenseFactor"), "j:OffenseFactorCode", factor)
            if o.get("entry_method"):
                _add(
                    _add(offense, "j:OffenseEntryPoint"),
                    "j:PassagePointMethodCode",
                    o["entry_method"],
                )
            for force in o.get("weapons") or ([o["weapon"]] if o.get("weapon") else []):
                _add(_add(offense, "j:OffenseForce"), "j:ForceCategoryCode", force)
            if o.get("attempted_completed") in ("A", "C"):
                _add(offense, "j:OffenseAttemptedIndicator", o["attempted_completed"] == "A")

    def _locations(self) -> None:
        for n, o in enumerate(self.offenses, 1):
            if o.get("location_type"):
                place = _add(self.report, "nc:Location", s_id=f"Location{n}")
                _add(place, "nibrs:LocationCategoryCode", o["location_type"])

    def _property(self) -> None:
        items = self.body.get("property") or []
        # The XSD puts every nc:Item before every nc:Substance.
        for drug in (False, True):
            for p in items:
                if bool(p.get("drug_type") or p.get("drug_measures")) != drug:
                    continue
                element = _add(self.report, "nc:Substance" if drug else "nc:Item")
                if p.get("loss_type") or p.get("status_description"):
                    status = _add(element, "nc:ItemStatus")
                    _opt(status, "cjis:ItemStatusCode", p.get("loss_type"))
                    _opt(status, "nc:StatusDescriptionText", p.get("status_description"))
                if p.get("value_usd") is not None or p.get("recovered_date"):
                    worth = _add(element, "nc:ItemValue")
                    if p.get("value_usd") is not None:
                        amount = p["value_usd"]
                        amount = int(amount) if float(amount).is_integer() else amount
                        _add(_add(worth, "nc:ItemValueAmount"), "nc:Amount", amount)
                    _date(worth, "nc:ItemValueDate", p.get("recovered_date"))
                _opt(element, "j:ItemCategoryNIBRSPropertyCategoryCode", p.get("category"))
                if drug:
                    _opt(element, "j:DrugCategoryCode", p.get("drug_type"))
                    for m in p.get("drug_measures") or []:
                        measure = _add(element, "nc:SubstanceQuantityMeasure")
                        quantity = m.get("quantity")
                        if quantity is not None and float(quantity).is_integer():
                            quantity = int(quantity)
                        _opt(measure, "nc:MeasureDecimalValue", quantity)
                        _opt(measure, "j:SubstanceUnitCode", m.get("unit"))
                else:
                    _opt(element, "nc:ItemQuantity", p.get("quantity"))

    def _person_id(self, n: int) -> str:
        return f"Person{n}"

    def _persons(self) -> None:
        for n, p in enumerate(self.persons, 1):
            person = _add(self.report, "nc:Person", s_id=self._person_id(n))
            _age(person, p)
            _opt(person, "j:PersonEthnicityCode", p.get("ethnicity"))
            _opt(person, "j:PersonRaceNDExCode", p.get("race"))
            _opt(person, "j:PersonResidentCode", p.get("resident_status"))
            _opt(person, "j:PersonSexCode", p.get("sex"))
        for n, p in enumerate(self.persons, 1):
            if p["role"] == "VICTIM" and p.get("officer_activity"):
                officer = _add(self.report, "j:EnforcementOfficial")
                _add(officer, "nc:RoleOfPerson", s_ref=self._person_id(n))
                _opt(
                    officer, "j:EnforcementOfficialActivityCategoryCode", p.get("officer_activity")
                )
                _opt(
                    officer,
                    "j:EnforcementOfficialAssignmentCategoryCode",
                    p.get("officer_assignment"),
                )
                if p.get("officer_other_ori"):
                    _ori(officer, "j:EnforcementOfficialUnit", p["officer_other_ori"])

    def _role_id(self, role: str, sequence: object, n: int) -> str:
        return f"{ROLE_ELEMENTS[role]}{_ncname(str(sequence if sequence is not None else f'p{n}'))}"

    def _roles(self) -> None:
        by_arrestee: dict[str | None, dict[str, Any]] = {}
        for a in self.arrests:
            by_arrestee.setdefault(a.get("arrestee_id"), a)
        for role in ("VICTIM", "OFFENDER", "ARRESTEE"):
            for n, p in enumerate(self.persons, 1):
                if p["role"] != role:
                    continue
                element = _add(
                    self.report,
                    f"j:{ROLE_ELEMENTS[role]}",
                    s_id=self._role_id(role, p.get("person_id"), n),
                )
                _add(element, "nc:RoleOfPerson", s_ref=self._person_id(n))
                if role == "VICTIM":
                    _opt(element, "j:VictimSequenceNumberText", p.get("person_id"))
                    for injury in p.get("injuries") or []:
                        _add(_add(element, "j:VictimInjury"), "j:InjuryCategoryCode", injury)
                    _opt(element, "j:VictimCategoryCode", p.get("victim_type"))
                    _each(
                        element,
                        "j:VictimAggravatedAssaultHomicideFactorCode",
                        p.get("circumstances") or [],
                    )
                    _opt(
                        element,
                        "j:VictimJustifiableHomicideFactorCode",
                        p.get("justifiable_homicide_circumstance"),
                    )
                elif role == "OFFENDER":
                    _opt(element, "j:SubjectSequenceNumberText", p.get("person_id"))
                else:
                    arrest = by_arrestee.get(p.get("person_id"), {})
                    _opt(element, "j:ArrestSequenceID", p.get("person_id"))
                    _opt(element, "j:ArresteeClearanceIndicator", arrest.get("clears_incident"))
                    _each(element, "j:ArresteeArmedWithCode", arrest.get("armed_with") or [])
                    _opt(
                        element,
                        "j:ArresteeJuvenileDispositionCode",
                        arrest.get("juvenile_disposition"),
                    )
                    _opt(
                        element,
                        "j:ArrestSubjectCountCode",
                        arrest.get("multiple_arrestee_indicator"),
                    )

    def _arrests(self) -> None:
        for n, a in enumerate(self.arrests, 1):
            arrest = _add(self.report, "j:Arrest", s_id=f"Arrest{n}")
            if a.get("arrest_number"):
                _id(arrest, "nc:ActivityIdentification", a["arrest_number"])
            _date(arrest, "nc:ActivityDate", a.get("arrest_date"))
            if a.get("charge"):
                _add(_add(arrest, "j:ArrestCharge"), "nibrs:ChargeUCRCode", a["charge"])
            _opt(arrest, "j:ArrestCategoryCode", a.get("arrest_type"))

    def _associations(self) -> None:
        arrestees = {
            p.get("person_id"): self._role_id("ARRESTEE", p.get("person_id"), n)
            for n, p in enumerate(self.persons, 1)
            if p["role"] == "ARRESTEE"
        }
        for n, a in enumerate(self.arrests, 1):
            if a.get("arrestee_id") in arrestees:
                link = _add(self.report, "j:ArrestSubjectAssociation")
                _add(link, "nc:Activity", s_ref=f"Arrest{n}")
                _add(link, "j:Subject", s_ref=arrestees[a["arrestee_id"]])
        for n, o in enumerate(self.offenses, 1):
            if o.get("location_type"):
                link = _add(self.report, "j:OffenseLocationAssociation")
                _add(link, "j:Offense", s_ref=f"Offense{n}")
                _add(link, "nc:Location", s_ref=f"Location{n}")
        victims = [
            (self._role_id("VICTIM", p.get("person_id"), n), p)
            for n, p in enumerate(self.persons, 1)
            if p["role"] == "VICTIM"
        ]
        for victim, p in victims:
            for code in p.get("offenses") or []:
                if code in self.offense_ids:
                    link = _add(self.report, "j:OffenseVictimAssociation")
                    _add(link, "j:Offense", s_ref=self.offense_ids[code])
                    _add(link, "j:Victim", s_ref=victim)
        subjects = {
            p.get("person_id"): self._role_id("OFFENDER", p.get("person_id"), n)
            for n, p in enumerate(self.persons, 1)
            if p["role"] == "OFFENDER"
        }
        written = 0
        for victim, p in victims:
            for r in p.get("relationships") or []:
                if r.get("offender_id") in subjects and written < MAX_RELATIONSHIPS:
                    link = _add(self.report, "j:SubjectVictimAssociation")
                    _add(link, "j:Subject", s_ref=subjects[r["offender_id"]])
                    _add(link, "j:Victim", s_ref=victim)
                    _opt(link, "nibrs:VictimToSubjectRelationshipCode", r.get("relationship"))
                    written += 1


def _age(person: Element, p: dict[str, Any]) -> None:
    code, exact = p.get("age_code"), p.get("age")
    low, high = p.get("age_min"), p.get("age_max")
    if code in AGE_WORDS:
        measure = _add(person, "nc:PersonAgeMeasure")
        _add(measure, "nc:MeasureValueText", AGE_WORDS[code])
    elif exact is not None:
        _add(_add(person, "nc:PersonAgeMeasure"), "nc:MeasureIntegerValue", exact)
    elif low is not None or high is not None:
        ranged = _add(_add(person, "nc:PersonAgeMeasure"), "nc:MeasureIntegerRange")
        _opt(ranged, "nc:RangeMaximumIntegerValue", high)
        _opt(ranged, "nc:RangeMinimumIntegerValue", low)
