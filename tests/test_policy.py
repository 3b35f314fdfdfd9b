"""Agreements: default deny, every condition, and files that fail with file, line, field and fix."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from mutualaid.agencies import load_registry
from mutualaid.configfile import ConfigError
from mutualaid.policy import Decision, Policy, load_policy

REGISTRY = load_registry(Path("deploy/agencies.yaml"))
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RIVERBEND, MESA, DESERT, FEDERAL = "CA0990100", "CA0990200", "NV0990300", "DC0990400"


def event(
    owner: str = RIVERBEND,
    kind: str = "alpr.read",
    labels: tuple[str, ...] = (),
    where: tuple[float, float] | None = (38.94, -119.98),
    age: timedelta = timedelta(0),
    offenses: tuple[str, ...] = (),
) -> dict:
    envelope = {
        "source_ori": owner,
        "kind": kind,
        "labels": list(labels),
        "occurred_at": NOW - age,
        "event_id": "e1",
        "record_id": "r1",
        "version": 1,
    }
    body: dict = {"latitude": where[0], "longitude": where[1]} if where else {}
    if offenses:
        body["offenses"] = [{"nibrs_code": code} for code in offenses]
    return {"envelope": envelope, "body": body}


def policy_of(tmp_path: Path, *agreements: dict) -> Policy:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"agreements": list(agreements)}))
    return load_policy(tmp_path, REGISTRY)


def agreement(**extra: object) -> dict:
    return {
        "id": "test",
        "version": 3,
        "owner": RIVERBEND,
        "kinds": ["alpr.read", "rms.record"],
        "partners": [MESA, DESERT, FEDERAL],
        **extra,
    }


def outcomes(decisions: list[Decision]) -> dict[str, str]:
    return {d.partner_ori: d.outcome for d in decisions}


def test_shipped_agreements_share_only_what_they_name() -> None:
    policy = load_policy(Path("deploy/agreements"), REGISTRY)
    assert outcomes(policy.decide(event(DESERT), NOW)) == {RIVERBEND: "SHARED", MESA: "SHARED"}
    assert outcomes(policy.decide(event(RIVERBEND), NOW)) == {MESA: "SHARED"}
    assert policy.decide(event(RIVERBEND, "cad.incident"), NOW) == []  # kind not agreed
    assert policy.decide(event(FEDERAL), NOW) == []  # no agreement at all
    assert FEDERAL not in policy.partners()


def test_no_alpr_to_federal_or_out_of_state_partners(tmp_path: Path) -> None:
    policy = policy_of(
        tmp_path,
        agreement(
            conditions={"partner_types": ["local", "county", "state"], "same_state_only": True}
        ),
    )
    decisions = {d.partner_ori: d for d in policy.decide(event(), NOW)}
    assert outcomes(list(decisions.values())) == {
        MESA: "SHARED",
        DESERT: "DENIED",
        FEDERAL: "DENIED",
    }
    assert decisions[FEDERAL].steps[-1] == (
        "denied: partner is federal; allowed: local, county, state"
    )
    assert decisions[DESERT].steps[-1] == ("denied: partner is in NV, owner in CA: same state only")


def test_excluded_labels_deny_or_become_a_pointer(tmp_path: Path) -> None:
    deny = policy_of(tmp_path, agreement(conditions={"exclude_labels": ["juvenile", "sealed"]}))
    assert set(outcomes(deny.decide(event(labels=("juvenile",)), NOW)).values()) == {"DENIED"}
    assert set(outcomes(deny.decide(event(labels=("victim",)), NOW)).values()) == {"SHARED"}
    pointer = policy_of(
        tmp_path,
        agreement(conditions={"exclude_labels": ["juvenile"], "on_excluded_label": "pointer"}),
    )
    assert set(outcomes(pointer.decide(event(labels=("juvenile",)), NOW)).values()) == {"POINTER"}


def test_pointer_tier(tmp_path: Path) -> None:
    policy = policy_of(tmp_path, agreement(tier="pointer"))
    assert set(outcomes(policy.decide(event(), NOW)).values()) == {"POINTER"}


def test_geography_within_the_partners_jurisdiction(tmp_path: Path) -> None:
    policy = policy_of(
        tmp_path,
        agreement(partners=[MESA, DESERT], conditions={"within_partner_jurisdiction": True}),
    )
    # Mesa County's centre is ~6 km away, radius 45; Desert Springs' radius is 10 km.
    near_desert = policy.decide(event(where=(38.96, -119.93)), NOW)
    assert outcomes(near_desert) == {MESA: "SHARED", DESERT: "SHARED"}
    far = {d.partner_ori: d for d in policy.decide(event(where=(38.70, -120.30)), NOW)}
    assert outcomes(list(far.values())) == {MESA: "SHARED", DESERT: "DENIED"}
    assert "km from the partner's centre; limit 10 km" in far[DESERT].steps[-1]
    nowhere = policy.decide(event(where=None), NOW)
    assert set(outcomes(nowhere).values()) == {"DENIED"}


def test_time_window_and_offense_codes(tmp_path: Path) -> None:
    policy = policy_of(
        tmp_path,
        agreement(
            partners=[MESA],
            conditions={
                "max_age_days": 30,
                "offenses_include": ["240", "120"],
                "offenses_exclude": ["11A"],
            },
        ),
    )
    assert outcomes(policy.decide(event(offenses=("240",)), NOW)) == {MESA: "SHARED"}
    assert outcomes(policy.decide(event(offenses=("240",), age=timedelta(days=31)), NOW)) == {
        MESA: "DENIED"
    }
    assert outcomes(policy.decide(event(offenses=("13A",)), NOW)) == {MESA: "DENIED"}
    assert outcomes(policy.decide(event(offenses=("240", "11A")), NOW)) == {MESA: "DENIED"}


def test_partner_classes_and_the_lowest_tier_wins(tmp_path: Path) -> None:
    by_class = agreement(
        id="counties", partners=[], partner_classes=[{"type": "county", "state": "CA"}]
    )
    pointer_for_all = agreement(id="pointers", tier="pointer", partners=[MESA, DESERT])
    policy = policy_of(tmp_path, by_class, pointer_for_all)
    decisions = {d.partner_ori: d for d in policy.decide(event(), NOW)}
    # Mesa is granted full by one and pointer by the other: the most protective, a pointer.
    assert outcomes(list(decisions.values())) == {MESA: "POINTER", DESERT: "POINTER"}
    assert decisions[MESA].agreement_refs == [("counties", 3), ("pointers", 3)]
    assert decisions[MESA].steps[1] == "ok: CA0990200 (county, CA) is in class county in CA"


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


def test_field_paths_are_checked_against_the_schema(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        yaml.safe_dump(
            {
                "agreements": [
                    agreement(
                        kinds=["rms.record"],
                        fields={
                            "persons[].ssn": "encrypt",
                            "persons.dob": "drop",
                            "persons[].age": "mask",
                            "narative": "drop",
                        },
                    )
                ]
            }
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_policy(tmp_path, REGISTRY)
    text = str(caught.value)
    assert "'persons.dob': the value before 'dob' is a list; add [] after it" in text
    assert "'persons[].age': mask works on text fields only; use drop or encrypt" in text
    assert "'narative': no field 'narative' here" in text
    assert "agreements[0].fields" in text and "Fix: correct the value (field path ->" in text


def test_an_agreement_must_name_someone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="name partners \\(ORIs\\) or partner_classes"):
        policy_of(tmp_path, agreement(partners=[]))


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


def test_explain_prints_every_step(tmp_path: Path) -> None:
    policy_of(
        tmp_path,
        agreement(
            conditions={"exclude_labels": ["juvenile"], "partner_types": ["local", "county"]}
        ),
    )
    event_file = tmp_path / "event.json"
    event_file.write_text(
        json.dumps(
            {
                "envelope": {
                    "source_ori": RIVERBEND,
                    "kind": "rms.record",
                    "labels": ["victim"],
                    "occurred_at": "2026-11-24T21:00:00-08:00",
                },
                "body": {"narrative": "x"},
            }
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "agreements",
            "explain",
            "--event",
            str(event_file),
            "--partner",
            FEDERAL,
        ],
        capture_output=True,
        text=True,
        env={"MUTUALAID_AGREEMENTS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert result.stdout.splitlines() == [
        "DC0990400: DENIED",
        "  - agreement test v3 covers CA0990100 rms.record records",
        "  - ok: DC0990400 is named as a partner",
        "  - denied: partner is federal; allowed: local, county",
    ]


def test_the_readme_example_agreement_is_valid(tmp_path: Path) -> None:
    readme = Path("README.md").read_text()
    start = readme.index("agreements:\n  - id: riverbend-rms-regional")
    (tmp_path / "example.yaml").write_text(readme[start : readme.index("```", start)])
    (agreement,) = load_policy(tmp_path, REGISTRY).agreements
    assert agreement.fields["persons[].ssn"] == "encrypt"
    assert agreement.conditions.within_km == 50
