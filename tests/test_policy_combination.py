"""Several agreements granting one record to one partner: the most protective combination,
whatever the files are called or the order they are in (issue #11, case 1)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from mutualaid.crypto import generate_keypair, newest_public_key
from mutualaid.policy import PROTECTION_ORDER, FieldAction, load_policy, most_protective
from mutualaid.serde import Codecs
from streams.router import Router
from support.events import DESERT, MESA, NOW, agreement, rms_event
from support.routing import REGISTRY, STORE, consumed, decoded, write_agreements

CLEAR = agreement("clear-ssn", fields={"persons[].ssn": "keep"}, retention_days=365)
SEALED = agreement(
    "sealed-ssn",
    version=2,
    fields={"persons[].ssn": "encrypt", "narrative": "drop"},
    retention_days=30,
)


def test_the_action_order_is_the_documented_one() -> None:
    assert PROTECTION_ORDER == ("drop", "hash", "mask", "encrypt", "encrypt_indexed", "keep")
    for stronger, weaker in itertools.combinations(PROTECTION_ORDER, 2):
        assert most_protective([weaker, stronger]) == stronger
        assert most_protective([stronger, weaker]) == stronger


@pytest.mark.parametrize(
    "names", [("a-clear.yaml", "c-sealed.yaml"), ("c-clear.yaml", "a-sealed.yaml")]
)
def test_file_names_do_not_decide_the_outcome(tmp_path: Path, names: tuple[str, str]) -> None:
    """Issue case 1: the SSN in clear and the informant narrative went to the partner whenever
    the clear agreement's file sorted first. Both file namings now give the same decision."""
    folder = write_agreements(tmp_path, {names[0]: [CLEAR], names[1]: [SEALED]})
    (decision,) = load_policy(folder, REGISTRY).decide(rms_event(), NOW)
    assert decision.outcome == "SHARED"
    assert decision.actions == {"persons[].ssn": "encrypt", "narrative": "drop"}
    assert decision.sources == {
        "persons[].ssn": ("sealed-ssn v2",),
        "narrative": ("sealed-ssn v2",),
    }
    assert decision.agreement_refs == [("clear-ssn", 1), ("sealed-ssn", 2)]
    assert decision.retention_days == 30  # the shortest
    assert "field persons[].ssn: encrypt (from sealed-ssn v2; not clear-ssn v1: keep)" in (
        decision.steps
    )


def test_nothing_depends_on_file_or_agreement_order(tmp_path: Path) -> None:
    third = agreement("masked-phone", fields={"persons[].phone": "mask"}, tier="full")
    seen = set()
    for i, order in enumerate(itertools.permutations([CLEAR, SEALED, third])):
        one_file = write_agreements(tmp_path / f"one-{i}", {"x.yaml": list(order)})
        many = write_agreements(
            tmp_path / f"many-{i}", {f"{n}.yaml": [a] for n, a in zip("zyx", order, strict=True)}
        )
        for folder in (one_file, many):
            (d,) = load_policy(folder, REGISTRY).decide(rms_event(), NOW)
            seen.add((d.outcome, tuple(d.actions.items()), d.steps, tuple(d.agreement_refs)))
    assert len(seen) == 1


def test_the_lowest_tier_wins(tmp_path: Path) -> None:
    folder = write_agreements(tmp_path, {"a.yaml": [CLEAR, agreement("ptr", tier="pointer")]})
    (decision,) = load_policy(folder, REGISTRY).decide(rms_event(), NOW)
    assert decision.outcome == "POINTER"
    assert decision.steps[-1] == "pointer: the most protective combination of clear-ssn v1, ptr v1"


def test_a_dropped_field_takes_the_fields_inside_it(tmp_path: Path) -> None:
    """An agreement dropping persons and another encrypting persons[].ssn: nothing of the
    persons leaves, not even the SSN sealed for the partner."""
    folder = write_agreements(
        tmp_path,
        {"a.yaml": [agreement("no-persons", fields={"persons": "drop"}), SEALED]},
    )
    (decision,) = load_policy(folder, REGISTRY).decide(rms_event(), NOW)
    assert decision.actions == {"narrative": "drop", "persons": "drop"}
    assert "field persons[].ssn: dropped with persons" in decision.steps


def test_a_denial_by_one_agreement_does_not_revoke_another_s_grant(tmp_path: Path) -> None:
    counties_only = agreement(
        "counties-only", partners=[MESA, DESERT], conditions={"partner_types": ["county"]}
    )
    desert = agreement("desert", partners=[DESERT], fields={"narrative": "mask"})
    folder = write_agreements(tmp_path, {"a.yaml": [counties_only, desert]})
    decisions = {d.partner_ori: d for d in load_policy(folder, REGISTRY).decide(rms_event(), NOW)}
    assert decisions[DESERT].outcome == "SHARED"
    # Only the granting agreement contributes, and only its actions apply.
    assert decisions[DESERT].agreement_refs == [("desert", 1)]
    assert decisions[DESERT].actions == {"narrative": FieldAction.MASK}
    assert "counties-only: denied: partner is local; allowed: county" in decisions[DESERT].steps


def test_the_router_shares_and_audits_the_combination(tmp_path: Path) -> None:
    folder = write_agreements(tmp_path / "agreements", {"a.yaml": [CLEAR], "b.yaml": [SEALED]})
    generate_keypair(MESA, tmp_path / "pub", tmp_path / "priv")
    router = Router(
        load_policy(folder, REGISTRY),
        Codecs(STORE),
        public_keys={MESA: newest_public_key(MESA, tmp_path / "pub")},
        hash_key=None,
        clock=lambda: NOW,
    )
    shares, audits = decoded(router.route(consumed(rms_event()), {}))
    body = shares[MESA]["body"]
    assert body["persons"][0]["ssn"] is None and body["narrative"] is None
    assert [f["path"] for f in shares[MESA]["disclosure"]["sealed"]["fields"]] == ["persons[0].ssn"]
    assert shares[MESA]["disclosure"]["retain_until"] is not None
    audit = audits[MESA]
    assert audit["agreements"] == [
        {"id": "clear-ssn", "version": 1},
        {"id": "sealed-ssn", "version": 2},
    ]
    assert (audit["agreement_id"], audit["agreement_version"]) == ("clear-ssn", 1)
    assert audit["fields_withheld"] == ["narrative"]
    assert audit["fields_encrypted"] == ["persons[0].ssn"]
    assert "persons[0].ssn" not in audit["fields_in_clear"]
