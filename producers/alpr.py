"""ALPR connector: vendor CSV exports, mapped column by column onto ``mutualaid.alpr.Read``.

There is no common ALPR export standard, so each vendor layout gets a small mapping file
(``deploy/mappings/alpr/*.yaml``) naming which column holds which field, how times are written
and in which zone, rather than code per vendor.
"""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mutualaid import labels as vocabulary
from mutualaid.configfile import load_model
from mutualaid.events import new_envelope
from mutualaid.plates import normalize_plate
from mutualaid.topics import Kind
from producers.contract import Rejected, SourceItem
from producers.jsonlimits import ReadLimits, check_depth

DEFAULT_MAPPING = Path("deploy/mappings/alpr/mutualaid.yaml")


class AlprField(StrEnum):
    RECORD_ID = "record_id"
    PLATE = "plate"
    PLATE_STATE = "plate_state"
    OCCURRED_AT = "occurred_at"
    CONFIDENCE = "confidence"
    CAMERA_ID = "camera_id"
    CAMERA_NAME = "camera_name"
    LATITUDE = "latitude"
    LONGITUDE = "longitude"
    HEADING = "heading"
    VEHICLE_MAKE = "vehicle_make"
    VEHICLE_MODEL = "vehicle_model"
    VEHICLE_COLOR = "vehicle_color"
    IMAGE_REF = "image_ref"


TEXT_FIELDS = (
    AlprField.CAMERA_ID,
    AlprField.CAMERA_NAME,
    AlprField.HEADING,
    AlprField.VEHICLE_MAKE,
    AlprField.VEHICLE_MODEL,
    AlprField.VEHICLE_COLOR,
    AlprField.IMAGE_REF,
)


