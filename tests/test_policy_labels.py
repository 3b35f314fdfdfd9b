"""Labels in agreements: one closed vocabulary, and protected labels that deny unless an
agreement allows them by name (issue #11, case 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mutualaid.configfile import ConfigError
from mutualaid.policy import load_policy, load_policy_from
from mutualaid.settings import Settings
from support.events import MESA, NOW, agreement, rms_event
from support.routing import REGISTRY, write_agreements


def decide(folder: Path, labels: tuple[str, ...], **settings: object) -> dict:
    if settings:
        policy = load_policy_from(Settings(agreements_dir=folder, **settings), REGISTRY)
    else:
        policy = load_policy(folder, REGISTRY)
    return {d.partner_ori: d for d in policy.decide(rms_event(labels=labels), NOW)}


def test_a_misspelt_label_is_an_error_with_a_did_you_mean(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        yaml.safe_dump(
            {"agreements": [agreement("x", conditions={"exclude_labels": ["Juvenile", "seald"]})]}
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_policy(tmp_path, REGISTRY)
    (problem,) = caught.value.problems
    assert problem.file == tmp_path / "a.yaml" and problem.line is not None
    assert problem.field == "agreements[0].conditions.exclude_labels"
    assert "unknown label 'seald': did you mean 'sealed'?" in problem.message
    assert "labels that keep a record back" in problem.fix


def test_label_spelling_is_normalised(tmp_path: Path) -> None:
    folder = write_agreements(
        tmp_path,
        {"a.yaml": [agreement("x", conditions={"exclude_labels": ["Domestic-Violence"]})]},
    )
    (only,) = load_policy(folder, REGISTRY).agreements
    assert only.conditions.exclude_labels == ["domestic_violence"]


def test_a_juvenile_record_is_denied_unless_allowed_by_name(tmp_path: Path) -> None:
    """Issue case 3: an agreement that never mentions juveniles shared their records."""
    plain = write_agreements(tmp_path / "plain", {"a.yaml": [agreement("plain")]})
    denied = decide(plain, ("juvenile",))[MESA]
    assert denied.outcome == "DENIED"
    assert denied.steps[-1] == (
        "denied: record is labelled juvenile, a protected label, and plain does not allow it "
        "(conditions.allow_labels)"
    )
    assert decide(plain, ("victim",))[MESA].outcome == "SHARED"  # not protected
    allowing = write_agreements(
        tmp_path / "allowing",
        {"a.yaml": [agreement("juv", conditions={"allow_labels": ["juvenile"]})]},
    )
    shared = decide(allowing, ("juvenile",))[MESA]
    assert shared.outcome == "SHARED"
    assert "ok: protected label juvenile is allowed by every granting agreement" in shared.steps
    # Allowing one protected label does not allow another.
    assert decide(allowing, ("juvenile", "informant"))[MESA].outcome == "DENIED"


def test_excluding_with_a_pointer_is_allowing_a_pointer(tmp_path: Path) -> None:
    folder = write_agreements(
        tmp_path,
        {
            "a.yaml": [
                agreement(
                    "ptr",
                    conditions={"exclude_labels": ["informant"], "on_excluded_label": "pointer"},
                )
            ]
        },
    )
    assert decide(folder, ("informant",))[MESA].outcome == "POINTER"


def test_sealed_and_expunged_can_never_be_allowed(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        yaml.safe_dump({"agreements": [agreement("x", conditions={"allow_labels": ["sealed"]})]})
    )
    with pytest.raises(ConfigError, match="sealed records are withdrawn from every partner"):
        load_policy(tmp_path, REGISTRY)


def test_every_granting_agreement_must_allow_a_protected_label(tmp_path: Path) -> None:
    """One agreement written for juvenile records cannot open them under another that never
    considered them; one that excludes them does not grant them, so it does not count."""
    juvenile = agreement("juv", conditions={"allow_labels": ["juvenile"]})
    silent = agreement("general", fields={"narrative": "drop"})
    both = write_agreements(tmp_path / "both", {"a.yaml": [juvenile, silent]})
    assert (
        decide(both, ("juvenile",))[MESA]
        .steps[-1]
        .endswith("general does not allow it (conditions.allow_labels)")
    )
    assert decide(both, ())[MESA].actions == {"narrative": "drop"}
    excluding = agreement("adults", conditions={"exclude_labels": ["juvenile"]})
    split = write_agreements(tmp_path / "split", {"a.yaml": [juvenile, excluding]})
    decision = decide(split, ("juvenile",))[MESA]
    assert decision.outcome == "SHARED" and decision.agreement_refs == [("juv", 1)]


def test_protected_labels_and_the_vocabulary_come_from_settings(tmp_path: Path) -> None:
    folder = write_agreements(
        tmp_path, {"a.yaml": [agreement("x", conditions={"exclude_labels": ["gang_intel"]})]}
    )
    with pytest.raises(ConfigError, match="unknown label 'gang_intel'"):
        load_policy(folder, REGISTRY)
    extended = {"extra_labels": ["gang_intel"], "protected_labels": ["victim", "informant"]}
    assert decide(folder, ("victim",), **extended)[MESA].outcome == "DENIED"
    assert decide(folder, ("juvenile",), **extended)[MESA].outcome == "SHARED"  # not listed
    assert decide(folder, ("sealed",), **extended)[MESA].outcome == "DENIED"  # always
    with pytest.raises(ValueError, match="did you mean 'victim'"):
        Settings(protected_labels=["victm"])
