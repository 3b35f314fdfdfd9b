"""CAD connector: NENA EIDO JSON, one document per incident update, as ``mutualaid.cad.Incident``.

NENA's Emergency Incident Data Object (NENA-STA-021) is how one CAD hands an incident to another.
Each document is the whole incident as of one update; the connector reads the subset below
(component names as in EIDO; a component may be one object or a list, the first is used)::

    {
      "eidoMessageIdentifier": "...",                       # optional
      "incidentComponent": {
        "incidentTrackingIdentifier": "urn:emergency:uid:incidentid:...",   # required: record id
        "localIncidentNumber": "RB-26-001234",
        "incidentTypeCommonRegistryText": "TA",
        "incidentTypeDescription": "Traffic accident",
        "incidentPriority": "1",
        "incidentStatusCommonRegistryText": "Dispatched",
        "lastUpdateTimeStamp": "2026-11-24T21:14:03.120-08:00",   # required: the version
        "incidentCreationTimeStamp": "2026-11-24T21:12:40-08:00",
        "incidentClosedTimeStamp": null,
        "incidentDisposition": null
      },
      "locationComponent": {
        "civicAddress": {"HNO": "120", "RD": "Main", "STS": "St", "A3": "Riverbend",
                         "A1": "CA", "PC": "96150"},          # PIDF-LO (RFC 5139) elements
        "civicAddressText": "120 Main St",                  # used when civicAddress is absent
        "latitude": 38.94, "longitude": -119.98,   # or "gmlPoint": {"pos": "38.94 -119.98"}
        "beat": "B3"
      },
      "callComponent": {"callerName": "...", "callbackNumber": "+1..."},
      "emergencyResourceComponent": [
        {"unitIdentifier": "M12", "agencyIdentifier": "CA0990100", "unitStatus": "Enroute",
         "dispatchedTimeStamp": "...", "arrivedTimeStamp": null, "clearedTimeStamp": null}
      ],
      "notesComponent": [{"noteDateTime": "...", "noteAuthor": "D12", "noteText": "..."}]
    }

The record id is the incident tracking id; the version is ``lastUpdateTimeStamp`` in epoch
milliseconds, so each status change is a higher version of the same record and an older update
arriving late never overwrites a newer one downstream. Times must carry a UTC offset.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from mutualaid.events import new_envelope
from mutualaid.topics import Kind, check_ori
from producers.contract import Rejected, SourceItem
from producers.parsing import decode_utf8, epoch_millis, instant, optional_instant, text

SOURCE_SYSTEM = "cad-eido"

# Vendor spellings of the common statuses; anything else passes through upper-cased.
STATUSES = {
    "NEW": "RECEIVED",
    "PENDING": "RECEIVED",
    "RECEIVED": "RECEIVED",
    "DISPATCHED": "DISPATCHED",
    "ASSIGNED": "DISPATCHED",
    "ENROUTE": "ENROUTE",
    "EN ROUTE": "ENROUTE",
    "RESPONDING": "ENROUTE",
    "ONSCENE": "ONSCENE",
    "ON SCENE": "ONSCENE",
    "ARRIVED": "ONSCENE",
    "CLEARED": "CLEARED",
    "CLOSED": "CLOSED",
    "COMPLETE": "CLOSED",
    "COMPLETED": "CLOSED",
}


def _component(doc: dict, name: str) -> dict:
    value = doc.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rejected("malformed_document", f"{name} must be an object or a list of objects")
    return value


def _status(value: object) -> str | None:
    raw = text(value)
    if raw is None:
        return None
    key = raw.upper().replace("_", " ").replace("-", " ")
    return STATUSES.get(key, STATUSES.get(key.replace(" ", ""), key.replace(" ", "_")))


def _coordinate(value: object, name: str, limit: float) -> float | None:
    if value in (None, ""):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise Rejected("bad_coordinates", f"{name} {value!r} is not a number") from None
    if not -limit <= number <= limit:
        raise Rejected("bad_coordinates", f"{name} {number} is out of range")
    return number


def _location(component: dict) -> dict[str, Any] | None:
    if not component:
        return None
    civic = component.get("civicAddress") or {}
    if not isinstance(civic, dict):
        raise Rejected("malformed_document", "locationComponent.civicAddress must be an object")
    street = " ".join(
        filter(None, (text(civic.get(k)) for k in ("HNO", "HNS", "PRD", "RD", "STS", "POD")))
    )
    lat, lon = component.get("latitude"), component.get("longitude")
    point = component.get("gmlPoint")
    if lat is None and isinstance(point, dict) and isinstance(point.get("pos"), str):
        parts = point["pos"].split()
        if len(parts) != 2:
            raise Rejected("bad_coordinates", f"gmlPoint.pos {point['pos']!r} is not 'lat lon'")
        lat, lon = parts
    return {
        "address": street or text(component.get("civicAddressText")),
        "city": text(civic.get("A3")),
        "state": (text(civic.get("A1")) or "").upper() or None,
        "postal_code": text(civic.get("PC")),
        "latitude": _coordinate(lat, "latitude", 90),
        "longitude": _coordinate(lon, "longitude", 180),
        "beat": text(component.get("beat")),
    }


def _units(doc: dict) -> list[dict[str, Any]]:
    resources = doc.get("emergencyResourceComponent") or []
    if isinstance(resources, dict):
        resources = [resources]
    units = []
    for n, unit in enumerate(resources):
        where = f"emergencyResourceComponent[{n}]"
        if not isinstance(unit, dict):
            raise Rejected("malformed_document", f"{where} is not an object")
        agency = text(unit.get("agencyIdentifier"))
        units.append(
            {
                "unit_id": text(unit.get("unitIdentifier")),
                "agency_ori": agency.upper() if agency else None,
                "status": _status(unit.get("unitStatus")),
                "dispatched_at": optional_instant(
                    unit.get("dispatchedTimeStamp"), f"{where}.dispatchedTimeStamp"
                ),
                "arrived_at": optional_instant(
                    unit.get("arrivedTimeStamp"), f"{where}.arrivedTimeStamp"
                ),
                "cleared_at": optional_instant(
                    unit.get("clearedTimeStamp"), f"{where}.clearedTimeStamp"
                ),
            }
        )
    return units


def _narrative(doc: dict) -> str | None:
    notes = doc.get("notesComponent") or []
    if isinstance(notes, dict):
        notes = [notes]
    lines = []
    for note in notes:
        if isinstance(note, dict) and text(note.get("noteText")):
            stamp = text(note.get("noteDateTime"))
            author = text(note.get("noteAuthor"))
            prefix = " ".join(filter(None, (stamp, author)))
            lines.append(f"[{prefix}] {note['noteText'].strip()}" if prefix else note["noteText"])
    return "\n".join(lines) or None


class CadAdapter:
    """Turns one EIDO JSON document into one CAD incident event, or rejects it."""

    kind = Kind.CAD_INCIDENT

    def __init__(self, source_ori: str, source_system: str = SOURCE_SYSTEM) -> None:
        self.source_ori = check_ori(source_ori)
        self.source_system = source_system

    def to_event(self, item: SourceItem) -> dict:
        try:
            doc = json.loads(decode_utf8(item.raw))
        except json.JSONDecodeError as exc:
            raise Rejected(
                "malformed_document", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        if not isinstance(doc, dict):
            raise Rejected("malformed_document", "expected one EIDO JSON object per document")
        incident = _component(doc, "incidentComponent")
        if not incident:
            raise Rejected("malformed_document", "no incidentComponent: is this an EIDO?")
        record_id = text(incident.get("incidentTrackingIdentifier"))
        if record_id is None:
            raise Rejected(
                "missing_incident_id", "incidentComponent.incidentTrackingIdentifier is missing"
            )
        updated = instant(
            incident.get("lastUpdateTimeStamp") or doc.get("lastUpdateTimeStamp"),
            "incidentComponent.lastUpdateTimeStamp",
        )
        status = _status(incident.get("incidentStatusCommonRegistryText"))
        closed = optional_instant(
            incident.get("incidentClosedTimeStamp"), "incidentComponent.incidentClosedTimeStamp"
        )
        if closed is None and status == "CLOSED":
            closed = updated
        reported = optional_instant(
            incident.get("incidentCreationTimeStamp"),
            "incidentComponent.incidentCreationTimeStamp",
        )
        caller = _component(doc, "callComponent")
        body = {
            "incident_number": text(incident.get("localIncidentNumber")),
            "incident_type": text(incident.get("incidentTypeCommonRegistryText")),
            "incident_type_description": text(incident.get("incidentTypeDescription")),
            "priority": text(incident.get("incidentPriority")),
            "status": status,
            "status_at": updated,
            "reported_at": reported,
            "closed_at": closed,
            "location": _location(_component(doc, "locationComponent")),
            "units": _units(doc),
            "caller_name": text(caller.get("callerName")),
            "caller_phone": text(caller.get("callbackNumber") or caller.get("callerPhone")),
            "narrative": _narrative(doc),
            "disposition": text(incident.get("incidentDisposition")),
        }
        occurred: datetime = reported or updated
        envelope = new_envelope(
            source_ori=self.source_ori,
            source_system=self.source_system,
            kind=self.kind,
            record_id=record_id,
            version=epoch_millis(updated),
            occurred_at=occurred,
            source_position=item.position,
        )
        return {"envelope": envelope, "body": body}
