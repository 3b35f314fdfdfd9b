"""Browser sign-in for the agency's web pages: a token once, then a server-side session.

A person signs in with the token ``mutualaid api-user add`` (or ``console-user add``) issued;
the server keeps the session and hands the browser only a random id in an HttpOnly,
SameSite=Strict cookie, so no script on the page can read it and no other site can send it.
Every request checks the token behind the session again, so revoking a user ends their open
sessions at once. Sessions live in memory: a restart asks everyone to sign in again.
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

from mutualaid import tokens


class Sessions:
    def __init__(self, users_file: Path, agency_ori: str) -> None:
        self.users_file, self.agency_ori = users_file, agency_ori
        self._open: dict[str, tuple[str, str]] = {}  # session id -> (user, token)
        self._lock = threading.Lock()

    def open(self, user: str, token: str) -> str | None:
        """A new session id, or None if the token is not this user's token of this agency."""
        holder = tokens.find(self.users_file, self.agency_ori, token)
        if holder is None or holder.name != user:
            return None
        session = secrets.token_urlsafe(32)
        with self._lock:
            self._open[session] = (user, token)
        return session

    def holder(self, session: str | None) -> tokens.Holder | None:
        """Who the session belongs to while its token stays valid; None (and closed) else."""
        with self._lock:
            user, token = self._open.get(session or "", (None, None))
        found = tokens.find(self.users_file, self.agency_ori, token) if token else None
        if found is None or found.name != user:
            self.close(session)
            return None
        return found

    def close(self, session: str | None) -> None:
        with self._lock:
            self._open.pop(session or "", None)
