"""Real headless Chromium for the web pages' tests: Debian's build, driven by playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="no Chromium here (apt-get install chromium; .ci/run does)",
)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # As root (CI) Chromium refuses to start with its sandbox.
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def sign_in(page: Any, url: str, user: str, token: str) -> None:
    """Sign in on either web page (they share the login form)."""
    page.goto(url)
    page.fill("input[name=user]", user)
    page.fill("input[name=token]", token)
    page.click("form#login button[type=submit]")
