"""A CAD incident read from EIDO, as a partner's index holds it: its persons found by name and
date of birth, its vehicle's plate and VIN by identifier or text, its place by distance; and
agreements' field paths into the new person and vehicle fields withheld by the router's real
disclosure code. SQLite index (the PostgreSQL backend shares consumers.index.records)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from consumers.index.query import Criteria
from consumers.index.sqlite import SqliteIndex
from mutualaid.crypto import generate_keypair
from mutualaid.policy import Agreement
from mutualaid.serde import SchemaStore
from mutualaid.topics import Kind
from producers.cad import CadAdapter
from producers.contract import SourceItem
from support.events import shared_by_router

DATA = Path(__file__).parent / "data" / "eido"
OWNER, PARTNER = "CA0990100", "CA0990200"


def incident(name: str) -> dict:
    raw = (DATA / name).read_bytes()
    return CadAdapter(OWNER).to_event(SourceItem(raw, 1, None, where=f"file {name}"))  # type: ignore[arg-type]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[bytes, Path]:
    generate_keypair(PARTNER, tmp_path / "keys" / "public", tmp_path / "keys" / "private")
    return os.urandom(32), tmp_path / "keys" / "public"


def test_eido_persons_vehicles_and_place_are_searchable(
    tmp_path: Path, keys: tuple[bytes, Path]
) -> None:
    hash_key, public = keys
    index = SqliteIndex(tmp_path / "idx.sqlite", hash_key)
    shared = [
        shared_by_router(incident(n), PARTNER, {}, public, hash_key)
        for n in ("01-incident-dispatched.json", "03-call-transfer.json")
    ]
    assert index.apply(shared) == 2
    a = "urn:emergency:uid:incidentid:7c1e09ab44:psap.riverbend.example"
    b = "urn:emergency:uid:incidentid:b5d2e81f07:psap.riverbend.example"
    found = lambda **c: [h.record_id for h in index.search(Criteria(**c))]  # noqa: E731
    assert found(name="Sam Rossi") == [a]  # the juvenile patient, in a juvenile-labelled record
    assert found(name="Lena Okafor") == [a]
    assert found(dob="1984-03-09") == [a]
    assert found(identifier="7ABC123") == [a]
    assert found(identifier="4T1BF1FK5CU123456") == [a]
    assert found(incident_number="RB-26-001234") == [a]
    assert found(text="extrication OR trapped") == [a]
    assert found(near=(38.912, -119.944, 1)) == [b]  # the call transfer's caller circle
    assert found(near=(38.940, -119.982, 1)) == [a]
    index.close()


def test_agreements_withhold_eido_person_and_vehicle_fields(
    tmp_path: Path, keys: tuple[bytes, Path]
) -> None:
    hash_key, public = keys
    fields = {
        "persons[].dob": "drop",
        "persons[].phone": "drop",
        "vehicles[].vin": "mask",
        "locations[].civic.hno": "drop",
        "notes[].text": "drop",
    }
    shared = shared_by_router(
        incident("01-incident-dispatched.json"), PARTNER, fields, public, hash_key
    )
    body = shared["body"]
    assert [p["dob"] for p in body["persons"]] == [None, None, None]
    assert [p["first_name"] for p in body["persons"]] == ["Pat", "Sam", "Lena"]
    assert body["vehicles"][0]["vin"] != "4T1BF1FK5CU123456"
    assert body["vehicles"][0]["plate"] == "7ABC123"
    assert body["locations"][0]["civic"]["hno"] is None
    assert body["notes"][0]["text"] is None
    # Only values that were there are reported: person 1 has no dob; only the caller a phone.
    assert sorted(shared["disclosure"]["withheld_fields"]) == [
        "locations[0].civic.hno",
        "notes[0].text",
        "persons[0].dob",
        "persons[0].phone",
        "persons[2].dob",
    ]
    assert shared["disclosure"]["masked_fields"] == ["vehicles[0].vin"]


def test_agreement_paths_into_eido_fields_are_checked_against_the_schema() -> None:
    context = {"body_schemas": {Kind.CAD_INCIDENT: SchemaStore().get("mutualaid.cad.Incident")}}

    def agreement(fields: dict[str, str]) -> Agreement:
        spec = {"id": "a", "version": 1, "owner": OWNER, "partners": [PARTNER]}
        return Agreement.model_validate(
            spec | {"kinds": ["cad.incident"], "fields": fields}, context=context
        )

    agreement({"persons[].dob": "drop", "vehicles[].plate": "hash", "locations[].point": "drop"})
    with pytest.raises(ValidationError, match="dobb"):
        agreement({"persons[].dobb": "drop"})
    with pytest.raises(ValidationError, match="works on text fields only"):
        agreement({"vehicles[].year": "mask"})
