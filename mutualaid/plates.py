"""Licence plates as every stage compares them."""

from __future__ import annotations

import re

_NOT_ALNUM = re.compile(r"[^0-9A-Z]")


def normalize_plate(raw: str) -> str:
    """Upper case with spaces, dashes and other separators removed: ' 7abc-123 ' -> '7ABC123'."""
    return _NOT_ALNUM.sub("", raw.upper())
