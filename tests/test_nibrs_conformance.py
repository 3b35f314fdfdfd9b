"""NIBRS IEPD 4.2 conformance: the project's own instances of every report type, valid against
the FBI's XSDs (vendored in tests/data/nibrs-iepd-4.2/), through the real connector on the real
broker and on to a partner's index.

The fixtures (tests/data/rms/conformance/, written for this project, not the FBI's samples) are
of agency ZZ0000001; the broker tests rewrite that ORI to the test region's own.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import xmlschema
import yaml

from consumers.index.records import indexed, open_kept
from mutualaid.crypto import generate_keypair, load_keyring
from mutualaid.serde import (
    DEAD_LETTER,
    SHARED_EVENT,
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import Kind, Stage, dlq_topic
from producers.contract import Skipped, SourceItem
from producers.rms import RmsAdapter
from support.brokers import read_topic, source_events
from support.events import shared_by_router
from support.indexes import index_rows
from support.processes import mutualaid_cli, running_stages, wait_for
from support.regions import Region

DATA = Path(__file__).parent / "data"
XSD = DATA / "nibrs-iepd-4.2" / "base-xsd" / "nibrs" / "4.2" / "nibrs.xsd"
CONFORMANCE = DATA / "rms" / "conformance"
FIXTURES = sorted(CONFORMANCE.glob("*.xml"))
ORI = "ZZ0000001"


@pytest.fixture(scope="module")
def iepd() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def leaf_elements(schema: xmlschema.XMLSchema) -> set[str]:
    """Local names of every element with a value that a NIBRS Submission can hold, following
    the substitution groups NIEM uses (j:OffenseDesignation <- nibrs:OffenseUCRCode, ...)."""
    groups = schema.maps.substitution_groups
    leaves: set[str] = set()
    seen: set[str] = set()

    def walk(element: Any) -> None:
        if element.name in seen:
            return
        seen.add(element.name)
        for substitute in groups.get(element.name, ()):
            walk(substitute)
        if element.abstract:
            return
        if element.type.is_simple() or element.type.has_simple_content():
            leaves.add(local(element.name))
            return
        for inner in element.type.content.iter_elements():
            walk(inner)

    walk(schema.elements["Submission"])
    return leaves


def header(path: Path) -> tuple[str, str]:
    root = ElementTree.parse(path).getroot()
    values = {local(e.tag): (e.text or "").strip() for e in root.iter()}
    return values["NIBRSReportCategoryCode"], values["ReportActionCategoryCode"]


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_each_fixture_is_a_valid_iepd_4_2_instance(iepd: xmlschema.XMLSchema, path: Path) -> None:
    iepd.validate(str(path))


def test_the_validation_catches_a_broken_instance(iepd: xmlschema.XMLSchema) -> None:
    broken = FIXTURES[0].read_text().replace(">Stranger<", ">Strangers<")
    assert not iepd.is_valid(broken)


def test_the_fixtures_hold_every_report_type_and_every_data_element(
    iepd: xmlschema.XMLSchema,
) -> None:
    assert {header(p) for p in FIXTURES} == {
        ("GROUP A INCIDENT REPORT", "I"),
        ("GROUP A INCIDENT REPORT", "R"),
        ("GROUP A INCIDENT REPORT", "D"),
        ("GROUP B ARREST REPORT", "A"),
        ("GROUP B ARREST REPORT", "D"),
        ("ZERO REPORT", "A"),
    }
    used = {local(e.tag) for p in FIXTURES for e in ElementTree.parse(p).iter()}
    defined = leaf_elements(iepd)
    assert len(defined) > 40  # the walk found the IEPD's elements, not an empty set
    assert sorted(defined - used) == []


def event_of(raw: bytes, adapter: RmsAdapter | None = None) -> dict:
    """What the connector publishes for a document, as a partner decodes it from Avro."""
    event = (adapter or RmsAdapter(ORI)).to_event(SourceItem(raw, 1, None, where="file f.xml"))
    name, ctx = SOURCE_EVENT[Kind.RMS_RECORD], SerializationContext("t")
    store = SchemaStore()
    return AvroDeserializer(store, name)(AvroSerializer(store, name)(event, ctx), ctx)


def fixture(prefix: str) -> bytes:
    return next(CONFORMANCE.glob(f"{prefix}-*.xml")).read_bytes()


def at(body: dict, path: str) -> Any:
    node: Any = body
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else node[part]
    return node


# Every data element of a Group A report with all fields (fixture 01, the counterpart of the
# IEPD's AllFields sample), the place it lands in the event, and its value there.
ALL_FIELDS = [
    ("2 incident number", "incident_number", "RB26-000101"),
    ("2A cargo theft", "cargo_theft", True),
    ("3 incident date", "incident_date", "2026-11-24"),
    ("3 incident hour", "incident_hour", 23),
    ("3 report date indicator", "incident_date_is_report_date", False),
    ("4 cleared exceptionally", "cleared_exceptionally", "N"),
    ("report month", "report_date", "2026-11-01"),
    ("report type", "report_type", "GROUP A INCIDENT REPORT"),
    ("report action", "report_action", "I"),
    ("6 offense code", "offenses.0.nibrs_code", "220"),
    ("7 attempted/completed", "offenses.1.attempted_completed", "A"),
    ("8 offender suspected of using", "offenses.0.suspected_of_using", ["A", "D"]),
    ("8A bias motivation", "offenses.1.bias_motivations", ["ANTIWHITE"]),
    ("9 location type", "offenses.0.location_type", "20"),
    ("9 location type, second offense", "offenses.1.location_type", "13"),
    ("10 premises entered", "offenses.0.premises_entered", 2),
    ("11 method of entry", "offenses.0.entry_method", "F"),
    ("12 criminal activity", "offenses.1.criminal_activities", ["J", "G"]),
    ("13 weapon/force", "offenses.1.weapons", ["12", "15A", "40"]),
    ("14 loss type", "property.0.loss_type", "STOLEN"),
    ("14 loss type in words", "property.1.status_description", "found in a pawn shop"),
    ("15 property description", "property.0.category", "03"),
    ("16 value", "property.0.value_usd", 24000.0),
    ("17 date recovered", "property.1.recovered_date", "2026-11-26"),
    ("18 stolen motor vehicles", "property.0.quantity", 2),
    ("20 drug type", "property.2.drug_type", "E"),
    (
        "21/22 drug quantity and measure",
        "property.2.drug_measures.0",
        {"quantity": 28.5, "unit": "GM"},
    ),
    ("21/22 second drug measure", "property.2.drug_measures.1", {"quantity": 12.0, "unit": "DU"}),
    ("23 victim sequence number", "persons.0.person_id", "1"),
    ("24 offenses against the victim", "persons.0.offenses", ["220", "13A"]),
    ("25 victim type", "persons.1.victim_type", "L"),
    ("25A officer activity", "persons.1.officer_activity", "06"),
    ("25B officer assignment", "persons.1.officer_assignment", "K"),
    ("25C officer's other ORI", "persons.1.officer_other_ori", "CA0090000"),
    ("26 victim age", "persons.0.age", 47),
    ("26 victim age NN", "persons.2.age_code", "NN"),
    ("27 victim sex", "persons.0.sex", "F"),
    ("28 victim race", "persons.1.race", "A"),
    ("29 victim ethnicity", "persons.0.ethnicity", "H"),
    ("30 victim resident status", "persons.1.resident_status", "N"),
    ("31 aggravated assault circumstances", "persons.0.circumstances", ["01", "03"]),
    ("32 justifiable homicide circumstance", "persons.1.justifiable_homicide_circumstance", "A"),
    ("33 injuries", "persons.0.injuries", ["B", "I"]),
    (
        "34/35 relationships",
        "persons.0.relationships",
        [
            {"offender_id": "1", "relationship": "Family Member_Spouse"},
            {"offender_id": "2", "relationship": "Relationship Unknown"},
        ],
    ),
    ("non-person victim", "persons.3.victim_type", "B"),
    ("36 offender sequence number", "persons.4.person_id", "1"),
    ("37 offender age range", "persons.4.age_min", 28),
    ("37 offender age range, upper", "persons.4.age_max", 35),
    ("37 offender age unknown", "persons.5.age_code", "00"),
    ("38 offender sex", "persons.4.sex", "M"),
    ("39 offender race", "persons.4.race", "B"),
    ("39A offender ethnicity", "persons.4.ethnicity", "U"),
    ("40 arrestee sequence number", "arrests.0.arrestee_id", "1"),
    ("40 arrestee as a person", "persons.6.person_id", "1"),
    ("41 arrest transaction number", "arrests.0.arrest_number", "RB26-A0101"),
    ("42 arrest date", "arrests.0.arrest_date", "2026-11-25"),
    ("43 type of arrest", "arrests.0.arrest_type", "T"),
    ("44 multiple arrestee indicator", "arrests.0.multiple_arrestee_indicator", "C"),
    ("45 arrest offense", "arrests.0.charge", "220"),
    ("46 armed with", "arrests.0.armed_with", ["12", "11A"]),
    ("arrest clears the incident", "arrests.0.clears_incident", True),
    ("47 arrestee age", "persons.6.age", 31),
    ("48-50 arrestee sex, race, ethnicity", "persons.6.sex", "M"),
    ("51 arrestee resident status", "persons.6.resident_status", "R"),
]
# The rest, from the juvenile incident (03) and the Group B arrest (05).
OTHER_FIELDS = [
    ("03", "3 date only: hour unknown", "incident_hour", None),
    ("03", "3 report date indicator", "incident_date_is_report_date", True),
    ("03", "5 exceptional clearance date", "cleared_exceptionally_date", "2026-11-25"),
    ("03", "26 victim age NB", "persons.1", {"age": 0, "age_code": "NB"}),
    ("03", "26 victim age BB (BABY)", "persons.2", {"age": 0, "age_code": "BB"}),
    ("03", "34/35 one offender, two victims", "persons.2.relationships.0.offender_id", "1"),
    ("03", "52 juvenile disposition", "arrests.0.juvenile_disposition", "R"),
    ("05", "Group B report type", "report_type", "GROUP B ARREST REPORT"),
    ("05", "Group B: no incident number", "incident_number", None),
    ("05", "45 Group B arrest offense", "arrests.0.charge", "90D"),
    ("05", "45 its description", "arrests.0.charge_description", "Driving under the influence"),
    ("05", "47 Group B arrestee age", "persons.0.age", 44),
]


@pytest.mark.parametrize(
    ("element", "path", "expected"), ALL_FIELDS, ids=[f[0] for f in ALL_FIELDS]
)
def test_every_all_fields_element_round_trips_into_the_event(
    element: str, path: str, expected: Any
) -> None:
    got = at(event_of(fixture("01"))["body"], path)
    if isinstance(expected, dict):
        got = {k: got[k] for k in expected}
    assert got == expected, element


@pytest.mark.parametrize(
    ("name", "element", "path", "expected"), OTHER_FIELDS, ids=[f[1] for f in OTHER_FIELDS]
)
def test_the_other_report_elements_round_trip_into_the_event(
    name: str, element: str, path: str, expected: Any
) -> None:
    got = at(event_of(fixture(name))["body"], path)
    if isinstance(expected, dict):
        got = {k: got[k] for k in expected}
    assert got == expected, element


def test_the_report_elements_that_are_not_body_fields_shape_the_envelope() -> None:
    """ORI (element 1) is the owner; the action the op; the message time the version."""
    insert = event_of(fixture("01"))["envelope"]
    assert (insert["source_ori"], insert["op"], insert["record_id"]) == (
        ORI,
        "UPSERT",
        "RB26-000101",
    )
    written = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # MessageDateTime 06:00 -08:00
    assert insert["version"] == int(written.timestamp() * 1000) * 10 + 1


# ---------------------------------------------------------------------------------------
# On the real broker


def drop_directory(region: Region, target: Path) -> Path:
    """The fixtures as the region's local agency's RMS would drop them."""
    target.mkdir(parents=True, exist_ok=True)
    for path in FIXTURES:
        (target / path.name).write_bytes(
            path.read_bytes().replace(ORI.encode(), region.local.encode())
        )
    return target


def producer_dead_letters(region: Region, name: str) -> list[dict]:
    """The dead letters of this test's connector, read up to the one for ``name``, which each
    test drops last: a dead letter before it would be there too (same key, same partition)."""
    topic = dlq_topic(Stage.PRODUCERS)
    decode = AvroDeserializer(SchemaStore(), DEAD_LETTER)

    def ours(records: list) -> list[dict]:
        letters = (decode(m.value(), SerializationContext(topic)) for m in records)
        return [d for d in letters if d["source_ori"] == region.local]

    records = read_topic(
        region.settings.bootstrap_servers,
        topic,
        lambda r: any(d["position"] == f"file {name}" for d in ours(r)),
    )
    return ours(records)


@pytest.mark.broker
def test_every_report_type_through_the_connector(region: Region, tmp_path: Path) -> None:
    drop = drop_directory(region, tmp_path / "nibrs")
    # Last: another agency's report, the one dead letter this run may make.
    (drop / "99-other-agency.xml").write_bytes(fixture("05"))
    result = mutualaid_cli(
        region, "connect", "rms", "--agency", region.local, "--source", str(drop)
    )
    assert result.returncode == 0, result.stderr
    assert "read 8  published 6  rejected 1  skipped 1" in result.stdout

    events = source_events(region.settings.bootstrap_servers, region.local, Kind.RMS_RECORD, 6)
    by_file = {e["envelope"]["source_position"]: e for e in events}
    seen = {
        name.removeprefix("file "): (e["envelope"]["op"], e["envelope"]["record_id"])
        for name, e in by_file.items()
    }
    assert seen == {
        "01-group-a-insert.xml": ("UPSERT", "RB26-000101"),
        "02-group-a-replace.xml": ("UPSERT", "RB26-000101"),
        "03-group-a-juvenile.xml": ("UPSERT", "RB26-000102"),
        "04-group-a-delete.xml": ("DELETE", "RB26-000102"),
        "05-group-b-arrest.xml": ("UPSERT", "arrest-RB26-B0077"),
        "06-group-b-arrest-delete.xml": ("DELETE", "arrest-RB26-B0077"),
    }

    def version(name: str) -> int:
        return by_file[f"file {name}"]["envelope"]["version"]

    assert version("01-group-a-insert.xml") < version("02-group-a-replace.xml")
    assert version("03-group-a-juvenile.xml") < version("04-group-a-delete.xml")
    assert version("05-group-b-arrest.xml") < version("06-group-b-arrest-delete.xml")
    assert len({e["envelope"]["event_id"] for e in events}) == 6

    def body(name: str) -> dict:
        return by_file[f"file {name}"]["body"]

    replaced = body("02-group-a-replace.xml")
    assert (replaced["incident_date"], replaced["incident_hour"]) == ("2026-11-24", 23)
    assert [o["nibrs_code"] for o in replaced["offenses"]] == ["220", "13A"]
    assert replaced["offenses"][0]["premises_entered"] == 3
    assert [(p["role"], p["person_id"]) for p in replaced["persons"]] == [
        ("VICTIM", "1"), ("VICTIM", "2"), ("VICTIM", "3"), ("VICTIM", "4"),
        ("OFFENDER", "1"), ("OFFENDER", "2"), ("ARRESTEE", "1"),
    ]  # fmt: skip
    assert [(a["arrestee_id"], a["arrest_number"]) for a in replaced["arrests"]] == [
        ("1", "RB26-A0101")
    ]
    juvenile = by_file["file 03-group-a-juvenile.xml"]
    assert juvenile["envelope"]["labels"] == ["juvenile"]
    assert (juvenile["body"]["incident_date"], juvenile["body"]["incident_hour"]) == (
        "2026-11-21",
        None,
    )
    arrest = body("05-group-b-arrest.xml")
    assert [(p["role"], p["person_id"], p["age"]) for p in arrest["persons"]] == [
        ("ARRESTEE", "1", 44)
    ]
    assert [(a["arrest_number"], a["arrest_date"], a["charge"]) for a in arrest["arrests"]] == [
        ("RB26-B0077", "2026-11-24", "90D")
    ]
    for name in ("04-group-a-delete.xml", "06-group-b-arrest-delete.xml"):
        assert body(name) is None

    letters = producer_dead_letters(region, "99-other-agency.xml")
    assert [(d["error_type"], d["position"]) for d in letters] == [
        ("ori_mismatch", "file 99-other-agency.xml")
    ]
    checkpoint = json.loads(
        next((region.settings.data_dir / "checkpoints").glob("*.json")).read_text()
    )
    kept = checkpoint["adapter_state"]["records"]
    assert kept["RB26-000101"]["v"] == version("02-group-a-replace.xml")

    # Another process, another Replace at the same MessageDateTime: the state the checkpoint
    # kept numbers it above the last one, so it is a new event rather than the old id again.
    again = fixture("02").replace(b"<nc:Amount>1400<", b"<nc:Amount>1500<")
    (drop / "08-group-a-replace-again.xml").write_bytes(
        again.replace(ORI.encode(), region.local.encode())
    )
    rerun = mutualaid_cli(region, "connect", "rms", "--agency", region.local, "--source", str(drop))
    assert rerun.returncode == 0, rerun.stderr
    assert "read 1  published 1  rejected 0" in rerun.stdout
    events = source_events(region.settings.bootstrap_servers, region.local, Kind.RMS_RECORD, 7)
    newest = [e for e in events if e["envelope"]["source_position"].startswith("file 08-")]
    assert [e["envelope"]["version"] for e in newest] == [version("02-group-a-replace.xml") + 1]


@pytest.mark.broker
def test_a_replace_supersedes_in_the_partners_index(region: Region, tmp_path: Path) -> None:
    (region.settings.agreements_dir / "rms.yaml").write_text(
        yaml.safe_dump(
            {
                "agreements": [
                    {
                        "id": "local-rms-to-county",
                        "version": 1,
                        "owner": region.local,
                        "partners": [region.county],
                        "kinds": ["rms.record"],
                    }
                ]
            }
        )
    )
    drop = drop_directory(region, tmp_path / "nibrs")
    for name in ("02", "03", "04", "06", "07"):
        next(drop.glob(f"{name}-*.xml")).unlink()
    stored = (
        "select record_id, version, deleted, cast(body as text) from records "
        "where kind = 'rms.record' order by record_id"
    )

    def county_has(record_id: str, version: int) -> list[tuple]:
        rows = index_rows(region.settings, region.county, stored)
        return [r for r in rows if r[0] == record_id and r[1] == version]

    def connect() -> dict[str, dict]:
        result = mutualaid_cli(
            region, "connect", "rms", "--agency", region.local, "--source", str(drop)
        )
        assert result.returncode == 0, result.stderr
        count = len(list(drop.glob("*.xml")))
        events = source_events(
            region.settings.bootstrap_servers, region.local, Kind.RMS_RECORD, count
        )
        return {e["envelope"]["source_position"]: e["envelope"] for e in events}

    with running_stages(region, tmp_path / "logs", [region.county]):
        first = connect()
        insert = first["file 01-group-a-insert.xml"]["version"]
        arrest = first["file 05-group-b-arrest.xml"]["version"]
        wait_for(lambda: county_has("RB26-000101", insert), 60, "the county to index the insert")
        wait_for(lambda: county_has("arrest-RB26-B0077", arrest), 60, "the arrest")
        # The Replace comes later, with the same MessageDateTime: it must still win.
        (drop / "02-group-a-replace.xml").write_bytes(
            fixture("02").replace(ORI.encode(), region.local.encode())
        )
        replace = connect()["file 02-group-a-replace.xml"]["version"]
        assert replace > insert
        rows = wait_for(
            lambda: county_has("RB26-000101", replace), 60, "the county to index the replace"
        )
    _, _, deleted, body = rows[0]  # type: ignore[index]
    assert not deleted
    held = json.loads(body)
    assert held["report_action"] == "R"
    assert held["offenses"][0]["premises_entered"] == 3
    assert [p["value_usd"] for p in held["property"]][1] == 1400.0
    # What a detective searches for: the arrest, by its transaction number.
    found = mutualaid_cli(
        region, "search", "--agency", region.county, "--text", "RB26-B0077",
        "--reason", "case 26-17", "--user", "det.cho", "--json",
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert [json.loads(line)["record_id"] for line in found.stdout.splitlines()] == [
        "arrest-RB26-B0077"
    ]
    shown = mutualaid_cli(
        region, "search", "--agency", region.county, "--text", "RB26-B0077",
        "--reason", "case 26-17", "--user", "det.cho",
    )  # fmt: skip
    assert "arrest-RB26-B0077 arrest RB26-B0077 for Driving under the influence" in shown.stdout


def test_a_zero_report_publishes_nothing() -> None:
    with pytest.raises(Skipped):
        event_of(fixture("07"))


def test_agreements_can_act_on_the_new_fields_and_the_index_keeps_them(tmp_path: Path) -> None:
    """Field paths into the new lists (arrests, relationships, drug measures) work for the
    router's disclosure, the shared event encodes, and the index stores and searches it."""
    generate_keypair("CA0990200", tmp_path / "pub", tmp_path / "priv")
    event = event_of(fixture("01").replace(ORI.encode(), b"CA0990100"), RmsAdapter("CA0990100"))
    actions = {
        "arrests[].arrest_number": "encrypt",
        "persons[].relationships[].relationship": "hash",
        "persons[].injuries": "drop",
        "property[].drug_measures[].quantity": "drop",
    }
    shared = shared_by_router(event, "CA0990200", actions, tmp_path / "pub", b"k" * 32)
    AvroSerializer(SchemaStore(), SHARED_EVENT[Kind.RMS_RECORD])(shared, SerializationContext("t"))
    body = shared["body"]
    assert body["arrests"][0]["arrest_number"] is None  # sealed for the partner
    assert body["persons"][0]["relationships"][0]["relationship"] != "Family Member_Spouse"
    assert [p["injuries"] for p in body["persons"]] == [[]] * 7  # a dropped list is empty
    assert body["property"][2]["drug_measures"][0]["quantity"] is None
    assert body["arrests"][0]["charge"] == "220"  # what no action names goes in clear
    row = indexed(shared)
    assert row.incident_number == "RB26-000101"
    assert "RB26-A0101" not in (row.text or "")  # the sealed arrest number is not searchable
    assert "ANTIWHITE" in (row.text or "")
    opened = open_kept(row.sealed or "", load_keyring("CA0990200", tmp_path / "priv"))
    assert opened == {"arrests[0].arrest_number": b'"RB26-A0101"'}  # sealed as JSON
