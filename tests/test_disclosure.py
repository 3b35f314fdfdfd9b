"""What leaves for a partner: field actions, and property tests that nothing leaks in clear."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mutualaid.agencies import load_registry
from mutualaid.crypto import DecryptionError, generate_keypair, load_keyring, newest_public_key
from mutualaid.disclosure import (
    FieldReport,
    MissingKey,
    disclose,
    keyed_hash,
    restore,
    sealed_from_avro,
    treat,
)
from mutualaid.events import new_envelope
from mutualaid.pointers import identifier_key
from mutualaid.policy import Agreement, Decision, FieldAction
from mutualaid.serde import SHARED_EVENT, AvroSerializer, SchemaStore, SerializationContext
from mutualaid.topics import Kind

REGISTRY = load_registry(Path("deploy/agencies.yaml"))
STORE = SchemaStore()
AT = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
HASH_KEY = b"k" * 32
PERSON_TEXT = ["last_name", "first_name", "dob", "ssn", "drivers_license", "address", "phone"]


def rms_event(persons: list[dict], narrative: str) -> dict:
    envelope = new_envelope(
        source_ori="CA0990100",
        source_system="t",
        kind=Kind.RMS_RECORD,
        record_id="r1",
        version=1,
        occurred_at=AT,
        now=AT,
    )
    return {
        "envelope": envelope,
        "body": {"incident_number": "RB-1", "persons": persons, "narrative": narrative},
    }


def decision(fields: dict[str, str]) -> tuple[Decision, dict[str, FieldAction]]:
    agreement = Agreement(
        id="a",
        version=1,
        owner="CA0990100",
        partners=["CA0990200"],
        kinds=[Kind.RMS_RECORD],
        fields=fields,
    )
    actions = agreement.actions_for(Kind.RMS_RECORD, STORE.get("mutualaid.rms.Record"))
    return Decision.under("CA0990200", agreement, actions), actions


def test_each_action(tmp_path: Path) -> None:
    generate_keypair("CA0990200", tmp_path / "pub", tmp_path / "priv")
    person = {"last_name": "Ellis", "ssn": "123-45-6789", "dob": "1984-03-09", "phone": "555-0142"}
    d, actions = decision(
        {
            "persons[].ssn": "encrypt",
            "persons[].dob": "hash",
            "persons[].last_name": "mask",
            "persons[].phone": "drop",
        }
    )
    shared, report = disclose(
        rms_event([person], "n"),
        d,
        actions,
        registry=REGISTRY,
        public_key=newest_public_key("CA0990200", tmp_path / "pub"),
        hash_key=HASH_KEY,
    )
    body = shared["body"]["persons"][0]
    assert body == {
        "last_name": "*llis",
        "ssn": None,
        "dob": keyed_hash(HASH_KEY, "1984-03-09"),
        "phone": None,
    }
    assert (report.encrypted, report.hashed, report.masked, report.withheld) == (
        ["persons[0].ssn"],
        ["persons[0].dob"],
        ["persons[0].last_name"],
        ["persons[0].phone"],
    )
    assert report.in_clear == ["incident_number", "narrative"]
    ring = load_keyring("CA0990200", tmp_path / "priv")
    sealed = sealed_from_avro(shared["disclosure"]["sealed"])
    values = ring.open_fields(sealed, event_id=shared["envelope"]["event_id"])
    assert restore(shared["body"], values)["persons"][0]["ssn"] == "123-45-6789"


def test_encrypt_indexed_matches_without_decrypting(tmp_path: Path) -> None:
    generate_keypair("CA0990200", tmp_path / "pub", tmp_path / "priv")
    d, actions = decision({"persons[].ssn": "encrypt_indexed"})
    shared, report = disclose(
        rms_event([{"ssn": "123-45-6789"}], "n"),
        d,
        actions,
        registry=REGISTRY,
        public_key=newest_public_key("CA0990200", tmp_path / "pub"),
        hash_key=HASH_KEY,
    )
    # The blind index in the body: equal SSNs give equal values, the SSN itself is not there.
    assert shared["body"]["persons"][0]["ssn"] == keyed_hash(HASH_KEY, "123-45-6789")
    assert report.encrypted == report.hashed == ["persons[0].ssn"]
    ring = load_keyring("CA0990200", tmp_path / "priv")
    values = ring.open_fields(
        sealed_from_avro(shared["disclosure"]["sealed"]), event_id=shared["envelope"]["event_id"]
    )
    assert restore(shared["body"], values)["persons"][0]["ssn"] == "123-45-6789"


def test_pointer_carries_no_body_labels_or_record_id_and_whom_to_call() -> None:
    agreement = Agreement(
        id="a",
        version=1,
        owner="CA0990100",
        partners=["CA0990200"],
        kinds=[Kind.RMS_RECORD],
        tier="pointer",
        pointer_found_by=["identifier"],
    )
    event = rms_event([{"ssn": "123-45-6789"}], "secret")
    event["envelope"]["labels"] = ["juvenile"]
    key = b"k" * 32

    def pointer(hash_key: bytes | None) -> tuple[dict, object]:
        decision = Decision.under("CA0990200", agreement, {}, "POINTER")
        return disclose(event, decision, {}, registry=REGISTRY, public_key=None, hash_key=hash_key)

    shared, report = pointer(key)
    assert shared["body"] is None
    assert shared["envelope"]["labels"] == []
    ref = shared["envelope"]["record_id"]
    assert ref.startswith("ptr-") and event["envelope"]["record_id"] not in ref
    assert pointer(key)[0]["envelope"]["record_id"] == ref  # stable: updates reach it
    assert pointer(b"j" * 32)[0]["envelope"]["record_id"] != ref  # and keyed
    assert shared["disclosure"]["tier"] == "POINTER"
    assert shared["disclosure"]["contact"].startswith("Riverbend PD Records")
    assert shared["disclosure"]["match_keys"] == [identifier_key(key, "123456789")]
    assert "123-45-6789" not in json.dumps(shared, default=str)
    assert report.in_clear == []
    with pytest.raises(MissingKey, match="hash-key"):
        pointer(None)


# Values long enough that finding one in the output bytes cannot be a coincidence.
secret = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-", min_size=10, max_size=24)
person_strategy = st.fixed_dictionaries({}, optional={f: secret for f in PERSON_TEXT})
protective = st.sampled_from(["drop", "hash", "encrypt", "encrypt_indexed"])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    persons=st.lists(person_strategy, max_size=4),
    narrative=secret,
    actions=st.dictionaries(
        st.sampled_from([f"persons[].{f}" for f in PERSON_TEXT] + ["narrative"]), protective
    ),
)
def test_no_protected_value_leaves_in_clear(
    tmp_path_factory,
    persons: list[dict],
    narrative: str,
    actions: dict[str, str],
) -> None:
    protected = [
        p.get(path.split(".")[1]) for path in actions if path.startswith("persons") for p in persons
    ] + ([narrative] if "narrative" in actions else [])
    protected = [v for v in protected if v]
    kept = [v for p in persons for f, v in p.items() if f"persons[].{f}" not in actions]
    kept += [] if "narrative" in actions else [narrative]
    # A protected value that also stands, unprotected, elsewhere would rightly be on the wire.
    assume(not any(v in k for v in protected for k in kept))
    keys = tmp_path_factory.mktemp("keys")
    generate_keypair("CA0990200", keys / "pub", keys / "priv")
    d, resolved = decision(actions)
    event = rms_event(persons, narrative)
    shared, _ = disclose(
        event,
        d,
        resolved,
        registry=REGISTRY,
        public_key=newest_public_key("CA0990200", keys / "pub"),
        hash_key=HASH_KEY,
    )
    wire = AvroSerializer(STORE, SHARED_EVENT[Kind.RMS_RECORD])(shared, SerializationContext("t"))
    as_json = json.dumps(shared, default=str)
    for value in protected:
        assert value.encode() not in wire, f"{value!r} leaked onto the wire"
        assert value not in as_json
    for value in kept:
        assert value.encode() in wire  # and what the agreement keeps does arrive


def test_retention_travels_with_the_record() -> None:
    agreement = Agreement(
        id="a",
        version=1,
        owner="CA0990100",
        partners=["CA0990200"],
        kinds=[Kind.RMS_RECORD],
        retention_days=365,
    )
    shared, _ = disclose(
        rms_event([], "n"),
        Decision.under("CA0990200", agreement, {}, "SHARED"),
        {},
        registry=REGISTRY,
        public_key=None,
        hash_key=None,
    )
    assert shared["disclosure"]["retain_until"] == AT + timedelta(days=365)


def test_copy_tree_copies_every_container_and_shares_only_immutable_leaves() -> None:
    from datetime import UTC, datetime

    from mutualaid.disclosure import copy_tree

    when = datetime(2026, 12, 3, tzinfo=UTC)
    body = {"persons": [{"name": "A", "aliases": ["B"], "dob": when}], "n": 1, "raw": b"x"}
    copied = copy_tree(body)
    assert copied == body
    copied["persons"][0]["aliases"].append("C")
    copied["persons"][0]["name"] = "Z"
    copied["persons"].append({})
    assert body == {"persons": [{"name": "A", "aliases": ["B"], "dob": when}], "n": 1, "raw": b"x"}


def test_a_body_treated_once_stands_only_for_its_body_and_actions() -> None:
    # A router sharing one record with several partners treats its body once per set of
    # field actions (``treated``); other actions, or another body, are treated anew.
    event = rms_event([{"last_name": "Ellis", "ssn": "123-45-6789"}], "seen at the mall")
    listed = ["incident_number", "persons[0].last_name", "persons[0].ssn", "narrative"]
    plain, plain_actions = decision({})
    untreated = treat(event["body"], plain_actions, hash_key=None, agreements="a")
    assert untreated.body is event["body"]  # no action: no copy
    _, report = disclose(
        event, plain, plain_actions, registry=REGISTRY, public_key=None, hash_key=None
    )
    assert sorted(report.in_clear) == sorted(listed) == sorted(untreated.report.in_clear)

    def given_untreated(event: dict, d: Decision, actions: dict) -> tuple[dict, FieldReport]:
        return disclose(
            event, d, actions, registry=REGISTRY, public_key=None, hash_key=None, treated=untreated
        )

    _, given_report = given_untreated(event, plain, plain_actions)
    assert given_report is untreated.report
    dropping, actions = decision({"persons[].ssn": "drop"})
    dropped_copy, dropped = given_untreated(event, dropping, actions)
    assert "persons[0].ssn" not in dropped.in_clear
    assert dropped.withheld == ["persons[0].ssn"]
    assert dropped_copy["body"]["persons"][0]["ssn"] is None
    other = rms_event([{"last_name": "Ortiz"}], "n")
    other_copy, other_report = given_untreated(other, plain, plain_actions)
    assert other_copy["body"] is other["body"]
    assert other_report.in_clear == ["incident_number", "persons[0].last_name", "narrative"]


def test_partners_sharing_a_treated_body_each_get_values_only_they_can_open(
    tmp_path: Path,
) -> None:
    for partner in ("CA0990200", "CA0990100"):
        generate_keypair(partner, tmp_path / "pub", tmp_path / "priv")
    county, actions = decision({"persons[].ssn": "encrypt"})
    city = Decision.under("CA0990100", county.agreements[0], actions)
    event = rms_event([{"last_name": "Ellis", "ssn": "123-45-6789"}], "n")
    treated = treat(event["body"], actions, hash_key=None, agreements="a")
    copies = {
        d.partner_ori: disclose(
            event,
            d,
            actions,
            registry=REGISTRY,
            public_key=newest_public_key(d.partner_ori, tmp_path / "pub"),
            hash_key=None,
            treated=treated,
        )[0]
        for d in (county, city)
    }
    for partner, copy in copies.items():
        assert copy["body"]["persons"][0]["ssn"] is None
        sealed = sealed_from_avro(copy["disclosure"]["sealed"])
        own = load_keyring(partner, tmp_path / "priv")
        opened = own.open_fields(sealed, event_id=event["envelope"]["event_id"])
        assert restore(copy["body"], opened)["persons"][0]["ssn"] == "123-45-6789"
        other = "CA0990100" if partner == "CA0990200" else "CA0990200"
        with pytest.raises(DecryptionError):
            load_keyring(other, tmp_path / "priv").open_fields(
                sealed, event_id=event["envelope"]["event_id"]
            )
    assert event["body"]["persons"][0]["ssn"] == "123-45-6789"  # the source is untouched
