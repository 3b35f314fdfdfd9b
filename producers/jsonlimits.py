"""Bounds on JSON that arrives from outside, checked before the parser sees it.

``json.loads`` recurses once per nesting level, so a body of 100,000 ``[`` ends in
RecursionError rather than a parse error. The depth is measured here in linear time, counting
brackets outside strings, so such input is refused with a reason like any other bad input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import accumulate

from mutualaid.settings import Settings
from producers.runner import Rejected

# A string, or an unterminated one to the end of the text: consuming the unterminated case in
# one match keeps the scan linear (else each later quote would start a fresh attempt).
_STRING = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_DEFAULTS = Settings.model_fields


@dataclass(frozen=True)
class ReadLimits:
    """How large one read (a JSON object, or a CSV line's values) may be.

    A read is a flat object of a dozen fields; these bounds leave room for vendor extras while
    keeping every event well under the broker's message size.
    """

    # Defaults as in the settings: nesting levels of a JSON body or line (counting the outer
    # [ or {), keys of one JSON read, characters of one field's value (an image URL fits).
    max_depth: int = _DEFAULTS["ingest_max_depth"].default
    max_fields: int = _DEFAULTS["ingest_max_fields"].default
    max_text: int = _DEFAULTS["ingest_max_text"].default

    @classmethod
    def of(cls, settings: Settings) -> ReadLimits:
        return cls(settings.ingest_max_depth, settings.ingest_max_fields, settings.ingest_max_text)


def nesting_depth(text: str) -> int:
    """How deep a JSON parser would recurse on ``text``: brackets outside strings, counted from
    the start. A closing bracket without its opener is a syntax error where it stands, and the
    parser stops there, so the running count needs no care below zero; a line of NDJSON after
    such a line is checked on its own."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets), initial=0))


def check_depth(text: str, limit: int) -> None:
    """Raise Rejected("too_deep") if ``text`` nests deeper than ``limit``."""
    depth = nesting_depth(text)
    if depth > limit:
        raise Rejected(
            "too_deep",
            f"JSON nested {depth} levels deep; at most {limit} are accepted "
            "(a read is one flat object)",
        )
