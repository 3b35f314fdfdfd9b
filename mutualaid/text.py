"""How text is compared wherever mutualaid matches it: as words, and as the form keyed hashes
are taken of. One definition, so the router's hashes and a partner's searches agree."""

from __future__ import annotations

import re
import unicodedata


def words(text: str) -> list[str]:
    """Lower-case words without accents, split as SQLite's unicode61 tokenizer splits them, so
    PostgreSQL indexes and matches the very same words."""
    plain = "".join(
        ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch)
    )
    return re.findall(r"[^\W_]+", plain.lower())


def blind_form(text: str) -> str:
    """What a keyed hash is taken of: the letters and digits alone, lower case, no accents.

    A hash matches only an identical input, and people type identifiers the way they were
    taught: "O'Brien" and "OBRIEN", "D123-4567" and "d1234567", "7ABC 123" and "7ABC123"
    must hash the same to match at all.
    """
    return "".join(words(text))
