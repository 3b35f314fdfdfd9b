"""Logins on both web pages (the dispatch console, the search page): failures are logged (user
and address, never the token) and limited per user and per address, on a real process; the
throttle's arithmetic with a fake clock."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from consumers.logins import Limits, LoginThrottle
from support.processes import serving, token_for
from support.regions import Region


def log_in(url: str, user: str, token: str) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        f"{url}/login",
        data=json.dumps({"user": user, "token": token}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.load(answer), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc), dict(exc.headers)


@pytest.mark.broker
@pytest.mark.parametrize(("page", "users"), [("console", "console-user"), ("api", "api-user")])
def test_failed_logins_are_logged_and_limited_per_user_and_address(
    region: Region, tmp_path: Path, page: str, users: str
) -> None:
    kim = token_for(region, users, region.local, "dispatcher.kim")
    lee = token_for(region, users, region.local, "dispatcher.lee")
    config = tmp_path / "page.yaml"
    limits = {"console_login_failures_per_user": 3, "console_login_failures_per_address": 5}
    config.write_text(yaml.safe_dump(yaml.safe_load(region.config_file.read_text()) | limits))
    log = tmp_path / "page.log"
    wrong = [f"guess-{n}-{'x' * 20}" for n in range(5)]
    with serving(config, [page, "--agency", region.local], log) as url:
        assert log_in(url, "dispatcher.kim", kim)[0] == 200
        for guess in wrong[:3]:
            assert log_in(url, "dispatcher.kim", guess)[0] == 401
        # Kim's name is locked now, even with the right token; the answer says for how long.
        status, answer, headers = log_in(url, "dispatcher.kim", kim)
        assert status == 429, answer
        assert 1 <= int(headers["retry-after"]) <= 300
        assert (
            answer["detail"] == f"too many failed logins; try again in {headers['retry-after']} s"
        )
        # Lee is not locked by Kim's failures, until the address has failed 5 times in all.
        assert log_in(url, "dispatcher.lee", lee)[0] == 200
        for guess in wrong[3:]:
            assert log_in(url, "dispatcher.lee", guess)[0] == 401
        assert log_in(url, "dispatcher.lee", lee)[0] == 429
    text = log.read_text()
    assert text.count("failed login of 'dispatcher.kim' from 127.0.0.1") == 3
    assert text.count("failed login of 'dispatcher.lee' from 127.0.0.1") == 2
    assert "login of 'dispatcher.kim' from 127.0.0.1 refused: too many failures" in text
    for token in (kim, lee, *wrong):
        assert token not in text


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_frees_a_name_as_failures_age_out_of_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(Limits(per_user=2, per_address=100, window_seconds=60), clock)
    throttle.failed("kim", "10.0.0.1")
    clock.now += 10
    throttle.failed("kim", "10.0.0.1")
    assert throttle.retry_after("kim", "10.0.0.2") == 50  # the first failure ages out first
    clock.now += 50
    assert throttle.retry_after("kim", "10.0.0.2") is None
    throttle.failed("kim", "10.0.0.1")
    assert throttle.retry_after("kim", "10.0.0.1") == 10


def test_a_success_clears_its_user_but_not_its_address() -> None:
    throttle = LoginThrottle(Limits(per_user=2, per_address=3, window_seconds=60), Clock())
    throttle.failed("kim", "10.0.0.1")
    throttle.failed("kim", "10.0.0.1")
    assert throttle.retry_after("kim", "10.0.0.9") is not None
    throttle.succeeded("kim")
    assert throttle.retry_after("kim", "10.0.0.9") is None
    throttle.failed("lee", "10.0.0.1")
    # Three failures from 10.0.0.1 in all: the success of kim did not reset them.
    assert throttle.retry_after("anyone", "10.0.0.1") is not None
    assert throttle.retry_after("anyone", "10.0.0.2") is None
