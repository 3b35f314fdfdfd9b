"""Withdrawals and recalls on the real broker, router and projector: whatever reduces what a
partner may hold reaches what it already holds, and its index no longer finds the open copy."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from consumers.index.query import Criteria, Hit
from consumers.search import SearchRequest, run_search
from mutualaid.crypto import generate_hash_key, generate_keypair
from mutualaid.serde import (
    SOURCE_EVENT,
    AvroDeserializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import Kind, changelog_topic, share_topic, source_topic
from streams.sourcereader import SourceReader
from support.brokers import read_topic, shared_events
from support.events import SSN, rms_event
from support.indexes import index_rows
from support.processes import mutualaid_cli, running_stages, wait_for
from support.regions import Region, publish_source

NOW = datetime.now(UTC).replace(microsecond=0)
# The adult the reports name (found by name and date of birth, or by SSN).
JOHN = {"role": "ARRESTEE", "first_name": "John", "last_name": "Doe", "dob": "1980-05-01"}


def write_agreements(region: Region, agreements: list[dict]) -> None:
    path = region.settings.agreements_dir / "test.yaml"
    path.write_text(yaml.safe_dump({"agreements": agreements}))


def rms_to_county(region: Region, **more: object) -> None:
    """The local agency's reports shared with the county, under one agreement."""
    agreement = {
        "id": "rms-to-county",
        "version": 1,
        "owner": region.local,
        "partners": [region.county],
        "kinds": ["rms.record"],
    }
    write_agreements(region, [agreement | more])


def by_ssn(region: Region, agency: str) -> list[Hit]:
    """What the agency's own audited search finds by the SSN (in clear or by blind index)."""
    request = SearchRequest(agency, "tester", "case 1", Criteria(identifier=SSN))
    return run_search(region.settings, request)


