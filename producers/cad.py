"""CAD connector: NENA EIDO JSON (NENA-STA-021.1) documents as ``mutualaid.cad.Incident``.

An EIDO is the whole incident (or call) as of one update: a header object whose ``$id`` is the
Incident Tracking Identifier, and lists of data components (``incidentComponent``,
``locationComponent``, ``personComponent``, ...), each with its own ``$id`` and
``lastUpdateTimeStamp``; components point at each other with ``{"$ref": id}``. What is read,
and into which field, is tabled in the README ("CAD: which EIDO components are carried").

Record id, written down because partners' indexes key on it:
- the EIDO's ``$id`` (the Incident Tracking Identifier), or a top-level or incident-component
  ``incidentTrackingIdentifier`` where an earlier draft put it (NENA's ``Sample_EIDO.json``);
- a call-transfer EIDO (no ``incidentComponent``: a call handed to another PSAP before any
  incident exists) is *not* refused: it already carries the Incident Tracking Identifier its
  later EIDOs will carry, so it is version one of that same record, and its call ids are kept in
  ``call_ids`` for a partner to link calls to incidents by;
- NENA reserves the unique string ``0`` (``urn:emergency:uid:incidentid:0:<agency>``) for an EIDO
  that is not part of an incident; such ids repeat, so the record id is then that id, ``/``, and
  the ``$id`` of the incident (else the first call) component, which NENA requires to be the
  same in every EIDO of the incident.

Version: every update must be a higher version of its record, and different content must never
share an event id (event ids derive from record id and version). So the version is the newest
``lastUpdateTimeStamp`` in the document (header or any component) in epoch milliseconds, shifted
left 20 bits, plus 20 bits of the SHA-256 of the document's canonical JSON: a later update
always wins, a re-sent identical document keeps its event id, and two different documents
stamped in the same millisecond differ (but for a 1 in 2^20 chance, stated here rather than
hidden) and are kept in a fixed order.

Key spellings: keys are matched without regard to case (the official sample writes
``LastUpdateTimeStamp`` and ``EIDOVersion``), and ``locationInformationComponent`` (an earlier
draft's name) is read as ``locationComponent``. NIEM values may be plain or wrapped
(``{"value": ...}``, ``{"simpleType": ...}``, lists of them), as NENA's openapi.yaml writes them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

from mutualaid import labels
from mutualaid.events import new_envelope
from mutualaid.plates import normalize_plate
from mutualaid.topics import Kind, check_ori
from producers import pidflo
from producers.contract import Rejected, SourceItem
from producers.jsonlimits import check_depth
from producers.parsing import decode_utf8, epoch_millis, optional_instant, text

SOURCE_SYSTEM = "cad-eido"
MAX_DEPTH = 64  # EIDO nests components a few levels deep; far deeper is not an EIDO
DIGEST_BITS = 20
NOT_AN_INCIDENT = re.compile(r"^urn:emergency:uid:incidentid:0:", re.IGNORECASE)
ALIASES = {"locationinformationcomponent": "locationcomponent"}

# Spellings of the common statuses (the EIDO Incident Status registry and CAD vendors);
# anything else passes through as sent.
STATUSES = {
    "NEW": "RECEIVED",
    "PENDING": "RECEIVED",
    "RECEIVED": "RECEIVED",
    "OPEN": "RECEIVED",
    "DISPATCHED": "DISPATCHED",
    "ASSIGNED": "DISPATCHED",
    "ENROUTE": "ENROUTE",
    "RESPONDING": "ENROUTE",
    "ONSCENE": "ONSCENE",
    "ARRIVED": "ONSCENE",
    "CLEARED": "CLEARED",
    "CLOSED": "CLOSED",
    "COMPLETE": "CLOSED",
    "COMPLETED": "CLOSED",
}


def _lowered(pairs: Any) -> dict[str, Any]:
    return {ALIASES.get(k.lower(), k.lower()): v for k, v in pairs}


class _Object(dict):
    """A JSON object with its members also by lower-cased name, built once while parsing (a
    component is looked at many times)."""

    __slots__ = ("lowered",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.lowered = _lowered(pairs)


class Fields:
    """One EIDO object's members, looked up without regard to the case of their names."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise Rejected("malformed_document", f"{where} must be an object")
        self.where = where
        self.raw = value
        self._by_name = value.lowered if isinstance(value, _Object) else _lowered(value.items())

    def get(self, *names: str) -> Any:
        for name in names:
            value = self._by_name.get(name.lower())
            if value not in (None, "", []):
                return value
        return None

    def text(self, *names: str) -> str | None:
        return niem_text(self.get(*names))

    def texts(self, name: str) -> list[str]:
        value = self.get(name)
        items = value if isinstance(value, list) else [value] if value is not None else []
        return [t for t in (niem_text(v) for v in items) if t]

    def ref(self, name: str) -> str | None:
        value = self.get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        return text(value.get("$ref")) if isinstance(value, dict) else text(value)

    def refs(self, name: str) -> list[str]:
        value = self.get(name) or []
        items = value if isinstance(value, list) else [value]
        return [r for r in (text(v.get("$ref")) for v in items if isinstance(v, dict)) if r]

    def components(self, name: str) -> list[Fields]:
        value = self.get(name)
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        return [Fields(v, f"{name}[{n}]") for n, v in enumerate(items)]

    def time(self, name: str) -> datetime | None:
        return optional_instant(self.get(name), f"{self.where}.{name}")


