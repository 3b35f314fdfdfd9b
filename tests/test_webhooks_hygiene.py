"""Webhooks refuse to send alerts in clear (http://) except to this host when a setting allows
it, and warn at start-up about a secret file that group or others can read."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest

from consumers.alerts.webhooks import load_endpoints
from mutualaid.configfile import ConfigError
from mutualaid.processes import spawn, stop
from support.processes import mutualaid_cli, wait_for
from support.regions import Region
from support.webhooks import configure


def secret(tmp_path: Path, name: str, mode: int) -> str:
    path = tmp_path / name
    path.write_text(secrets.token_hex(32))
    os.chmod(path, mode)
    return str(path)


@pytest.mark.broker
def test_http_urls_are_refused_unless_to_this_host_and_allowed(
    region: Region, tmp_path: Path
) -> None:
    key = secret(tmp_path, "cad.secret", 0o600)
    cases = [
        ("http://cad.riverbend.example/hits", True, "is allowed to this host only"),
        ("http://127.0.0.1:9/hits", False, "http:// would send alerts unencrypted"),
    ]
    for url, allowed, why in cases:
        config = configure(
            region,
            tmp_path,
            [{"agency": region.local, "url": url, "secret_file": key}],
            webhooks_allow_http_loopback=allowed,
        )
        started = mutualaid_cli(
            region, "--config", str(config), "webhooks", "--agency", region.local
        )
        assert started.returncode == 2, started.stderr
        # yaml.safe_dump sorts keys: agency (line 2), secret_file (3), url (4).
        assert "webhooks.yaml:4: webhooks[0].url:" in started.stderr
        assert why in started.stderr


def test_https_anywhere_and_http_to_loopback_when_allowed(tmp_path: Path) -> None:
    key = secret(tmp_path, "cad.secret", 0o600)
    webhooks = tmp_path / "webhooks.yaml"
    for url, allowed in (
        ("https://cad.riverbend.example/hits", False),
        ("http://127.0.0.1:8080/hits", True),
        ("http://[::1]:8080/hits", True),
        ("http://localhost/hits", True),
    ):
        webhooks.write_text(
            f"webhooks:\n  - agency: CA0990100\n    url: {url}\n    secret_file: {key}\n"
        )
        [endpoint] = load_endpoints(webhooks, "CA0990100", allow_http_loopback=allowed)
        assert str(endpoint.url).startswith(url.split("/hits")[0])
    with pytest.raises(ConfigError, match="http:// would send alerts unencrypted"):
        load_endpoints(webhooks, "CA0990100")  # the last one, without the setting


@pytest.mark.broker
def test_a_secret_file_others_can_read_is_warned_about_at_start(
    region: Region, tmp_path: Path
) -> None:
    loose = secret(tmp_path, "loose.secret", 0o644)
    kept = secret(tmp_path, "kept.secret", 0o600)
    config = configure(
        region,
        tmp_path,
        [
            {"agency": region.local, "url": "http://127.0.0.1:9/a", "secret_file": loose},
            {"agency": region.local, "url": "http://127.0.0.1:9/b", "secret_file": kept},
        ],
    )
    log = tmp_path / "webhooks.log"
    argv = [sys.executable, "-m", "cli", "--config", str(config)]
    sender = spawn([*argv, "webhooks", "--agency", region.local], log=log)
    try:
        wait_for(lambda: "readable by group or others" in log.read_text(), 30, "the warning")
    finally:
        stop(sender, timeout=10)
    text = log.read_text()
    assert f"webhook secret file {loose} is readable by group or others (mode 0o644)" in text
    assert f"chmod 600 {loose}" in text
    assert kept not in text
    for path in (loose, kept):
        assert Path(path).read_text() not in text