@pytest.mark.broker
def test_a_seal_with_a_lower_version_still_removes_the_record(
    region: Region, tmp_path: Path
) -> None:
    """Issue 11 case 5: the partner holds version 5; the owner seals with version 3."""
    local, county = region.local, region.county
    rms_to_county(region)
    with running_stages(region, tmp_path / "logs", [county]):
        publish_source(
            region,
            Kind.RMS_RECORD,
            [rms_event(local, record_id="R-SEAL", version=5, person=JOHN, at=NOW)],
        )
        wait_for(lambda: by_ssn(region, county), 60, "the county to hold version 5")
        publish_source(
            region,
            Kind.RMS_RECORD,
            [rms_event(local, ["sealed"], record_id="R-SEAL", version=3, person=JOHN, at=NOW)],
        )
        wait_for(lambda: not by_ssn(region, county), 60, "the sealed record to leave the index")
    found = mutualaid_cli(
        region, "search", "--agency", county, "--id", SSN, "--reason", "case 1", "--json"
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout == ""


@dataclass(frozen=True)
class Narrowing:
    """Agreements that let the county hold a report with the SSN in clear, then the change
    that must take it back; ``stopped``: the change is made while the router is not running."""

    name: str
    before: Callable[[Region], list[dict]]
    after: Callable[[Region], list[dict]]
    still_open: Callable[[Region], bool]  # whether the county still holds the open copy
    stopped: bool = False
    # Rules in force besides the shipped ones, before and after the change; and the county's
    # assurances after it (None: unchanged).
    rules_before: tuple[dict, ...] = ()
    rules_after: tuple[dict, ...] = ()
    county_assurances_after: list[dict] | None = None


# A rule every CA agency's reports follow, the county outside it: "rule added".
NO_CA_REPORTS_TO_COUNTIES = {
    "id": "test-no-reports-to-counties",
    "version": 1,
    "citation": "test rule",
    "description": "CA reports go only to local and state agencies.",
    "governs": {"kinds": ["rms.record"], "owner_states": ["CA"]},
    "partners_must": {"be_types": ["local", "state"]},
}
# A rule that wants a documented assurance for CA reports: "assurance expired".
REPORTS_NEED_ASSURANCE = {
    "id": "test-reports-need-assurance",
    "version": 1,
    "citation": "test rule",
    "description": "CA reports go only to partners with an assurance on file.",
    "governs": {"kinds": ["rms.record"], "owner_states": ["CA"]},
    "partners_must": {"have_assurance": True},
}


def assurance(rule: str, *, expires_in_days: int) -> dict:
    today = datetime.now(UTC).date()
    return {
        "rule": rule,
        "document": "test MOU",
        "signed": str(today - timedelta(days=400)),
        "expires": str(today + timedelta(days=expires_in_days)),
    }


def use_rules(region: Region, tmp_path: Path, rules: tuple[dict, ...]) -> None:
    """The shipped rules plus ``rules``, in a folder of the region's own that its stages read."""
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    for shipped in Path("deploy/rules").glob("*.yaml"):
        (folder / shipped.name).write_text(shipped.read_text())
    (folder / "test.yaml").write_text(yaml.safe_dump({"rules": list(rules)}))
    values = yaml.safe_load(region.config_file.read_text())
    if values.get("rules_dir") != str(folder):
        region.config_file.write_text(yaml.safe_dump(values | {"rules_dir": str(folder)}))


def set_county_assurances(region: Region, assurances: list[dict]) -> None:
    registry = yaml.safe_load(region.settings.agencies_file.read_text())
    for agency in registry["agencies"]:
        if agency["ori"] == region.county:
            agency["assurances"] = assurances
    region.settings.agencies_file.write_text(yaml.safe_dump(registry))


def to_county(region: Region, id: str = "rms-to-county", **terms: object) -> dict:
    return {
        "id": id,
        "version": 1,
        "owner": region.local,
        "partners": [region.county],
        "kinds": ["rms.record"],
    } | terms


def to_neighbour(region: Region) -> dict:
    return {
        "id": "rms-to-neighbour",
        "version": 1,
        "owner": region.local,
        "partners": [region.neighbour],
        "kinds": ["rms.record"],
    }


def clear_ssn_indexed(region: Region) -> bool:
    """Whether the county's index holds the report with the SSN in clear (by its own search,
    and by the rows themselves, in case a search would miss it)."""
    if by_ssn(region, region.county):  # opens (so creates) the index if not there yet
        return True
    rows = index_rows(
        region.settings,
        region.county,
        f"select count(*) from records where deleted = false and cast(body as text) like '%{SSN}%'",
    )
    return rows != [(0,)]


def clear_ssn_on_topic(region: Region) -> bool:
    """Whether the latest copy of the report on the county's share topic has the SSN in clear
    (what an encrypting agreement protects: the topic; the county's index opens it)."""
    held = copies(region, region.county)
    if not held:
        return False
    latest = held[-1]
    return latest["body"] is not None and latest["body"]["persons"][0]["ssn"] == SSN


def copies(region: Region, partner: str) -> list[dict]:
    topic = share_topic(partner, Kind.RMS_RECORD)
    records = read_topic(region.settings.bootstrap_servers, topic, lambda r: False, timeout=3)
    events = shared_events(region.settings, partner, Kind.RMS_RECORD, records)
    return [e for e in events if e is not None]  # tombstones aside


NARROWINGS = [
    Narrowing(
        "partner removed",
        lambda r: [to_county(r)],
        lambda r: [to_neighbour(r)],
        clear_ssn_indexed,
    ),
    Narrowing(
        "tier lowered full -> pointer",
        lambda r: [to_county(r)],
        lambda r: [to_county(r, version=2, tier="pointer")],
        clear_ssn_indexed,
    ),
    Narrowing(
        "field action tightened keep -> drop",
        lambda r: [to_county(r, fields={"persons[].ssn": "keep"})],
        lambda r: [to_county(r, version=2, fields={"persons[].ssn": "drop"})],
        clear_ssn_indexed,
    ),
    Narrowing(
        "field action tightened keep -> encrypt",
        lambda r: [to_county(r)],
        lambda r: [to_county(r, version=2, fields={"persons[].ssn": "encrypt"})],
        clear_ssn_on_topic,
    ),
    Narrowing(
        # Overlapping agreements already combine to the most protective (test_policy_*), so
        # the copy held is opened by an agreement alone, which is then removed for another.
        "agreement removed, another more protective one in force",
        lambda r: [to_county(r, "a-clear")],
        lambda r: [to_county(r, "b-drops-ssn", fields={"persons[].ssn": "drop"})],
        clear_ssn_indexed,
    ),
    Narrowing(
        "edit made while the router was stopped",
        lambda r: [to_county(r)],
        lambda r: [to_county(r, version=2, fields={"persons[].ssn": "drop"})],
        clear_ssn_indexed,
        stopped=True,
    ),
    Narrowing(
        "rule added",
        lambda r: [to_county(r)],
        lambda r: [to_county(r)],
        clear_ssn_indexed,
        rules_after=(NO_CA_REPORTS_TO_COUNTIES,),
    ),
    # The assurance on file is replaced by one that has expired (the registry is reloaded with
    # the agreements). Time alone expiring it is Policy.next_change, tested with an injected
    # clock in test_recall_router.py.
    Narrowing(
        "assurance expired",
        lambda r: [to_county(r)],
        lambda r: [to_county(r)],
        clear_ssn_indexed,
        rules_before=(REPORTS_NEED_ASSURANCE,),
        rules_after=(REPORTS_NEED_ASSURANCE,),
        county_assurances_after=[assurance("test-reports-need-assurance", expires_in_days=-1)],
    ),
]


@pytest.mark.broker
@pytest.mark.parametrize("case", NARROWINGS, ids=[n.name for n in NARROWINGS])
def test_narrowing_reaches_what_the_partner_already_holds(
    region: Region, tmp_path: Path, case: Narrowing
) -> None:
    """Issue 11 case 4: each kind of narrowing, applied to a copy the county already holds."""
    s = region.settings
    generate_keypair(region.county, s.public_keys_dir, s.private_keys_dir)
    generate_hash_key(s.hash_key_file)  # pointers' references and match keys need it
    write_agreements(region, case.before(region))
    if case.rules_before or case.rules_after:
        use_rules(region, tmp_path, case.rules_before)
    if case.county_assurances_after is not None:
        set_county_assurances(
            region, [assurance("test-reports-need-assurance", expires_in_days=30)]
        )

    def change() -> None:
        if case.rules_after:
            use_rules(region, tmp_path, case.rules_after)
        if case.county_assurances_after is not None:
            set_county_assurances(region, case.county_assurances_after)
        write_agreements(region, case.after(region))

    with running_stages(region, tmp_path / "first", [region.county]):
        publish_source(
            region,
            Kind.RMS_RECORD,
            [rms_event(region.local, record_id="R-NARROW", version=1, person=JOHN, at=NOW)],
        )
        wait_for(lambda: case.still_open(region), 60, "the county to hold the open copy")
        if not case.stopped:
            change()
            wait_for(lambda: not case.still_open(region), 60, f"the recall ({case.name})")
    if case.stopped:
        change()
        with running_stages(region, tmp_path / "second", [region.county]):
            wait_for(lambda: not case.still_open(region), 60, f"the recall ({case.name})")
    # The more protective copy, or the withdrawal, replaced the open one at the same record
    # version, by a higher revision.
    # (Sorted by revision: a pointer has another key, so it may sit on another partition and
    # be read before the copy it replaces.)
    first, *_, latest = sorted(
        copies(region, region.county), key=lambda c: c["disclosure"]["revision"]
    )
    assert latest["envelope"]["version"] == first["envelope"]["version"] == 1
    assert latest["disclosure"]["revision"] > first["disclosure"]["revision"]


@pytest.mark.broker
def test_the_source_reader_reads_back_by_position_and_says_when_it_cannot(region: Region) -> None:
    events = [
        rms_event(region.local, record_id=f"R-{n}", version=1, person=JOHN, at=NOW)
        for n in range(3)
    ]
    publish_source(region, Kind.RMS_RECORD, events, partition=1)
    topic = source_topic(region.local, Kind.RMS_RECORD)
    reader = SourceReader(region.settings, "test-recall-reader", timeout=5)
    try:
        decode = AvroDeserializer(SchemaStore(), SOURCE_EVENT[Kind.RMS_RECORD])
        ctx = SerializationContext(topic)
        ids = [
            decode(reader.read(topic, 1, offset), ctx)["envelope"]["record_id"]
            for offset in (2, 0, 1)
        ]
        assert ids == ["R-2", "R-0", "R-1"]
        assert reader.read(topic, 1, 99) is None  # no record there: never read as another
    finally:
        reader.close()


@pytest.mark.broker
def test_a_pointer_says_only_whom_to_call_and_is_found_by_what_the_owner_allows(
    region: Region, tmp_path: Path
) -> None:
    """Issue 11 case 6: a juvenile report shared as a pointer, found by the SSN."""
    s = region.settings
    generate_hash_key(s.hash_key_file)
    write_agreements(
        region,
        [
            to_county(
                region,
                tier="pointer",
                pointer_found_by=["name_dob", "identifier"],
                # juvenile is a protected label: this agreement lets such records out, as
                # pointers only
                conditions={"exclude_labels": ["juvenile"], "on_excluded_label": "pointer"},
            )
        ],
    )
    juvenile = rms_event(
        region.local, ["juvenile"], record_id="RB-2026-0042", version=1, person=JOHN, at=NOW
    )
    with running_stages(region, tmp_path / "logs", [region.county]):
        publish_source(region, Kind.RMS_RECORD, [juvenile])
        (hit,) = wait_for(lambda: by_ssn(region, region.county), 60, "the pointer to be found")
    (sent,) = copies(region, region.county)
    assert sent["body"] is None and sent["envelope"]["labels"] == []
    assert sent["envelope"]["record_id"] == hit.record_id
    assert "RB-2026-0042" not in str(sent)  # not the incident number, anywhere
    assert SSN not in str(sent) and "123456789" not in str(sent)
    found = mutualaid_cli(
        region, "search", "--agency", region.county, "--name", "John Doe", "--dob",
        "1980-05-01", "--reason", "case 7", "--user", "det.rivera",
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert (
        f"{region.local} Test City PD holds a matching RMS report record: call " in found.stdout
    ), found.stdout
    assert "RB-2026-0042" not in found.stdout and "juvenile" not in found.stdout
    # Logged like any other search: who, why, what, and that it found one.
    logged = index_rows(s, region.county, 'select "user", reason, result_count from search_audit')
    assert ("det.rivera", "case 7", 1) in logged


@pytest.mark.broker
def test_the_router_forgets_a_record_once_every_copy_is_past_its_retention(
    region: Region, tmp_path: Path
) -> None:
    """The holders table keeps what partners may still hold, not everything ever shared: an
    entry goes a day after its last copy's retain_until, its tombstone on the changelog."""
    local, county = region.local, region.county
    rms_to_county(region, retention_days=30)
    changelog = changelog_topic(region.settings.router_id, "holders")
    old, recent = f"rms.record/{local}/R-OLD", f"rms.record/{local}/R-NEW"

    def written(records: list) -> dict[str, bytes | None]:
        return {json.loads(m.key()): m.value() for m in records}  # the last state of each key

    with running_stages(region, tmp_path / "logs", [county]):
        publish_source(
            region,
            Kind.RMS_RECORD,
            [
                # Retained until 9 days ago, plus the day's grace: past.
                rms_event(local, record_id="R-OLD", at=NOW - timedelta(days=40)),
                rms_event(local, record_id="R-NEW", at=NOW),
            ],
        )
        # Shared (the changelog exists, the router made it); the old copy is purged at once.
        wait_for(lambda: by_ssn(region, county), 60, "the county to hold the recent report")
        records = read_topic(
            region.settings.bootstrap_servers,
            changelog,
            lambda r: written(r).get(old, b"") is None and recent in written(r),
            60,
        )
    state = written(records)
    assert state[old] is None  # forgotten: a tombstone
    assert json.loads(state[recent] or b"{}")["held_until"] == int(
        (NOW - timedelta(hours=1) + timedelta(days=30)).timestamp() * 1000
    )