def niem_text(value: Any) -> str | None:
    """The text of a plain or NIEM-wrapped value: 'x', {"value": 'x'}, [{"simpleType": 'x'}]."""
    if isinstance(value, list):
        return next((t for t in (niem_text(v) for v in value) if t), None)
    if isinstance(value, dict):
        for key in ("value", "simpleType", "identificationId"):
            if key in value:
                return niem_text(value[key])
        return None
    if isinstance(value, bool):
        return None
    return text(value)


def _nested(value: Any, *path: str) -> Any:
    """value[path[0]][0][path[1]][0]...: NIEM wraps nearly everything in one-item lists."""
    for name in path:
        if isinstance(value, list):
            value = value[0] if value else None
        if not isinstance(value, dict):
            return None
        value = Fields(value, name).get(name)
    return value


def _int(value: Any, where: str) -> int | None:
    raw = niem_text(value) if not isinstance(value, int | float) else value
    if raw in (None, ""):
        return None
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise Rejected("bad_value", f"{where} {raw!r} is not a number") from None
    if number != int(number):
        raise Rejected("bad_value", f"{where} {raw!r} is not a whole number")
    return int(number)


def _status(value: str | None) -> str | None:
    if value is None:
        return None
    key = re.sub(r"[\s_-]+", "", value.upper())
    return STATUSES.get(key, value)


def record_id(eido: Fields, incident: Fields | None, calls: list[Fields]) -> tuple[str, str]:
    """(record id, Incident Tracking Identifier), as the module docstring decides them."""
    tracking = (
        eido.text("incidentTrackingIdentifier")
        or (incident.text("incidentTrackingIdentifier") if incident else None)
        or eido.text("$id")
    )
    if tracking is None:
        raise Rejected(
            "missing_incident_id",
            "the EIDO has no $id (its Incident Tracking Identifier) nor incidentTrackingIdentifier",
        )
    if not NOT_AN_INCIDENT.match(tracking):
        return tracking, tracking
    component = (incident.text("$id") if incident else None) or next(
        (c.text("$id") for c in calls if c.text("$id")), None
    )
    if component is None:
        raise Rejected(
            "missing_incident_id",
            f"{tracking} is the not-an-incident form (unique string 0) and there is no incident "
            "or call component $id to tell this incident from others",
        )
    return f"{tracking}/{component}", tracking


