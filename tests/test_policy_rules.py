"""Rules no agreement can override, and the assurances they need (issue #11, case 2)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from mutualaid.agencies import Registry, load_registry, start_of
from mutualaid.configfile import ConfigError
from mutualaid.policy import load_policy
from mutualaid.policycheck import findings
from mutualaid.serde import Codecs
from streams.router import Router
from support.events import DESERT, FEDERAL, MESA, NOW, RIVERBEND, agreement, alpr_event, rms_event
from support.routing import REGISTRY, STORE, consumed, decoded, write_agreements

RULES = Path("deploy/rules")
ALPR_TO_ALL = agreement("riverbend-alpr-all", kinds=["alpr.read"], partners=[MESA, DESERT, FEDERAL])


def registry_with(mesa_assurance: dict | None) -> Registry:
    data = yaml.safe_load(Path("deploy/agencies.yaml").read_text())
    for agency in data["agencies"]:
        if agency["ori"] == MESA:
            agency["assurances"] = [mesa_assurance] if mesa_assurance else []
    return Registry.model_validate(data)


def policy(folder: Path, registry: Registry = REGISTRY):
    return load_policy(folder, registry, rules_dir=RULES)


def test_ca_alpr_reads_go_only_to_ca_public_agencies_with_an_assurance(tmp_path: Path) -> None:
    """Issue case 2: an agreement naming a federal and a Nevada agency for a CA agency's reads
    passed the check and the reads arrived in full."""
    folder = write_agreements(tmp_path, {"a.yaml": [ALPR_TO_ALL]})
    decisions = {d.partner_ori: d for d in policy(folder).decide(alpr_event(), NOW)}
    assert {p: d.outcome for p, d in decisions.items()} == {
        MESA: "SHARED",
        DESERT: "DENIED",
        FEDERAL: "DENIED",
    }
    assert decisions[FEDERAL].steps[-1] == (
        "denied: rule ca-alpr-1798.90.55 forbids it: DC0990400 is a federal agency; the rule "
        "allows local, county, state only"
    )
    assert decisions[DESERT].steps[-1] == (
        "denied: rule ca-alpr-1798.90.55 forbids it: NV0990300 is in NV; the rule allows CA only"
    )
    assert [r.id for r in decisions[MESA].rules] == ["ca-alpr-1798.90.55"]
    assert any(s.startswith("ok: rule ca-alpr-1798.90.55 v1") for s in decisions[MESA].steps)
    # Nevada's own reads are not California's to govern.
    nv = write_agreements(
        tmp_path / "nv", {"a.yaml": [agreement("nv", owner=DESERT, kinds=["alpr.read"])]}
    )
    (to_mesa,) = policy(nv).decide(alpr_event(DESERT), NOW)
    assert to_mesa.outcome == "SHARED" and to_mesa.rules == ()


def test_no_assurance_or_an_expired_one_denies(tmp_path: Path) -> None:
    folder = write_agreements(tmp_path, {"a.yaml": [ALPR_TO_ALL]})
    none = policy(folder, registry_with(None)).decide(alpr_event(), NOW)
    assert {d.partner_ori: d.steps[-1] for d in none}[MESA] == (
        "denied: rule ca-alpr-1798.90.55 forbids it: CA0990200 has no assurance for "
        "ca-alpr-1798.90.55 on file in the registry"
    )
    expires = (NOW + timedelta(days=3)).date()
    assurance = {
        "rule": "ca-alpr-1798.90.55",
        "document": "MOU 7",
        "signed": "2025-01-01",
        "expires": str(expires),
    }
    timed = policy(folder, registry_with(assurance))
    at_mesa = {d.partner_ori: d for d in timed.decide(alpr_event(), NOW)}[MESA]
    assert at_mesa.outcome == "SHARED"
    # The moment the router rechecks: the assurance's expiry (Riverbend's is later).
    assert timed.next_change(NOW) == start_of(expires)
    later = start_of(expires)
    after = {d.partner_ori: d for d in timed.decide(alpr_event(at=later), later)}[MESA]
    assert after.outcome == "DENIED"
    assert after.steps[-1].endswith(f"assurance 'MOU 7' expired on {expires}")
    assert timed.next_change(later) == start_of(REGISTRY.get(RIVERBEND).assurances[0].expires)


def test_the_juvenile_rule_keeps_ca_juvenile_reports_in_state(tmp_path: Path) -> None:
    folder = write_agreements(
        tmp_path,
        {
            "a.yaml": [
                agreement(
                    "juv",
                    partners=[MESA, DESERT, FEDERAL],
                    conditions={"allow_labels": ["juvenile"]},
                )
            ]
        },
    )
    juvenile = {
        d.partner_ori: d.outcome
        for d in policy(folder).decide(rms_event(labels=("juvenile",)), NOW)
    }
    assert juvenile == {MESA: "SHARED", DESERT: "DENIED", FEDERAL: "DENIED"}
    adult = {d.partner_ori: d.outcome for d in policy(folder).decide(rms_event(), NOW)}
    assert adult == {MESA: "SHARED", DESERT: "SHARED", FEDERAL: "SHARED"}


def test_check_flags_every_agreement_a_rule_contradicts(tmp_path: Path) -> None:
    folder = write_agreements(tmp_path, {"a.yaml": [ALPR_TO_ALL]})
    texts = [str(f) for f in findings(policy(folder), NOW)]
    assert texts == [
        "error: riverbend-alpr-all: names DC0990400 for alpr.read, but rule ca-alpr-1798.90.55 "
        "forbids it: nothing will be shared (DC0990400 is a federal agency; the rule allows "
        "local, county, state only)",
        "error: riverbend-alpr-all: names NV0990300 for alpr.read, but rule ca-alpr-1798.90.55 "
        "forbids it: nothing will be shared (NV0990300 is in NV; the rule allows CA only)",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "cli", "agreements", "check"],
        capture_output=True,
        text=True,
        env={"MUTUALAID_AGREEMENTS_DIR": str(folder), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert texts[0] in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1].startswith("2 error(s): 4 agencies")


def test_the_shipped_files_pass_the_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "agreements", "check"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rules in deploy/rules" in result.stdout


def test_explain_and_the_audit_show_the_rule(tmp_path: Path) -> None:
    folder = write_agreements(tmp_path / "agreements", {"a.yaml": [ALPR_TO_ALL]})
    event_file = tmp_path / "event.json"
    event_file.write_text(
        '{"envelope": {"source_ori": "CA0990100", "kind": "alpr.read", "labels": [],'
        ' "occurred_at": "2026-11-24T21:00:00-08:00"}, "body": {"plate": "7ABC123"}}'
    )
    result = subprocess.run(
        [sys.executable, "-m", "cli", "agreements", "explain", "--event",
         str(event_file), "--partner", FEDERAL],
        capture_output=True,
        text=True,
        env={"MUTUALAID_AGREEMENTS_DIR": str(folder), "PATH": "/usr/bin:/bin"},
        check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert lines[0] == "DC0990400: DENIED"
    assert (
        "  rule ca-alpr-1798.90.55 v1: Cal. Civ. Code 1798.90.55(b); CA Attorney General "
        "bulletin 2023-DLE-06" in lines
    )
    router = Router(policy(folder), Codecs(STORE), public_keys={}, hash_key=None, clock=lambda: NOW)
    shares, audits = decoded(router.route(consumed(alpr_event()), {}))
    assert set(shares) == {MESA}
    assert audits[FEDERAL]["decision"] == "DENIED"
    assert audits[FEDERAL]["rules"] == ["ca-alpr-1798.90.55 v1"]
    assert audits[FEDERAL]["agreements"] == [{"id": "riverbend-alpr-all", "version": 1}]
    assert audits[MESA]["rules"] == ["ca-alpr-1798.90.55 v1"]


def test_rule_files_are_validated_like_agreements(tmp_path: Path) -> None:
    (tmp_path / "agreements").mkdir()
    write_agreements(tmp_path / "agreements", {"a.yaml": [agreement("x")]})
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        "rules:\n"
        "  - id: nv-rule\n"
        "    version: 1\n"
        "    citation: NRS 0\n"
        "    governs: {kinds: [alpr.read], owner_states: [Nevada], labels: [juvnile]}\n"
        "    partners_must: {be_types: [city]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_policy(tmp_path / "agreements", REGISTRY, rules_dir=tmp_path / "rules")
    text = str(caught.value)
    assert "r.yaml:5: rules[0].governs.owner_states: ['Nevada'] is not allowed" in text
    assert "Nevada is NV" in text
    assert "did you mean 'juvenile'?" in text
    assert "r.yaml:6: rules[0].partners_must.be_types[0]: 'city' is not allowed" in text


def test_an_assurance_must_name_a_rule(tmp_path: Path) -> None:
    data = yaml.safe_load(Path("deploy/agencies.yaml").read_text())
    data["agencies"][1]["assurances"][0]["rule"] = "ca-alpr"
    (tmp_path / "agencies.yaml").write_text(yaml.safe_dump(data))
    folder = write_agreements(tmp_path / "agreements", {"a.yaml": [agreement("x")]})
    with pytest.raises(ConfigError) as caught:
        load_policy(
            folder,
            load_registry(tmp_path / "agencies.yaml"),
            rules_dir=RULES,
            registry_file=tmp_path / "agencies.yaml",
        )
    (problem,) = caught.value.problems
    assert problem.field == "agencies[1].assurances[0].rule"
    assert problem.fix == "use one of ca-alpr-1798.90.55, ca-wic-827-juvenile"
