"""Bearer tokens for people and devices (search API users, console dispatchers, cameras).

A token is issued once, shown once, and stored only as its SHA-256, in a JSON file per purpose
(mode 0600), so the file is not a secret worth stealing. Files are read on every check: a token
added or revoked takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from mutualaid.private import open_private
from mutualaid.topics import check_ori


@dataclass(frozen=True)
class Holder:
    """Whom a token belongs to: the id it acts as, a name for people (a camera's site), and
    what it may do beyond the ordinary (``"reveal"``: open fields an index keeps encrypted)."""

    name: str
    display_name: str | None = None
    grants: frozenset[str] = frozenset()


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _entries(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def _write(path: Path, entries: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # 0600 from the start: written first and chmod-ed after, it would be readable meanwhile.
    with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "w") as out:
        out.write(json.dumps(entries, indent=2))
    tmp.replace(path)


def issue(
    path: Path,
    agency_ori: str,
    name: str,
    display_name: str | None = None,
    grants: frozenset[str] = frozenset(),
) -> str:
    """A new token for ``name`` of the agency; returns it (the only time it exists in clear)."""
    token = secrets.token_urlsafe(32)
    entries = _entries(path)
    entry: dict = {"agency_ori": check_ori(agency_ori), "user": name, "sha256": digest(token)}
    if display_name:
        entry["display_name"] = display_name
    if grants:
        entry["grants"] = sorted(grants)
    entries.append(entry)
    _write(path, entries)
    return token


def revoke(path: Path, agency_ori: str, name: str) -> int:
    """Revoke every token of ``name`` of the agency; returns how many there were."""
    entries = _entries(path)
    kept = [e for e in entries if (e["agency_ori"], e["user"]) != (check_ori(agency_ori), name)]
    _write(path, kept)
    return len(entries) - len(kept)


def find(path: Path, agency_ori: str, token: str | None) -> Holder | None:
    """Whose token this is, if it is a valid token of the agency; else None."""
    if not token:
        return None
    wanted = digest(token)
    for entry in _entries(path):
        if entry["agency_ori"] == agency_ori and hmac.compare_digest(entry["sha256"], wanted):
            return Holder(
                entry["user"], entry.get("display_name"), frozenset(entry.get("grants", ()))
            )
    return None


def holder(path: Path, agency_ori: str, token: str | None) -> str | None:
    """The name of the token's holder, if it is a valid token of the agency; else None."""
    found = find(path, agency_ori, token)
    return found.name if found else None