def _stamps(eido: Fields) -> Iterator[datetime]:
    """Every lastUpdateTimeStamp in the document: the header's and each component's."""
    own = eido.time("lastUpdateTimeStamp")
    if own is not None:
        yield own
    for name, value in eido.raw.items():
        items = value if isinstance(value, list) else [value]
        for n, component in enumerate(items):
            if isinstance(component, dict) and not name.startswith("@"):
                stamp = Fields(component, f"{name}[{n}]").time("lastUpdateTimeStamp")
                if stamp is not None:
                    yield stamp


def version_of(newest: datetime, doc: dict) -> int:
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:4], "big")
    millis = epoch_millis(newest)
    return (millis << DIGEST_BITS) | (digest >> (32 - DIGEST_BITS))


def _callbacks(eido: Fields) -> dict[str, str]:
    """callback $id -> the number to call back (tel: preferred over sip:)."""
    out = {}
    for callback in eido.components("callbackComponent"):
        uris = callback.texts("callBackInformationUri")
        tel = next((u for u in uris if u.lower().startswith("tel:")), None)
        chosen = tel or (uris[0] if uris else None)
        if chosen and callback.text("$id"):
            out[callback.text("$id")] = re.sub(r"^(tel|sips?):", "", chosen, flags=re.IGNORECASE)
    return out


def _location(component: Fields) -> dict[str, Any]:
    where = f"{component.where}.locationByValue"
    pidf = component.get("locationByValue")
    read = pidflo.read(pidf, where) if isinstance(pidf, str) and pidf.strip() else None
    return {
        "location_id": component.text("$id"),
        "type": component.text("locationTypeDescriptionRegistryText"),
        "description": component.text("locationDescriptionText"),
        "reference_url": component.text("locationByReferenceUrl"),
        "civic": read.civic if read else None,
        "point": read.point if read else None,
        "method": read.method if read else None,
        "problem": read.problem if read else None,
    }


def _primary(locations: list[dict[str, Any]], wanted: list[str], beat: str | None) -> dict | None:
    """The incident's one mutualaid.Location: the one the incident names, else the first
    with an address or a point (what the index maps and agreements' place conditions use)."""
    located = [loc for loc in locations if loc["civic"] or loc["point"]]
    named = [loc for loc in located if loc["location_id"] in wanted]
    chosen = (named or located or [None])[0]
    if chosen is None:
        return (
            {"beat": beat}
            | dict.fromkeys(("address", "city", "state", "postal_code", "latitude", "longitude"))
            if beat
            else None
        )
    civic, point = chosen["civic"] or {}, chosen["point"] or {}
    street = " ".join(
        filter(None, (civic.get(k) for k in ("hno", "hns", "prd", "rd", "sts", "pod")))
    )
    return {
        "address": street or civic.get("loc") or civic.get("nam"),
        "city": civic.get("a3"),
        "state": (civic.get("a1") or "").upper() or None,
        "postal_code": civic.get("pc"),
        "latitude": point.get("latitude"),
        "longitude": point.get("longitude"),
        "beat": beat,
    }


