"""RMS connector: NIBRS XML reports (IEPD 4.2), one per document, as ``mutualaid.rms.Record``.

The FBI's NIBRS XML exchange writes every element in a namespace (``nibrs:``, ``cjis:``, ``j:``,
``nc:``). Namespaces vary between IEPD versions, so elements are matched by *local name* only:
``j:Offense/nibrs:OffenseUCRCode`` and an unprefixed ``Offense/OffenseUCRCode`` read the same.
``producers.nibrs`` reads the report's data elements; this module decides what the document is:

    ReportHeader/
      NIBRSReportCategoryCode   GROUP A INCIDENT REPORT (the default), GROUP B ARREST REPORT,
                                ZERO REPORT
      ReportActionCategoryCode  I (incident) or A (add): UPSERT; R (replace): UPSERT that
                                supersedes; D (delete): DELETE, a tombstone to every partner
      ReportDate                the report month (YearMonthDate), Date or DateTime
      ReportingAgency/.../OrganizationORIIdentification/IdentificationID
                                the owner's ORI: must be the connector's --agency
      ReportSequenceNumber      optional, not IEPD: an explicit version from the RMS
      RecordStatusCode          optional, not IEPD: SEALED or EXPUNGED -> a labelled DELETE
    MessageMetadata/MessageDateTime   when the RMS wrote the document

Report types:

- Group A incident: record id = the incident number (``Incident/ActivityIdentification``).
- Group B arrest: record id = ``arrest-`` + the arrest transaction number (NIBRS element 41,
  ``Arrest/ActivityIdentification``), prefixed because incident numbers and arrest numbers are
  separate series that may collide; the arrest number itself is in ``arrests[].arrest_number``.
- Zero report ("nothing to report this month"): publishes nothing and is no error: the runner
  logs and counts it as skipped, with no dead letter.
- IEPD 4.2 has no time-window submissions (the flat file's "W" action); they are not read.

Versions. A Replace must supersede what it replaces even when both carry the same
MessageDateTime, and two different documents must never get one event id. A version is
``stamp_ms * 10 + rank``: ``stamp_ms`` the MessageDateTime (else the report date) in epoch
milliseconds, ``rank`` the action's (I and A 1, R 2, D 3), so at one time stamp a Replace
outranks its Insert and a Delete both, even with no history. The connector also remembers, per
record, the version and a digest of the content it last published (``state()``; the runner keeps
it in the checkpoint, so a restart decides the same way): a document whose content equals the
last published gets that version again (a replay is the same event); any other content gets at
least the last version + 1. So versions only rise, and the last document read wins whatever its
time stamp says, as the FBI applies submissions in the order it receives them (a drop directory
is read in file-name order: name exports so that they sort in the order written). Records not
seen for ``STATE_DAYS`` (by time stamp) are forgotten, and their next version comes from its
stamp and rank alone. An explicit ``ReportSequenceNumber`` is the version as given; one reused
for different content is dead-lettered (``version_reused``). Times without an offset are read in
the agency's zone (UTC unless told otherwise).

Labels come from ``mutualaid.labels.derive``: ``juvenile`` when an offender or arrestee may have
been under 18 (an exact age, or the lower end of an age range; NN/NB/BB are age 0). Sealed and
expunged reports become a DELETE (body withheld) labelled ``sealed`` or ``expunged``. Documents
are parsed with ``defusedxml``, DTDs forbidden: an instance with entity declarations (billion
laughs, external entities) is rejected, never expanded.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from mutualaid.events import Op, new_envelope
from mutualaid.labels import Person, derive
from mutualaid.topics import Kind, check_ori
from producers.contract import Rejected, Skipped, SourceItem
from producers.nibrs import (
    UCR_DESCRIPTIONS,
    Reading,
    boolean,
    child,
    first_value,
    iso_date,
    strip_namespaces,
    value,
)
from producers.parsing import epoch_millis, text

__all__ = ["UCR_DESCRIPTIONS", "RmsAdapter"]

SOURCE_SYSTEM = "rms-nibrs-xml"
GROUP_A = "GROUP A INCIDENT REPORT"
GROUP_B = "GROUP B ARREST REPORT"
ZERO_REPORT = "ZERO REPORT"
# The action's rank, the version's lowest digit: at one time stamp, Insert < Replace < Delete.
ACTION_RANK = {"I": 1, "A": 1, "R": 2, "D": 3}
STATE_DAYS = 30
_STATE_MS = STATE_DAYS * 24 * 3600 * 1000


class RmsAdapter:
    """Turns one NIBRS XML report into one RMS record event, or rejects (or skips) it."""

    kind = Kind.RMS_RECORD

    def __init__(
        self, source_ori: str, source_system: str = SOURCE_SYSTEM, zone: tzinfo = UTC
    ) -> None:
        self.source_ori = check_ori(source_ori)
        self.source_system = source_system
        self.zone = zone
        # record id -> the last published: version "v", content digest "d", time stamp "t" (ms,
        # 0 if none). Entries are replaced, never changed in place, so a snapshot stays as it
        # was taken.
        self._last: dict[str, dict[str, Any]] = {}
        self._newest = 0

    # The runner's StatefulAdapter protocol: saved with the checkpoint, restored from it.
    def state(self) -> dict[str, Any]:
        horizon = self._newest - _STATE_MS
        # Entries without a time stamp (explicit sequence numbers only) are kept.
        self._last = {k: v for k, v in self._last.items() if v["t"] == 0 or v["t"] >= horizon}
        return {"records": dict(self._last), "newest": self._newest}

    def restore(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        self._last = {str(k): dict(v) for k, v in (state.get("records") or {}).items()}
        self._newest = int(state.get("newest") or 0)

    def to_event(self, item: SourceItem) -> dict:
        root = self._parse(item.raw)
        report = next(root.iter("Report"), root)
        header = child(report, "ReportHeader")
        category = (value(header, "NIBRSReportCategoryCode") or GROUP_A).upper()
        if category not in {GROUP_A, GROUP_B, ZERO_REPORT}:
            raise Rejected(
                "bad_report_category",
                f"NIBRSReportCategoryCode {category!r} is not {GROUP_A}, {GROUP_B} or "
                f"{ZERO_REPORT}",
            )
        action = (value(header, "ReportActionCategoryCode") or "I").upper()
        if action not in ACTION_RANK:
            raise Rejected(
                "bad_report_action", f"ReportActionCategoryCode {action!r} is not I, A, R or D"
            )
        self._check_ori(header)
        reported = self._time(header, "ReportDate") or self._time(header, "ReportDateTime")
        if category == ZERO_REPORT:
            month = reported.strftime("%Y-%m") if reported else "an unstated month"
            raise Skipped(f"zero report for {month} (nothing to report)")
        reading = Reading(report)
        incident = child(report, "Incident")
        if category == GROUP_B:
            number = next(
                (
                    n
                    for a in reading.arrests
                    if (n := value(a, "ActivityIdentification", "IdentificationID"))
                ),
                None,
            )
            if number is None:
                raise Rejected(
                    "missing_arrest_number",
                    "a Group B arrest report needs Arrest/ActivityIdentification/"
                    "IdentificationID (NIBRS element 41, the arrest transaction number)",
                )
            record_id = f"arrest-{number}"
            first_arrest = reading.arrests[0] if reading.arrests else None
            happened = self._time(first_arrest, "ActivityDate")
        else:
            number = value(incident, "ActivityIdentification", "IdentificationID")
            if number is None:
                raise Rejected(
                    "missing_incident_id",
                    "a Group A incident report needs Incident/ActivityIdentification/"
                    "IdentificationID (NIBRS element 2, the incident number)",
                )
            record_id = number
            happened = self._time(incident, "ActivityDate")
        metadata = child(root, "MessageMetadata")
        written = self._time(metadata if metadata is not None else root, "MessageDateTime")
        occurred = happened or reported or written
        if occurred is None:
            raise Rejected(
                "missing_time", "no incident or arrest date, ReportDate or MessageDateTime"
            )
        record_status = (value(header, "RecordStatusCode") or "").upper()
        given = [record_status.lower()] if record_status in {"SEALED", "EXPUNGED"} else []
        delete = action == "D" or bool(given)
        body = None if delete else self._body(reading, report, incident, category, action)
        if body is None:
            labels = derive(given)
        else:
            at = happened.date() if happened else None
            labels = derive(
                given,
                people=[
                    Person(p["age_min"], p["age_max"])
                    for p in body["persons"]
                    if p["role"] in {"OFFENDER", "ARRESTEE"}
                ],
                at=at,
            )
        op: Op = "DELETE" if delete else "UPSERT"
        stamp = written or reported
        version = self._version(
            record_id, header, stamp, action, _digest(op, labels, occurred, body)
        )
        envelope = new_envelope(
            source_ori=self.source_ori,
            source_system=self.source_system,
            kind=self.kind,
            record_id=record_id,
            version=version,
            occurred_at=occurred,
            op=op,
            labels=labels,
            source_position=item.position,
        )
        return {"envelope": envelope, "body": body}

    def _body(
        self,
        reading: Reading,
        report: Element,
        incident: Element | None,
        category: str,
        action: str,
    ) -> dict[str, Any]:
        happened_at = child(incident, "ActivityDate")
        happened = self._time(incident, "ActivityDate")
        reported = self._time(child(report, "ReportHeader"), "ReportDate")
        return {
            "incident_number": value(incident, "ActivityIdentification", "IdentificationID"),
            "report_type": category,
            "report_action": action,
            "report_date": reported.date().isoformat() if reported else None,
            "incident_date": happened.date().isoformat() if happened else None,
            "incident_hour": self._hour(incident, happened_at, happened),
            "incident_date_is_report_date": boolean(
                first_value(incident, "IncidentReportDateIndicator"),
                "IncidentReportDateIndicator",
            ),
            "location": None,
            "cleared_exceptionally": first_value(incident, "IncidentExceptionalClearanceCode"),
            "cleared_exceptionally_date": iso_date(
                next(incident.iter("IncidentExceptionalClearanceDate"), None)
                if incident is not None
                else None,
                "IncidentExceptionalClearanceDate",
            ),
            "cargo_theft": boolean(
                first_value(incident, "OffenseCargoTheftIndicator"), "OffenseCargoTheftIndicator"
            ),
            "status": first_value(incident, "IncidentStatusCode"),
            "offenses": reading.offense_list(),
            "persons": reading.person_list(),
            "vehicles": reading.vehicle_list(),
            "property": reading.property_list(),
            "arrests": reading.arrest_list(),
            "narrative": first_value(report, "ReportNarrativeText", "Narrative"),
        }

    @staticmethod
    def _hour(
        incident: Element | None, activity_date: Element | None, happened: datetime | None
    ) -> int | None:
        hour = value(incident, "IncidentHour")
        if hour is not None:
            if not hour.isdigit() or not 0 <= int(hour) <= 23:
                raise Rejected("bad_timestamp", f"IncidentHour {hour!r} is not 0-23")
            return int(hour)
        # An ActivityDate with a Date only says nothing about the hour (NIBRS: hour unknown).
        timed = value(activity_date, "DateTime") is not None or "T" in (
            text(activity_date.text) or "" if activity_date is not None else ""
        )
        return happened.hour if happened is not None and timed else None

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

    def _check_ori(self, header: Element | None) -> None:
        agency = child(header, "ReportingAgency")
        ori_element = (
            next(agency.iter("OrganizationORIIdentification"), None) if agency is not None else None
        )
        ori = value(ori_element, "IdentificationID")
        if ori is not None and ori.upper() != self.source_ori:
            raise Rejected(
                "ori_mismatch",
                f"the report's ReportingAgency ORI {ori!r} is not {self.source_ori}, the agency "
                "this connector publishes for (--agency): another agency's report is never "
                f"published under this one; run a connector with --agency {ori} or fix the "
                "RMS export",
            )

    def _time(self, parent: Element | None, name: str) -> datetime | None:
        """A time from ``name``'s text or its DateTime, else Date, else YearMonthDate child.

        By preference, not by document order: an ActivityDate holding a YearMonthDate, a
        DateTime and a Date (as the IEPD's own samples do) is the DateTime.
        """
        element = child(parent, name)
        if element is None:
            return None
        raw = text(element.text) or next(
            (v for tag in ("DateTime", "Date", "YearMonthDate") if (v := value(element, tag))),
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

    def _version(
        self,
        record_id: str,
        header: Element | None,
        stamped: datetime | None,
        action: str,
        digest: str,
    ) -> int:
        """The version of this document of ``record_id``; remembers it (see the module doc)."""
        stamp = epoch_millis(stamped) if stamped is not None else None
        last = self._last.get(record_id)
        sequence = value(header, "ReportSequenceNumber")
        if sequence is not None:
            if not sequence.isdigit() or int(sequence) < 1:
                raise Rejected(
                    "bad_version", f"ReportSequenceNumber {sequence!r} is not a positive integer"
                )
            version = int(sequence)
            if last is not None and last["v"] == version and last["d"] != digest:
                raise Rejected(
                    "version_reused",
                    f"ReportSequenceNumber {version} of {record_id} was already published with "
                    "other content; the RMS must number each new version higher",
                )
        elif stamp is None:
            raise Rejected(
                "missing_version",
                "no ReportSequenceNumber, MessageDateTime or ReportDate to order versions by",
            )
        else:
            version = stamp * 10 + ACTION_RANK[action]
            if last is not None:
                # The same content as the last published is the same event; anything else
                # comes after it, whatever its time stamp: the last document read wins.
                version = last["v"] if last["d"] == digest else max(version, last["v"] + 1)
        self._last[record_id] = {"v": version, "d": digest, "t": stamp or 0}
        self._newest = max(self._newest, stamp or 0)
        return version


def _digest(op: str, labels: list[str], occurred: datetime, body: dict | None) -> str:
    """What makes two versions the same event: op, labels, time and body (not the file name).
    The body is built in one fixed key order, so its JSON needs no sorting."""
    canonical = json.dumps(
        [op, labels, occurred.isoformat(), body], separators=(",", ":"), check_circular=False
    )
    return hashlib.blake2b(canonical.encode(), digest_size=12).hexdigest()
