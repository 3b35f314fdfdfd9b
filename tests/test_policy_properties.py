"""Property: whatever the agreements, rules and record, what a partner receives from the router
is exactly the most protective combination of the agreements that grant it, breaks no rule or
protected label, and does not depend on how the agreements are spread over files or ordered.

The expected outcome is worked out here from the generated files by a model written
independently of ``mutualaid.policy`` (a few lines per condition), and compared with what the
real router emits for the real loaded policy.

Byte for byte: sealed fields carry fresh random nonces and keys, so two runs never seal alike.
Every output is compared as bytes when no generated agreement encrypts; when one does, outputs
are decoded and compared with each sealed payload replaced by the list of paths it seals.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mutualaid.crypto import generate_keypair, newest_public_key
from mutualaid.disclosure import keyed_hash, mask
from mutualaid.labels import PROTECTED
from mutualaid.policy import PROTECTION_ORDER, Policy, load_policy
from mutualaid.serde import Codecs
from streams.router import Router, holders_expiry
from support.events import DESERT, FEDERAL, MESA, NOW, RIVERBEND, rms_event
from support.routing import REGISTRY, STORE, consumed, decoded

PARTNERS = [MESA, DESERT, FEDERAL]
AGENCY = {a.ori: a for a in REGISTRY.agencies}
TEXT_PATHS = ["persons[].ssn", "persons[].phone", "persons[].last_name", "narrative"]
LABELS = ["juvenile", "informant", "victim"]
HASH_KEY = b"k" * 32
ACTIONS = [str(a) for a in PROTECTION_ORDER]
STRENGTH = {a: len(ACTIONS) - i for i, a in enumerate(ACTIONS)}
SHIPPED_RULES = [
    rule
    for f in sorted(Path("deploy/rules").glob("*.yaml"))
    for rule in yaml.safe_load(f.read_text())["rules"]
]

_KEYS = Path(tempfile.mkdtemp(prefix="policy-properties-"))
for _ori in PARTNERS:
    generate_keypair(_ori, _KEYS / "pub", _KEYS / "priv")
PUBLIC_KEYS = {o: newest_public_key(o, _KEYS / "pub") for o in PARTNERS}


@st.composite
def agreements(draw: st.DrawFn) -> list[dict]:
    count = draw(st.integers(1, 4))
    out = []
    for i in range(count):
        fields = draw(st.dictionaries(st.sampled_from(TEXT_PATHS), st.sampled_from(ACTIONS)))
        if draw(st.booleans()) and draw(st.booleans()):
            fields["persons"] = "drop"  # a list: drop is the action it takes besides encrypt
        exclude = draw(st.lists(st.sampled_from(LABELS), unique=True, max_size=2))
        allow = [
            label
            for label in draw(st.lists(st.sampled_from(["juvenile", "informant"]), unique=True))
            if label not in exclude
        ]
        conditions: dict = {"exclude_labels": exclude, "allow_labels": allow}
        if exclude:
            conditions["on_excluded_label"] = draw(st.sampled_from(["deny", "pointer"]))
        if draw(st.booleans()):
            conditions["partner_types"] = draw(
                st.lists(st.sampled_from(["local", "county", "federal"]), min_size=1, unique=True)
            )
        agreement = {
            "id": f"agreement-{i}",
            "version": draw(st.integers(1, 3)),
            "owner": RIVERBEND,
            "partners": draw(st.lists(st.sampled_from(PARTNERS), min_size=1, unique=True)),
            "kinds": ["rms.record"],
            "tier": draw(st.sampled_from(["full", "full", "pointer"])),
            "conditions": conditions,
            "fields": fields,
        }
        if draw(st.booleans()):
            agreement["retention_days"] = draw(st.integers(1, 400))
        out.append(agreement)
    return out


@st.composite
def rules(draw: st.DrawFn) -> list[dict]:
    generated = []
    if draw(st.booleans()):
        must: dict = {"be_in_owner_state": draw(st.booleans())}
        if draw(st.booleans()):
            must["be_types"] = draw(
                st.lists(st.sampled_from(["local", "county", "state"]), min_size=1, unique=True)
            )
        generated.append(
            {
                "id": "generated-rule",
                "version": 1,
                "citation": "a generated rule",
                "governs": {
                    "kinds": ["rms.record"],
                    "owner_states": draw(st.sampled_from([[], ["CA"], ["NV"]])),
                    "labels": draw(st.lists(st.sampled_from(LABELS), unique=True, max_size=1)),
                },
                "partners_must": must,
            }
        )
    return generated


# The model: what the guarantee says each partner gets, from the files alone.


def grant(agreement: dict, partner: str, labels: set[str]) -> str | None:
    """'full', 'pointer' or None: what this one agreement grants the partner."""
    c = agreement["conditions"]
    if partner not in agreement["partners"]:
        return None
    if "partner_types" in c and AGENCY[partner].type not in c["partner_types"]:
        return None
    if labels & set(c["exclude_labels"]):
        return "pointer" if c.get("on_excluded_label") == "pointer" else None
    return agreement["tier"]


def refused_by_a_rule(all_rules: list[dict], partner: str, labels: set[str]) -> bool:
    for rule in all_rules:
        g, must = rule["governs"], rule["partners_must"]
        if "rms.record" not in g["kinds"] or (
            g.get("owner_states") and "CA" not in g["owner_states"]
        ):
            continue
        if g.get("labels") and not labels & set(g["labels"]):
            continue
        if "be_types" in must and AGENCY[partner].type not in must["be_types"]:
            return True
        if must.get("be_in_owner_state") and AGENCY[partner].state != "CA":
            return True
    return False


def expected(
    all_agreements: list[dict], all_rules: list[dict], partner: str, labels: set[str]
) -> tuple[str | None, list[dict]]:
    grants = [(a, g) for a in all_agreements if (g := grant(a, partner, labels)) is not None]
    if not grants or refused_by_a_rule(all_rules, partner, labels):
        return None, []
    for label in labels & PROTECTED:
        for a, g in grants:
            c = a["conditions"]
            if not (
                label in c["allow_labels"] or (label in c["exclude_labels"] and g == "pointer")
            ):
                return None, []
    tier = "POINTER" if any(g == "pointer" for _, g in grants) else "FULL"
    return tier, [a for a, _ in grants]


def received_protection(event: dict, shared: dict, path: str) -> str:
    """What happened to the value at ``path`` (one person) on its way to the partner."""
    original = event["body"]["persons"][0] if path.startswith("persons") else event["body"]
    body = shared["body"]
    name = path.split(".")[-1]
    if path.startswith("persons"):
        if body["persons"] == []:
            return "drop"
        value, concrete = body["persons"][0][name], f"persons[0].{name}"
    else:
        value, concrete = body[name], name
    sealed = {f["path"] for f in (shared["disclosure"]["sealed"] or {"fields": []})["fields"]}
    if value is None:
        return "encrypt" if concrete in sealed else "drop"
    if value == keyed_hash(HASH_KEY, original[name]):
        return "encrypt_indexed" if concrete in sealed else "hash"
    if value == original[name]:
        return "keep"
    assert value == mask(original[name]), (path, value)
    return "mask"


def route(folder: Path, rules_dir: Path, event: dict, holders: dict | None = None) -> list:
    policy = load_policy(folder, REGISTRY, rules_dir=rules_dir)
    router = Router(
        policy, Codecs(STORE), public_keys=PUBLIC_KEYS, hash_key=HASH_KEY, clock=lambda: NOW
    )
    return router.route(consumed(event), {} if holders is None else holders)


def without_ciphertexts(outputs: list) -> list:
    shares, audits = decoded(outputs)
    for shared in shares.values():
        sealed = shared["disclosure"]["sealed"]
        if sealed is not None:
            shared["disclosure"]["sealed"] = sorted(f["path"] for f in sealed["fields"])
    return [shares, audits]


def write(root: Path, all_agreements: list[dict], all_rules: list[dict], spread: list[int]) -> Path:
    folder = root / "agreements"
    folder.mkdir(parents=True)
    files: dict[int, list[dict]] = {}
    for agreement, bucket in zip(all_agreements, spread, strict=False):
        files.setdefault(bucket, []).append(agreement)
    for bucket, items in files.items():
        (folder / f"{bucket:02d}.yaml").write_text(yaml.safe_dump({"agreements": items}))
    rules_dir = root / "rules"
    rules_dir.mkdir()
    (rules_dir / "shipped.yaml").write_text(yaml.safe_dump({"rules": SHIPPED_RULES}))
    (rules_dir / "generated.yaml").write_text(yaml.safe_dump({"rules": all_rules}))
    return folder


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    all_agreements=agreements(),
    generated_rules=rules(),
    labels=st.lists(st.sampled_from(LABELS), unique=True, max_size=2),
    data=st.data(),
)
def test_partners_get_the_most_protective_combination_in_any_order(
    all_agreements: list[dict], generated_rules: list[dict], labels: list[str], data: st.DataObject
) -> None:
    event = rms_event(labels=tuple(labels))
    all_rules = SHIPPED_RULES + generated_rules
    holders: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        first = route(
            write(Path(tmp) / "a", all_agreements, generated_rules, [0] * 4),
            Path(tmp) / "a" / "rules",
            event,
            holders,
        )
        permuted = data.draw(st.permutations(all_agreements))
        spread = data.draw(st.lists(st.integers(0, 9), min_size=4, max_size=4))
        again = route(
            write(Path(tmp) / "b", permuted, generated_rules, spread),
            Path(tmp) / "b" / "rules",
            event,
        )
    encrypts = any(
        a in ("encrypt", "encrypt_indexed") for ag in all_agreements for a in ag["fields"].values()
    )
    if encrypts:
        assert without_ciphertexts(first) == without_ciphertexts(again)
    else:
        assert [(o.topic, o.key, o.value) for o in first] == [
            (o.topic, o.key, o.value) for o in again
        ]

    shares, audits = decoded(first)
    # The router remembers who holds the record until every copy is past its retention: a
    # withdrawal can reach each copy while it may still be held.
    (entry,) = holders.values() if shares else [None]
    if entry is not None:
        kept = [s["disclosure"]["retain_until"] for s in shares.values()]
        forgotten = holders_expiry(entry)
        if None in kept:
            assert forgotten is None
        else:
            assert forgotten == int((max(kept) + timedelta(days=1)).timestamp() * 1000)
    for partner in PARTNERS:
        tier, granting = expected(all_agreements, all_rules, partner, set(labels))
        if tier is None:
            assert partner not in shares, f"{partner} received what it may not"
            continue
        shared = shares[partner]
        assert shared["disclosure"]["tier"] == tier
        ids = sorted(a["id"] for a in granting)
        assert [a["id"] for a in audits[partner]["agreements"]] == ids
        retentions = [a["retention_days"] for a in granting if "retention_days" in a]
        if retentions:
            limit = event["envelope"]["occurred_at"] + timedelta(days=min(retentions))
            assert shared["disclosure"]["retain_until"] == limit
        if tier == "POINTER":
            assert shared["body"] is None
            continue
        for path in TEXT_PATHS:
            wanted = [a["fields"].get(path, "keep") for a in granting] + [
                "drop" for a in granting if path.startswith("persons") and "persons" in a["fields"]
            ]
            strongest = max(wanted, key=STRENGTH.__getitem__)
            assert received_protection(event, shared, path) == strongest, (partner, path)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    all_agreements=agreements(),
    generated_rules=rules(),
    max_age=st.none() | st.integers(1, 20),
    events=st.lists(
        st.tuples(st.lists(st.sampled_from(LABELS), unique=True, max_size=2), st.integers(0, 40)),
        min_size=2,
        max_size=6,
    ),
)
def test_a_policy_that_decided_other_events_decides_each_as_a_fresh_one(
    all_agreements: list[dict],
    generated_rules: list[dict],
    max_age: int | None,
    events: list[tuple[list[str], int]],
) -> None:
    """Policy remembers what an event's owner, kind, labels and partner settle (the hot path's
    caches): whatever it decided before, each event's decisions are the ones a policy that
    never decided anything makes. Some records are older than an agreement's age limit, so
    verdicts that quote an event's contents pass through the caches too."""
    if max_age is not None:
        all_agreements[0]["conditions"]["max_age_days"] = max_age
    with tempfile.TemporaryDirectory() as tmp:
        folder = write(Path(tmp), all_agreements, generated_rules, [0] * 4)
        warm = load_policy(folder, REGISTRY, rules_dir=Path(tmp) / "rules")
        for labels, days in events + events[::-1]:
            event = rms_event(labels=tuple(labels), at=NOW - timedelta(days=days))
            fresh = Policy(warm.agreements, REGISTRY, warm.rules, store=STORE)
            assert warm.decide(event, NOW) == fresh.decide(event, NOW)
