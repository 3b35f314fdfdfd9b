"""Agreements: default deny, and files that fail with file, line, field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from mutualaid.agencies import load_registry
from mutualaid.configfile import ConfigError
from mutualaid.policy import Decision, load_policy

REGISTRY = load_registry(Path("deploy/agencies.yaml"))


def envelope(owner: str, kind: str = "alpr.read") -> dict:
    return {"source_ori": owner, "kind": kind}


def test_shipped_agreements_share_only_what_they_name() -> None:
    policy = load_policy(Path("deploy/agreements"), REGISTRY)
    assert policy.decide(envelope("NV0990300")) == [
        Decision("CA0990100", "desert-springs-alpr", 1),
        Decision("CA0990200", "desert-springs-alpr", 1),
    ]
    assert policy.decide(envelope("CA0990100")) == [Decision("CA0990200", "riverbend-mesa-alpr", 1)]
    assert policy.decide(envelope("CA0990100", "rms.record")) == []  # kind not agreed
    assert policy.decide(envelope("DC0990400")) == []  # no agreement at all
    assert "DC0990400" not in policy.partners()


def test_unknown_partner_and_kind_are_reported_with_lines(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "agreements:\n"
        "  - id: riverbend-out\n"
        "    version: 1\n"
        "    owner: CA0990100\n"
        "    partners: [CA0990200, TX0000000]\n"
        "    kinds: [alpr.reads]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_policy(tmp_path, REGISTRY)
    text = str(caught.value)
    assert (
        f"{tmp_path / 'a.yaml'}:5: agreements[0].partners: ['CA0990200', 'TX0000000'] is "
        "not allowed: TX0000000 is not in the agency registry; add it there first"
    ) in text
    assert f"{tmp_path / 'a.yaml'}:6: agreements[0].kinds[0]: 'alpr.reads' is not allowed" in text


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    body = (
        "agreements:\n  - {id: same, version: 1, owner: CA0990100, partners: [CA0990200], "
        "kinds: [alpr.read]}\n"
    )
    (tmp_path / "a.yaml").write_text(body)
    (tmp_path / "b.yaml").write_text(body)
    with pytest.raises(ConfigError, match=r"b.yaml: agreements\[0\].id: 'same' is already defined"):
        load_policy(tmp_path, REGISTRY)


def test_an_empty_folder_is_an_error_not_silence(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no agreement files"):
        load_policy(tmp_path, REGISTRY)
