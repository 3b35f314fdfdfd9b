"""Small parsers the document adapters share; each failure is a ``Rejected`` with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from producers.contract import Rejected

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def decode_utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Rejected(
            "bad_encoding",
            f"byte 0x{raw[exc.start]:02x} at position {exc.start} is not UTF-8; "
            "export the document as UTF-8",
        ) from None


def instant(value: object, where: str) -> datetime:
    """An ISO 8601 time with a UTC offset (``Z`` allowed); a time without one is ambiguous."""
    if not isinstance(value, str) or not value.strip():
        raise Rejected("bad_timestamp", f"{where} is missing; expected ISO 8601 with an offset")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise Rejected(
            "bad_timestamp",
            f"{value!r} in {where} is not ISO 8601, e.g. 2026-11-24T21:14:03-08:00",
        ) from None
    if parsed.tzinfo is None:
        raise Rejected("bad_timestamp", f"{value!r} in {where} has no UTC offset, e.g. -08:00 or Z")
    return parsed


def optional_instant(value: object, where: str) -> datetime | None:
    return None if value in (None, "") else instant(value, where)


def epoch_millis(at: datetime) -> int:
    """The version of a record whose source stamps each change: later change, higher version."""
    return (at - EPOCH) // timedelta(milliseconds=1)  # exact, no float rounding


def text(value: object) -> str | None:
    if value is None:
        return None
    out = str(value).strip()
    return out or None
