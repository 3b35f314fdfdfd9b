"""Bearer tokens: shown once, stored hashed, bound to one agency, revocable."""

from __future__ import annotations

import stat
from pathlib import Path

from mutualaid import tokens


def test_a_token_names_its_holder_in_its_agency_only(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    token = tokens.issue(path, "ca0990100", "dispatcher.kim")
    assert tokens.holder(path, "CA0990100", token) == "dispatcher.kim"
    assert tokens.holder(path, "CA0990200", token) is None
    assert tokens.holder(path, "CA0990100", token + "x") is None
    assert tokens.holder(path, "CA0990100", None) is None
    assert token not in path.read_text()  # only the SHA-256 is kept
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_revoking_ends_every_token_of_that_holder(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    first = tokens.issue(path, "CA0990100", "kim")
    second = tokens.issue(path, "CA0990100", "kim")
    lee = tokens.issue(path, "CA0990100", "lee")
    assert tokens.revoke(path, "CA0990100", "kim") == 2
    assert tokens.holder(path, "CA0990100", first) is None
    assert tokens.holder(path, "CA0990100", second) is None
    assert tokens.holder(path, "CA0990100", lee) == "lee"
    assert tokens.revoke(path, "CA0990100", "kim") == 0


def test_a_display_name_is_kept_with_the_token(tmp_path: Path) -> None:
    path = tmp_path / "cameras.json"
    named = tokens.issue(path, "CA0990100", "CAM7", "Main St & Pioneer Trl")
    bare = tokens.issue(path, "CA0990100", "CAM8")
    assert tokens.find(path, "CA0990100", named) == tokens.Holder("CAM7", "Main St & Pioneer Trl")
    assert tokens.find(path, "CA0990100", bare) == tokens.Holder("CAM8", None)
    assert tokens.find(path, "CA0990200", named) is None


def test_grants_travel_with_the_token_they_were_issued_with(tmp_path: Path) -> None:
    path = tmp_path / "api-users.json"
    plain = tokens.issue(path, "CA0990100", "lee")
    revealing = tokens.issue(path, "CA0990100", "lee", grants=frozenset({"reveal"}))
    assert tokens.find(path, "CA0990100", plain).grants == frozenset()
    assert tokens.find(path, "CA0990100", revealing).grants == frozenset({"reveal"})
