"""Browser sign-in for the agency's web pages (the search page and the dispatch console): a
token once, then a server-side session, behind one login throttle.

A person signs in with the token ``mutualaid api-user add`` (or ``console-user add``) issued;
the server keeps the session and hands the browser only a random id in an HttpOnly,
SameSite=Strict cookie, so no script on the page can read it and no other site can send it.
Every request checks the token behind the session again, so revoking a user ends their open
sessions at once. Sessions live in memory: a restart asks everyone to sign in again. Failed
logins are counted per user and per address (``consumers.logins``), logged with the user and
address (never the token), and past the limits refused with 429 even with the right token.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from pathlib import Path

from fastapi import HTTPException, Request, Response

from consumers.logins import Limits, LoginThrottle
from mutualaid import tokens
from mutualaid.agencies import Agency
from mutualaid.settings import Settings

LOGIN_FORM = Path(__file__).parent / "login_form.html"


def page_with_login(page: Path, agency: Agency, title: str, button: str) -> str:
    """One of the web pages, for this agency, with the login form both pages share."""
    form = LOGIN_FORM.read_text().replace("{{LOGIN_TITLE}}", title)
    return (
        page.read_text()
        .replace("{{LOGIN_FORM}}", form.replace("{{LOGIN_BUTTON}}", button).rstrip("\n"))
        .replace("{{AGENCY}}", json.dumps(f"{agency.name} ({agency.ori})"))
    )


class Sessions:
    def __init__(
        self, users_file: Path, agency_ori: str, limits: Limits, log: logging.Logger
    ) -> None:
        self.users_file, self.agency_ori = users_file, agency_ori
        self.throttle = LoginThrottle(limits)
        self._log = log
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

    def login(
        self, user: str, token: str, request: Request, response: Response, cookie: str, who: str
    ) -> None:
        """Open a session for a login request and set its cookie; HTTPException 429 past the
        throttle's limits, 401 (``who``: what the user is not, e.g. "a dispatcher of X") for a
        wrong user or token."""
        address = request.client.host if request.client else "unknown"
        # Checked before the token: during a lockout even the right token is refused, or
        # guessing could go on and only the answers would be held back.
        wait = self.throttle.retry_after(user, address)
        if wait is not None:
            self._log.warning("login of %r from %s refused: too many failures", user, address)
            raise HTTPException(
                429,
                f"too many failed logins; try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        session = self.open(user, token)
        if session is None:
            self.throttle.failed(user, address)
            # The user as sent (repr: no forged log lines), the address; never the token.
            self._log.warning("failed login of %r from %s", user, address)
            raise HTTPException(401, f"not {who}, or a wrong token")
        self.throttle.succeeded(user)
        response.set_cookie(cookie, session, httponly=True, samesite="strict")

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


def login_limits(settings: Settings) -> Limits:
    """The login limits (settings ``console_login_*``, named for the page that had them first),
    the same for both pages."""
    return Limits(
        settings.console_login_failures_per_user,
        settings.console_login_failures_per_address,
        settings.console_login_window_seconds,
    )