def _birth_date(value: str | None, where: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise Rejected("bad_value", f"{where} {value!r} is not a date (YYYY-MM-DD)") from None


def _person(component: Fields, callbacks: dict[str, str]) -> tuple[dict, labels.Person]:
    where = component.where
    nc = component.get("ncPersonComponent") or {}
    name = _nested(nc, "name")
    dob = _birth_date(
        niem_text(_nested(nc, "birthDate", "date") or _nested(nc, "birthDate")),
        f"{where}.ncPersonComponent.birthDate",
    )
    age_measure = _nested(nc, "ageMeasure")
    age = _int(
        _nested(age_measure, "integerValue")
        or _nested(age_measure, "decimalValue")
        or _nested(age_measure, "value"),
        f"{where}.ncPersonComponent.ageMeasure",
    )
    # UN/ECE time units: ANN years (the default), MON months, WEE weeks, DAY days.
    unit = (niem_text(_nested(age_measure, "timeUnitCode")) or "ANN").upper()
    if age is not None and unit != "ANN":
        age = age // 12 if unit == "MON" else 0 if unit in ("WEE", "DAY", "HUR", "MIN") else age
    low = _int(_nested(age_measure, "integerRange", "rangeMinimumIntegerValue"), f"{where} age")
    high = _int(_nested(age_measure, "integerRange", "rangeMaximumIntegerValue"), f"{where} age")
    person = {
        "person_id": component.text("$id"),
        "roles": component.texts("personIncidentRoleRegistryText"),
        "first_name": niem_text(_nested(name, "personGivenName")),
        "middle_name": niem_text(_nested(name, "personMiddleName")),
        "last_name": niem_text(_nested(name, "personSurName")),
        "full_name": niem_text(_nested(name, "personFullName")),
        "dob": dob.isoformat() if dob else None,
        "age": age,
        "sex": niem_text(_nested(nc, "sexCode") or _nested(nc, "sex")),
        "race": niem_text(_nested(nc, "raceCode") or _nested(nc, "race")),
        "phone": callbacks.get(component.ref("callBackReference") or ""),
        "call_ids": component.texts("callIdentifier"),
    }
    ages = (low, high) if age is None else (age, age)
    return person, labels.Person(ages[0], ages[1], dob)


def _plate(nc: dict) -> tuple[str | None, str | None]:
    """NENA's NIEM subset has no registration-plate element: a vehicle's plate is the state- or
    other identification whose category names a plate or registration (a state identification
    without a category counts: for a vehicle, that is what a state assigns)."""
    for name in ("stateIdentification", "otherIdentification"):
        for ident in Fields(nc, "ncVehicleComponent").get(name) or []:
            if not isinstance(ident, dict):
                continue
            fields = Fields(ident, name)
            category = " ".join(
                filter(
                    None,
                    (
                        fields.text("category"),
                        fields.text("categoryDescription"),
                        fields.text("categoryCode"),
                    ),
                )
            ).lower()
            plate = fields.text("identificationId")
            is_plate = "plate" in category or "registration" in category
            if plate and (is_plate or (name == "stateIdentification" and not category)):
                return normalize_plate(plate) or None, _jurisdiction(fields.get("jurisdiction"))
    return None, None


def _jurisdiction(value: Any) -> str | None:
    if not value:
        return None
    fields = Fields(value[0] if isinstance(value, list) else value, "jurisdiction")
    state = fields.text(
        "locationStateUspsCode",
        "locationStateUsPostalServiceCode",
        "ansiD20AuthorityCode",
        "locationStateName",
        "locationCountryName",
    ) or niem_text(_nested(fields.raw, "identification", "identificationId"))
    return state.upper() if state and len(state) == 2 else state


def _vehicle(component: Fields) -> dict:
    nc = component.get("ncVehicleComponent") or {}
    fields = Fields(nc, f"{component.where}.ncVehicleComponent")
    plate, plate_state = _plate(nc)
    return {
        "vehicle_id": component.text("$id"),
        "relationships": component.texts("vehicleRelationshipType"),
        "plate": plate,
        "plate_state": plate_state,
        "vin": niem_text(_nested(nc, "identification", "identificationId")),
        "make": fields.text("makeName", "makeCode"),
        "model": fields.text("modelName", "modelCode"),
        "year": _int(fields.get("modelYearDate"), f"{fields.where}.modelYearDate"),
        "color": fields.text(
            "colorDescription", "conveyanceColorPrimary", "conveyanceColorPrimaryCode"
        ),
        "style": fields.text("style", "vehicleStyleCode"),
        "description": fields.text("description"),
    }


def _note(component: Fields) -> dict:
    return {
        "note_id": component.text("$id"),
        "at": component.time("lastUpdateTimeStamp"),
        "author": component.ref("agentReference") or component.ref("updatedByAgentReference"),
        "text": component.text("notesActionComments"),
    }


COMMENT = "{urn:ietf:params:xml:ns:EmergencyCallData:Comment}"


def _call_comments(eido: Fields) -> list[dict]:
    """Comments a call brought as RFC 7852 additional data (EmergencyCallData.Comment), as notes.
    Other additional data (provider, service, device info) is the carrier's, not the incident's."""
    notes = []
    for component in eido.components("additionalDataComponent"):
        xml = component.get("additionalDataByValue")
        if not isinstance(xml, str) or "EmergencyCallData:Comment" not in xml:
            continue
        root = pidflo.parse(xml, f"{component.where}.additionalDataByValue")
        for comment in root.iter(f"{COMMENT}Comment"):
            if (comment.text or "").strip():
                notes.append(
                    {
                        "note_id": component.text("$id"),
                        "at": component.time("lastUpdateTimeStamp"),
                        "author": component.ref("updatedByAgencyReference"),
                        "text": comment.text.strip(),
                    }
                )
    return notes


def _narrative(notes: list[dict]) -> str | None:
    lines = []
    for note in notes:
        if note["text"]:
            stamp = note["at"].isoformat() if note["at"] else None
            prefix = " ".join(filter(None, (stamp, note["author"])))
            lines.append(f"[{prefix}] {note['text']}" if prefix else note["text"])
    return "\n".join(lines) or None


def _unit(component: Fields) -> dict:
    return {
        "unit_id": component.text("emergencyResourceName", "$id"),
        # EIDO names agencies by domain (police.example.gov), not by ORI.
        "agency_ori": None,
        "status": _status(component.text("primaryUnitStatusRegistryText")),
        "dispatched_at": None,
        "arrived_at": None,
        "cleared_at": None,
    }


def _links(eido: Fields) -> list[dict]:
    """Linked (PARENT, CHILD, RELATED, UNLINK) and merged or split (REPLACING, REPLACED, SPLIT)
    incidents: how a partner follows an incident whose tracking id was replaced."""
    links = [
        {
            "incident_tracking_id": c.text("incidentTrackingIdentifier"),
            "relation": (c.text(code) or "").upper() or None,
            "reason": c.text("transactionReasonText"),
        }
        for name, code in (
            ("linkComponent", "linkDirectionCode"),
            ("mergeComponent", "incidentMergeDirectionCode"),
        )
        for c in eido.components(name)
    ]
    return [link for link in links if link["incident_tracking_id"]]


def _disposition(incident: Fields | None) -> str | None:
    if incident is None:
        return None
    dispositions = incident.components("dispositionComponent")
    primary = [d for d in dispositions if d.get("dispositionPrimaryIndicator") is True]
    chosen = (primary or dispositions or [None])[0]
    if chosen is None:
        return None
    return chosen.text("dispositionCommonRegistryCode") or chosen.text("dispositionDescriptionText")


class CadAdapter:
    """Turns one EIDO JSON document into one CAD incident event, or rejects it."""

    kind = Kind.CAD_INCIDENT

    def __init__(self, source_ori: str, source_system: str = SOURCE_SYSTEM) -> None:
        self.source_ori = check_ori(source_ori)
        self.source_system = source_system

    def to_event(self, item: SourceItem) -> dict:
        document = decode_utf8(item.raw)
        check_depth(document, MAX_DEPTH)  # json.loads recurses per level: RecursionError
        try:
            doc = json.loads(document, object_pairs_hook=_Object)
        except json.JSONDecodeError as exc:
            raise Rejected(
                "malformed_document", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        except ValueError as exc:  # e.g. an integer of thousands of digits
            raise Rejected("malformed_document", f"not usable JSON: {exc}"[:200]) from None
        if not isinstance(doc, dict):
            raise Rejected("malformed_document", "expected one EIDO JSON object per document")
        eido = Fields(doc, "EIDO")
        incidents = eido.components("incidentComponent")
        incident = incidents[0] if incidents else None
        calls = eido.components("callComponent")
        rid, tracking = record_id(eido, incident, calls)
        stamps = list(_stamps(eido))
        if not stamps:
            raise Rejected(
                "bad_timestamp",
                "EIDO.lastUpdateTimeStamp is missing; expected ISO 8601 with an offset",
            )
        updated = (incident.time("lastUpdateTimeStamp") if incident else None) or max(stamps)
        call_starts = [s for s in (c.time("callStartTimestamp") for c in calls) if s]
        reported = min(call_starts) if call_starts else None
        occurred = reported or min(stamps)

        callbacks = _callbacks(eido)
        persons, people = [], []
        for component in eido.components("personComponent"):
            person, age = _person(component, callbacks)
            persons.append(person)
            people.append(age)
        caller = next((p for p in persons if any(r.lower() == "caller" for r in p["roles"])), None)
        call_phone = next((callbacks.get(c.ref("callBackReference") or "") for c in calls), None)
        locations = [_location(c) for c in eido.components("locationComponent")]
        notes = [_note(c) for c in eido.components("notesComponent")] + _call_comments(eido)
        body = self._incident(incident, updated)
        body |= {
            "incident_tracking_id": tracking,
            "reported_at": reported,
            "location": _primary(
                locations,
                incident.refs("locationReference") if incident else [],
                incident.text("beatOrDispatchGroupText") if incident else None,
            ),
            "units": [_unit(c) for c in eido.components("emergencyResourceComponent")],
            "caller_name": _name(caller) if caller else None,
            "caller_phone": (caller or {}).get("phone") or call_phone,
            "narrative": _narrative(notes),
            "call_ids": [c.text("$id") for c in calls if c.text("$id")],
            "locations": locations,
            "persons": persons,
            "vehicles": [_vehicle(c) for c in eido.components("vehicleComponent")],
            "notes": notes,
            "links": _links(eido),
        }
        envelope = new_envelope(
            source_ori=self.source_ori,
            source_system=self.source_system,
            kind=self.kind,
            record_id=rid,
            version=version_of(max(stamps), doc),
            occurred_at=occurred,
            labels=labels.derive([], people=people, at=occurred),
            source_position=item.position,
        )
        return {"envelope": envelope, "body": body}

    def _incident(self, incident: Fields | None, updated: datetime) -> dict[str, Any]:
        """What the incident component says; all None for a call-transfer EIDO."""
        if incident is None:
            return dict.fromkeys(
                (
                    "incident_number",
                    "incident_type",
                    "incident_type_description",
                    "local_incident_type",
                    "priority",
                    "common_priority",
                    "status",
                    "local_status",
                    "status_at",
                    "closed_at",
                    "disposition",
                )
            )
        where = incident.where
        commons = incident.texts("incidentStatusCommonRegistryText")
        locals_ = incident.texts("incidentStatusInternalText")
        status = _status(commons[0] if commons else locals_[0] if locals_ else None)
        common_priority = _int(
            incident.get("incidentCommonPriorityNumber"), f"{where}.incidentCommonPriorityNumber"
        )
        priority = incident.text("incidentPriorityInternalText")
        return {
            "incident_number": incident.text("internalIncidentId"),
            "incident_type": incident.text(
                "incidentTypeCommonRegistryText", "incidentTypeInternalCode"
            ),
            "incident_type_description": incident.text("incidentTypeInternalText"),
            "local_incident_type": incident.text("incidentTypeInternalCode"),
            "priority": priority or (str(common_priority) if common_priority is not None else None),
            "common_priority": common_priority,
            "status": status,
            "local_status": ", ".join(locals_) or None,
            "status_at": updated,
            "closed_at": updated if status == "CLOSED" else None,
            "disposition": _disposition(incident),
        }


def _name(person: dict) -> str | None:
    parts = (person["first_name"], person["middle_name"], person["last_name"])
    return " ".join(filter(None, parts)) or person["full_name"]
