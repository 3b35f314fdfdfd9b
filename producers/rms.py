"""RMS connector: NIBRS XML incident reports, one per document, as ``mutualaid.rms.Record``.

The FBI's NIBRS XML exchange (the NIEM-based IEPD, 4.2 and 2025.0) writes every element in a
namespace (``nibrs:``, ``cjis:``, ``j:``, ``nc:``). Namespaces vary between IEPD versions, so
elements are matched by *local name* only: ``j:Offense/j:OffenseUCRCode``, ``nibrs:OffenseUCRCode``
and an unprefixed ``Offense/OffenseUCRCode`` read the same. What is read (any nesting under the
``Report`` element, or the document root if there is none)::

    ReportHeader/
      ReportActionCategoryCode        I insert, R replace -> UPSERT; D delete -> DELETE
      ReportSequenceNumber            optional explicit version (a positive integer)
      ReportDateTime | ReportDate     the report's time (DateTime, Date or YearMonthDate inside)
      RecordStatusCode                SEALED or EXPUNGED -> DELETE labelled sealed / expunged
    MessageMetadata/MessageDateTime   when the RMS wrote the document (cjis:MessageMetadata)
    Incident/
      ActivityIdentification/IdentificationID   the incident number: the record id (required)
      ActivityDate/DateTime                     incident date and hour
      IncidentExceptionalClearanceCode          A-E or N
      IncidentStatusCode                        the owner's case status (optional)
    Offense/  OffenseUCRCode, OffenseAttemptedIndicator (true/false) or
              OffenseAttemptedCompletedCode (A/C), LocationCategoryCode, ForceCategoryCode
    Location/LocationCategoryCode (via OffenseLocationAssociation, as NIEM links them)
    Person[@id]/  PersonAgeMeasure/MeasureIntegerValue | PersonAge, PersonSexCode,
                  PersonRaceNDExCode | PersonRaceCode, PersonEthnicityCode
    Victim | Subject | Arrestee/  RoleOfPerson[@ref] -> the Person; or the person fields inline;
                  VictimSequenceNumberText etc. -> person_id
    Vehicle/  VehicleMakeCode, VehicleModelCode, ItemModelYearDate, ItemColorDescriptionText,
              VehicleIdentification/IdentificationID (VIN),
              ConveyanceRegistrationPlateIdentification/IdentificationID and
              .../IdentificationJurisdictionText (the plate and its state)
    Item/     ItemDescriptionText | ItemCategoryNIBRSPropertyCategoryCode, ItemStatus/ItemStatusCode
              (the loss type: STOLEN, RECOVERED, ...), ItemValue/ItemValueAmount/Amount
    ReportNarrativeText | Narrative

Versions: an explicit ``ReportSequenceNumber`` if the RMS sends one, else the message
date-time, else the report date-time, in epoch milliseconds (a later submission of the same
incident is a higher version). Times without an offset are read in the agency's zone (UTC
unless told otherwise).

A report with an offender or arrestee under 18 is labelled ``juvenile``, which agreements
exclude unless they say otherwise.

Sealed and expunged reports become a DELETE (a tombstone downstream, body withheld) labelled
``sealed`` or ``expunged``: a sealed record must leave every partner's index, and a DELETE is
what makes the router send the tombstone. Documents are parsed with ``defusedxml``, DTDs
forbidden: an instance with entity declarations (billion laughs, external entities) is
rejected, never expanded.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from mutualaid.events import new_envelope
from mutualaid.plates import normalize_plate
from mutualaid.topics import Kind, check_ori
from producers.contract import Rejected, SourceItem
from producers.parsing import epoch_millis, text

SOURCE_SYSTEM = "rms-nibrs-xml"
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
}


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
def attr(element: Element, name: str) -> str | None:
    return element.get(name)


def child(element: Element | None, *path: str) -> Element | None:
    return element.find("/".join(path)) if element is not None else None


def value(element: Element | None, *path: str) -> str | None:
    found = child(element, *path)
    return text(found.text) if found is not None else None


def descendants(element: Element, name: str) -> Iterator[Element]:
    return element.iter(name)


def first_value(element: Element, *names: str) -> str | None:
    """The text of the first descendant with any of these local names."""
    for name in names:
        for found in descendants(element, name):
            if text(found.text):
                return text(found.text)
    return None


class RmsAdapter:
    """Turns one NIBRS XML report into one RMS record event, or rejects it."""

    kind = Kind.RMS_RECORD

    def __init__(
        self, source_ori: str, source_system: str = SOURCE_SYSTEM, zone: tzinfo = UTC
    ) -> None:
        self.source_ori = check_ori(source_ori)
        self.source_system = source_system
        self.zone = zone

    def to_event(self, item: SourceItem) -> dict:
        root = self._parse(item.raw)
        report = next(descendants(root, "Report"), root)
        header = child(report, "ReportHeader")
        incident = child(report, "Incident")
        number = value(incident, "ActivityIdentification", "IdentificationID")
        if number is None:
            raise Rejected(
                "missing_incident_id", "Incident/ActivityIdentification/IdentificationID is missing"
            )
        action = (value(header, "ReportActionCategoryCode") or "I").upper()
        if action not in {"I", "R", "D"}:
            raise Rejected(
                "bad_report_action", f"ReportActionCategoryCode {action!r} is not I, R or D"
            )
        reported = self._time(header, "ReportDateTime") or self._time(header, "ReportDate")
        metadata = child(root, "MessageMetadata")
        written = self._time(metadata if metadata is not None else root, "MessageDateTime")
        happened = self._time(incident, "ActivityDate")
        version = self._version(header, written or reported)
        record_status = (value(header, "RecordStatusCode") or "").upper()
        labels = [record_status.lower()] if record_status in {"SEALED", "EXPUNGED"} else []
        delete = action == "D" or bool(labels)
        envelope = new_envelope(
            source_ori=self.source_ori,
            source_system=self.source_system,
            kind=self.kind,
            record_id=number,
            version=version,
            occurred_at=happened or reported or written,  # type: ignore[arg-type]
            op="DELETE" if delete else "UPSERT",
            labels=labels,
            source_position=item.position,
        )
        if delete:
            return {"envelope": envelope, "body": None}
        persons = self._persons(report)
        if any(
            p["role"] in {"OFFENDER", "ARRESTEE"} and p["age"] is not None and p["age"] < 18
            for p in persons
        ):
            # Juvenile records are protected by law in every state: agreements exclude them.
            envelope["labels"] = sorted({*envelope["labels"], "juvenile"})
        body = {
            "incident_number": number,
            "report_date": reported.date().isoformat() if reported else None,
            "incident_date": happened.date().isoformat() if happened else None,
            "incident_hour": self._hour(incident, happened),
            "location": None,
            "cleared_exceptionally": self._incident_value(
                incident, "IncidentExceptionalClearanceCode"
            ),
            "status": self._incident_value(incident, "IncidentStatusCode"),
            "offenses": self._offenses(report),
            "persons": persons,
            "vehicles": self._vehicles(report),
            "property": self._property(report),
            "narrative": first_value(report, "ReportNarrativeText", "Narrative"),
        }
        return {"envelope": envelope, "body": body}

    def _parse(self, raw: bytes) -> Element:
        try:
            root = fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        except DefusedXmlException as exc:
            raise Rejected(
                "unsafe_xml",
                f"refused: {type(exc).__name__} (DTDs and entity declarations are not allowed "
                "in NIBRS instances; nothing was expanded)",
            ) from None
        except ParseError as exc:
            raise Rejected(
                "malformed_document", f"not well-formed XML: {exc} (truncated or wrong encoding?)"
            ) from None
        return strip_namespaces(root)

    def _time(self, parent: Element | None, name: str) -> datetime | None:
        """A time from ``name``'s text or its DateTime/Date/YearMonthDate child."""
        element = child(parent, name)
        if element is None:
            return None
        raw = text(element.text) or next(
            (
                text(e.text)
                for e in element.iter()
                if e.tag in {"DateTime", "Date", "YearMonthDate"} and text(e.text)
            ),
            None,
        )
        if raw is None:
            return None
        try:
            if len(raw) == 7:  # YearMonthDate, as NIBRS reports the report month
                parsed = datetime.combine(date.fromisoformat(raw + "-01"), datetime.min.time())
            else:
                parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise Rejected(
                "bad_timestamp", f"{raw!r} in {name} is not an ISO 8601 date or date-time"
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=self.zone)

    def _version(self, header: Element | None, stamped: datetime | None) -> int:
        sequence = value(header, "ReportSequenceNumber")
        if sequence is not None:
            if not sequence.isdigit() or int(sequence) < 1:
                raise Rejected(
                    "bad_version", f"ReportSequenceNumber {sequence!r} is not a positive integer"
                )
            return int(sequence)
        if stamped is None:
            raise Rejected(
                "missing_version",
                "no ReportSequenceNumber, MessageDateTime or ReportDate to order versions by",
            )
        return epoch_millis(stamped)

    def _hour(self, incident: Element | None, happened: datetime | None) -> int | None:
        hour = value(incident, "IncidentHour")
        if hour is not None:
            if not hour.isdigit() or not 0 <= int(hour) <= 23:
                raise Rejected("bad_timestamp", f"IncidentHour {hour!r} is not 0-23")
            return int(hour)
        # An ActivityDate with a Date only says nothing about the hour.
        timed = child(incident, "ActivityDate", "DateTime") is not None
        return happened.hour if happened is not None and timed else None

    @staticmethod
    def _incident_value(incident: Element | None, name: str) -> str | None:
        return first_value(incident, name) if incident is not None else None

    def _offense_locations(self, report: Element) -> dict[str, str]:
        """Offense id -> location category, from NIEM's OffenseLocationAssociation."""
        locations = {
            attr(e, "id"): value(e, "LocationCategoryCode")
            for e in descendants(report, "Location")
            if attr(e, "id")
        }
        out = {}
        for link in descendants(report, "OffenseLocationAssociation"):
            offense, place = child(link, "Offense"), child(link, "Location")
            if offense is not None and place is not None:
                code = locations.get(attr(place, "ref"))
                if attr(offense, "ref") and code:
                    out[attr(offense, "ref") or ""] = code
        return out

    def _offenses(self, report: Element) -> list[dict[str, Any]]:
        located = self._offense_locations(report)
        offenses = []
        for offense in descendants(report, "Offense"):
            code = value(offense, "OffenseUCRCode")
            if code is None:  # a reference inside an association, not an offense
                continue
            attempted = (value(offense, "OffenseAttemptedIndicator") or "").lower()
            status = value(offense, "OffenseAttemptedCompletedCode") or {
                "true": "A",
                "false": "C",
            }.get(attempted)
            offenses.append(
                {
                    "nibrs_code": code.upper(),
                    "description": UCR_DESCRIPTIONS.get(code.upper()),
                    "attempted_completed": status.upper() if status else None,
                    "location_type": value(offense, "LocationCategoryCode")
                    or located.get(attr(offense, "id") or ""),
                    "weapon": first_value(offense, "ForceCategoryCode"),
                }
            )
        return offenses

    def _persons(self, report: Element) -> list[dict[str, Any]]:
        people = {attr(p, "id"): p for p in descendants(report, "Person") if attr(p, "id")}
        persons = []
        for name, role in ROLES.items():
            for element in descendants(report, name):
                link = child(element, "RoleOfPerson")
                ref = attr(link, "ref") if link is not None else None
                person = people.get(ref, element) if ref else element
                age = first_value(person, "MeasureIntegerValue", "PersonAge", "MeasureValueText")
                if age is not None and not age.isdigit():
                    age = None  # NIBRS age codes such as NN (under 24 hours) or 99+ ranges
                persons.append(
                    {
                        "person_id": value(element, f"{name}SequenceNumberText")
                        or attr(element, "id"),
                        "role": role,
                        "age": int(age) if age is not None else None,
                        "sex": first_value(person, "PersonSexCode"),
                        "race": first_value(person, "PersonRaceNDExCode", "PersonRaceCode"),
                        "ethnicity": first_value(person, "PersonEthnicityCode"),
                    }
                )
        return persons

    def _vehicles(self, report: Element) -> list[dict[str, Any]]:
        vehicles = []
        for vehicle in descendants(report, "Vehicle"):
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
                    )
                    if plate is not None
                    else None,
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

    def _property(self, report: Element) -> list[dict[str, Any]]:
        items = []
        for element in descendants(report, "Item"):
            amount = first_value(element, "Amount")
            try:
                worth = float(amount) if amount is not None else None
            except ValueError:
                raise Rejected(
                    "bad_value", f"Item value {amount!r} is not a number of dollars"
                ) from None
            items.append(
                {
                    "description": value(element, "ItemDescriptionText")
                    or value(element, "ItemCategoryNIBRSPropertyCategoryCode"),
                    "loss_type": first_value(element, "ItemStatusCode"),
                    "value_usd": worth,
                }
            )
        return items
