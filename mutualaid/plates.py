"""Licence plates as every stage compares them."""

from __future__ import annotations

import re

_NOT_ALNUM = re.compile(r"[^0-9A-Z]")
# Characters ALPR cameras confuse, folded onto one of each pair.
_MISREADS = str.maketrans({"O": "0", "I": "1", "B": "8", "S": "5", "Z": "2"})


def normalize_plate(raw: str) -> str:
    """Upper case with spaces, dashes and other separators removed: ' 7abc-123 ' -> '7ABC123'."""
    return _NOT_ALNUM.sub("", raw.upper())


def plate_key(plate: str) -> str:
    """A key that survives common misreads: '8O5ZIS' and 'B05215' share one.

    Cameras confuse O/0, I/1, B/8, S/5 and Z/2, so a read stored under its folded key is found
    by a query typed with either character, and a hotlist entry matches a misread plate.
    """
    return normalize_plate(plate).translate(_MISREADS)