class AlprMapping(BaseModel):
    """Which vendor column holds which field of a read, and how to read its values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="the layout's name, e.g. vigilant-csv")
    format: Literal["csv", "ndjson"] = Field(
        "csv",
        description="csv (header line, one read per line) or ndjson (one JSON object per line)",
    )
    source_system: str = Field(description="recorded on every event, e.g. alpr-csv:vigilant")
    delimiter: str = Field(",", min_length=1, max_length=1, description="one character")
    columns: dict[AlprField, str] = Field(
        description="our field -> the vendor's column header; plate and occurred_at are required"
    )
    timezone: str = Field("UTC", description="IANA zone for times written without an offset")
    timestamp_format: str | None = Field(
        None, description="strptime pattern; leave out for ISO 8601"
    )
    confidence_scale: float = Field(
        1.0, gt=0, description="what the vendor's full confidence is: 1 or 100"
    )
    labels: list[str] = Field(
        [], description="labels every read of this export carries, e.g. [investigation_open]"
    )

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, names: list[str]) -> list[str]:
        # Checked when the mapping loads: a typo must not become a label that protects nothing.
        return vocabulary.check_all(names)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone such as America/Chicago"
            ) from None
        return value

    @field_validator("columns")
    @classmethod
    def _required_columns(cls, columns: dict[AlprField, str]) -> dict[AlprField, str]:
        missing = {AlprField.PLATE, AlprField.OCCURRED_AT} - set(columns)
        if missing:
            raise ValueError(f"columns must map {', '.join(sorted(missing))}")
        return columns


def _json_row(text: str, limits: ReadLimits, mapped: frozenset[str]) -> dict[str, str]:
    check_depth(text, limits.max_depth)  # before json.loads, which recurses per level
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Rejected("malformed_row", f"not JSON: {exc.msg} at column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise Rejected("malformed_row", f"not usable JSON: {exc}") from None
    if not isinstance(row, dict):
        raise Rejected(
            "malformed_row", f"expected a JSON object per line, got {type(row).__name__}"
        )
    if len(row) > limits.max_fields:
        raise Rejected(
            "too_many_fields",
            f"{len(row):,} fields in one read; at most {limits.max_fields} are accepted",
        )
    nested = sorted(k for k, v in row.items() if k in mapped and isinstance(v, dict | list))
    if nested:
        raise Rejected(
            "malformed_row",
            f"{', '.join(map(repr, nested))} must hold text or a number, not an object or array",
        )
    # One text form for every value, so CSV and NDJSON go through the same field parsers;
    # nested vendor extras that no column maps are left out.
    return {
        k: "" if v is None else str(v) for k, v in row.items() if not isinstance(v, dict | list)
    }


def record_id(camera_id: str | None, read_id: str) -> str:
    """A read's record id, namespaced by the camera that took it: ``<camera>/<read id>``.

    Read ids are unique per camera at best (often a camera's own counter), and the owner's ORI
    already namespaces every record id by agency (event ids and keys include it). With the
    camera in the id, no camera can publish a read that replaces, or hides as a duplicate,
    another camera's read. ``%`` and ``/`` in the camera id are escaped so the first ``/``
    always ends it and two different (camera, read id) pairs never give the same record id.
    A read naming no camera (an export without a camera column) keeps its read id as is.
    """
    if not camera_id:
        return read_id
    return f"{camera_id.replace('%', '%25').replace('/', '%2F')}/{read_id}"


def load_mapping(path: Path) -> AlprMapping:
    return load_model(path, AlprMapping)


class AlprAdapter:
    """Turns one export line (CSV or NDJSON) into one ALPR read event, or rejects it."""

    kind = Kind.ALPR_READ

    def __init__(
        self,
        mapping: AlprMapping,
        header: bytes,
        source_ori: str,
        limits: ReadLimits | None = None,
    ) -> None:
        """``header`` is the CSV's first line; NDJSON has none (pass b""). ``limits`` bound
        each read (default: as in the settings' defaults)."""
        self.mapping = mapping
        self.limits = limits or ReadLimits()
        self._mapped = frozenset(mapping.columns.values())
        self.source_system = mapping.source_system
        self.source_ori = source_ori
        self.zone = ZoneInfo(mapping.timezone)
        if mapping.format == "ndjson":
            self.header = []
            return
        try:
            self.header = next(
                csv.reader([header.decode("utf-8-sig")], delimiter=mapping.delimiter)
            )
        except csv.Error as exc:
            raise ValueError(f"the file's first line is not a CSV header: {exc}") from None
        absent = [c for c in mapping.columns.values() if c not in self.header]
        if absent:
            raise ValueError(
                f"mapping {mapping.name!r} expects columns {absent} that the file's header "
                f"({', '.join(self.header)}) does not have: wrong --mapping for this export?"
            )

    def to_event(self, item: SourceItem) -> dict:
        row = self._row(item.raw)
        plate = normalize_plate(self._text(row, AlprField.PLATE) or "")
        if not plate:
            raise Rejected("missing_plate", f"no plate in column {self._column(AlprField.PLATE)!r}")
        occurred = self._time(row)
        body = {
            "plate": plate,
            "plate_state": (self._text(row, AlprField.PLATE_STATE) or "").upper() or None,
            "confidence": self._confidence(row),
            "latitude": self._coordinate(row, AlprField.LATITUDE, 90),
            "longitude": self._coordinate(row, AlprField.LONGITUDE, 180),
            **{str(f): self._text(row, f) for f in TEXT_FIELDS},
        }
        read_id = self._text(row, AlprField.RECORD_ID) or self._derived_id(body, occurred)
        camera = body["camera_id"]  # text, or None
        envelope = new_envelope(
            source_ori=self.source_ori,
            source_system=self.source_system,
            kind=self.kind,
            record_id=record_id(camera if isinstance(camera, str) else None, read_id),
            version=1,  # a read never changes; a correction is a delete plus a new read
            occurred_at=occurred,
            labels=vocabulary.derive(self.mapping.labels),
            source_position=f"line {item.line}",
        )
        return {"envelope": envelope, "body": body}

    def _row(self, raw: bytes) -> dict[str, str]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected(
                "bad_encoding",
                f"byte 0x{raw[exc.start]:02x} at position {exc.start} is not UTF-8; "
                "export the file as UTF-8",
            ) from None
        if self.mapping.format == "ndjson":
            return _json_row(text, self.limits, self._mapped)
        try:
            values = next(csv.reader([text], delimiter=self.mapping.delimiter), [])
        except csv.Error as exc:  # a field past csv's size limit, a bare carriage return
            raise Rejected("malformed_row", f"not a CSV line: {exc}") from None
        if len(values) != len(self.header):
            raise Rejected(
                "malformed_row",
                f"expected {len(self.header)} columns as in the header, found {len(values)}",
            )
        return dict(zip(self.header, values, strict=True))

    def _column(self, field: AlprField) -> str | None:
        return self.mapping.columns.get(field)

    def _text(self, row: dict[str, str], field: AlprField) -> str | None:
        column = self._column(field)
        value = row.get(column, "").strip() if column else ""
        if len(value) > self.limits.max_text:
            raise Rejected(
                "field_too_long",
                f"{len(value):,} characters in column {column!r}; "
                f"at most {self.limits.max_text:,} are accepted",
            )
        return value or None

    def _time(self, row: dict[str, str]) -> datetime:
        raw = self._text(row, AlprField.OCCURRED_AT) or ""
        fmt = self.mapping.timestamp_format
        try:
            parsed = datetime.strptime(raw, fmt) if fmt else datetime.fromisoformat(raw)
        except ValueError:
            expected = f"the pattern {fmt}" if fmt else "ISO 8601, e.g. 2026-11-24T21:14:03-08:00"
            raise Rejected(
                "bad_timestamp",
                f"{raw!r} in column {self._column(AlprField.OCCURRED_AT)!r} is not {expected}",
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=self.zone)

    def _number(self, row: dict[str, str], field: AlprField, error_type: str) -> float | None:
        raw = self._text(row, field)
        if raw is None:
            return None
        try:
            return float(raw)
        except ValueError:
            raise Rejected(
                error_type, f"{raw!r} in column {self._column(field)!r} is not a number"
            ) from None

    def _coordinate(self, row: dict[str, str], field: AlprField, limit: float) -> float | None:
        value = self._number(row, field, "bad_coordinates")
        if value is not None and not -limit <= value <= limit:
            raise Rejected(
                "bad_coordinates", f"{value} in column {self._column(field)!r} is out of range"
            )
        return value

    def _confidence(self, row: dict[str, str]) -> float | None:
        value = self._number(row, AlprField.CONFIDENCE, "bad_confidence")
        if value is None:
            return None
        scaled = value / self.mapping.confidence_scale
        if not 0 <= scaled <= 1:
            raise Rejected(
                "bad_confidence",
                f"{value} is outside 0..{self.mapping.confidence_scale:g}; "
                "check confidence_scale in the mapping",
            )
        return scaled

    def _derived_id(self, body: dict, occurred: datetime) -> str:
        # Exports without a read id: the same read must get the same id on every replay.
        basis = f"{body['camera_id']}|{body['plate']}|{occurred.isoformat()}"
        return hashlib.sha256(basis.encode()).hexdigest()[:24]
