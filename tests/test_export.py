"""`mutualaid export` and `import`: everything an agency has, out in open formats and back in.

Real processes on the real broker: connectors, the router and a projector fill the topics and
the county's SQLite index; the export is read back with plain fastavro and json; the import
rebuilds the county's index on PostgreSQL, which then answers searches as the original did.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import fastavro
import pytest
import xmlschema

from consumers.export import Exporter, Window
from consumers.index import open_index
from consumers.index.query import Criteria
from mutualaid.agencies import load_registry
from mutualaid.crypto import generate_keypair
from mutualaid.events import new_envelope
from mutualaid.policy import load_policy
from mutualaid.settings import Settings
from mutualaid.topics import Kind
from producers import samples
from producers.contract import Skipped, SourceItem
from producers.rms import RmsAdapter
from support.processes import mutualaid_cli, running_stages, wait_for
from support.regions import Region, publish_source

HEADER = ",".join(samples.HEADER)
LOCAL_ROWS = [
    "L-1,7ABC123,CA,2026-11-24T21:14:03-08:00,0.93,C1,Main,38.94,-119.98,N,Kia,Rio,",
    "L-2,8XYZ999,CA,2026-11-25T22:01:40-08:00,0.88,C2,Hwy 50,38.93,-119.97,E,Kia,Rio,",
]
NEIGHBOUR_ROWS = [
    "N-1,7ABC123,CA,2026-11-24T23:30:00-08:00,0.95,D1,Stateline,38.96,-119.94,W,Toyota,Camry,",
]


DATA = Path(__file__).parent / "data"
NIBRS_XSD = DATA / "nibrs-iepd-4.2" / "base-xsd" / "nibrs" / "4.2" / "nibrs.xsd"
FIXTURE_ORI = "ZZ0000001"  # tests/data/rms/conformance/ is of this agency


def plate_answers(settings: Settings, ori: str, plate: str) -> list[tuple[str, str, str]]:
    index = open_index(settings, ori)
    try:
        hits = index.search(Criteria(plate=plate))
        return sorted((h.source_ori, h.record_id, json.dumps(h.body, sort_keys=True)) for h in hits)
    finally:
        index.close()


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.broker
def test_export_holds_everything_in_open_formats_and_import_rebuilds_the_index(
    region: Region, tmp_path: Path, postgres_url: str
) -> None:
    # The county has a key, so its share topics are sealed whole (share_sealing's default):
    # its export opens them, and received/ holds the shared events as before.
    s = region.settings
    generate_keypair(region.county, s.public_keys_dir, s.private_keys_dir)
    for ori, rows in ((region.local, LOCAL_ROWS), (region.neighbour, NEIGHBOUR_ROWS)):
        csv = tmp_path / f"{ori}.csv"
        csv.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
        done = mutualaid_cli(region, "connect", "alpr", "--agency", ori, "--source", str(csv))
        assert done.returncode == 0, done.stderr
    county = region.county
    with running_stages(region, tmp_path / "logs", [county]):
        wait_for(
            lambda: len(plate_answers(region.settings, county, "7ABC123")) == 2,
            60,
            "the county's index to hold both reads of 7ABC123",
        )
        searched = mutualaid_cli(
            region, "search", "--agency", county, "--plate", "7ABC123",
            "--reason", "case 24-007", "--user", "det.okafor",
        )  # fmt: skip
        assert searched.returncode == 0, searched.stderr
        out = tmp_path / "export"

        def exported() -> dict | None:
            # The search log reaches audit.search through the projector's outbox.
            if out.exists():
                subprocess.run(["rm", "-rf", str(out)], check=True)
            done = mutualaid_cli(region, "export", "--agency", county, "--out", str(out))
            assert done.returncode == 0, done.stderr
            manifest = json.loads((out / "manifest.json").read_text())
            files = {f["path"]: f for f in manifest["files"]}
            return manifest if files["audit/search.ndjson"]["records"] == 1 else None

        manifest = wait_for(exported, 30, "the export to hold the county's search")
    files = {f["path"]: f for f in manifest["files"]}
    assert manifest["agency"] == county
    # Every file is what the manifest says: size, checksum, and the same records in both formats.
    for entry in manifest["files"]:
        data = (out / entry["path"]).read_bytes()
        assert len(data) == entry["bytes"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    with (out / "received" / "alpr.read.avro").open("rb") as fo:
        reader = fastavro.reader(fo)
        assert reader.writer_schema["name"] == "mutualaid.alpr.SharedReadEvent"
        received = list(reader)
    assert sorted(e["envelope"]["record_id"] for e in received) == sorted(
        e["envelope"]["record_id"] for e in lines(out / "received" / "alpr.read.ndjson")
    )
    assert sorted((e["envelope"]["source_ori"], e["body"]["plate"]) for e in received) == sorted(
        [(region.local, "7ABC123"), (region.local, "8XYZ999"), (region.neighbour, "7ABC123")]
    )
    assert files["received/alpr.read.avro"]["records"] == 3
    # The county publishes nothing of its own; the audit is of its own records only (none).
    assert files["own/alpr.read.avro"]["records"] == 0
    assert files["audit/dissemination.avro"]["records"] == 0
    (search,) = lines(out / "audit" / "search.ndjson")
    assert (search["user"], search["reason"], search["result_count"]) == (
        "det.okafor",
        "case 24-007",
        2,
    )
    agreements = (out / "agreements.yaml").read_text()
    assert "local-to-county" in agreements and "neighbour-to-ca" in agreements
    assert region.federal not in (out / "registry.yaml").read_text()

    # The owner's export holds its own records, and every decision about them.
    local_out = tmp_path / "local-export"
    done = mutualaid_cli(region, "export", "--agency", region.local, "--out", str(local_out))
    assert done.returncode == 0, done.stderr
    own = lines(local_out / "own" / "alpr.read.ndjson")
    assert sorted(e["envelope"]["record_id"] for e in own) == sorted(
        {
            e["envelope"]["record_id"]
            for e in received
            if e["envelope"]["source_ori"] == region.local
        }
    )
    decisions = lines(local_out / "audit" / "dissemination.ndjson")
    assert {(d["partner_ori"], d["decision"]) for d in decisions} == {(county, "SHARED")}
    assert len(decisions) == len(own)
    # --since narrows by when records occurred.
    narrow = tmp_path / "narrow"
    done = mutualaid_cli(
        region, "export", "--agency", region.local, "--out", str(narrow),
        "--since", "2026-11-25T12:00:00+00:00",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [e["envelope"]["record_id"] for e in lines(narrow / "own" / "alpr.read.ndjson")] == [
        e["envelope"]["record_id"] for e in own if e["body"]["plate"] == "8XYZ999"
    ]

    # Import into an empty index on the other backend: the same answers.
    before = plate_answers(region.settings, county, "7ABC123")
    env = {**os.environ, "MUTUALAID_INDEX_URL": postgres_url}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "--config", str(region.config_file),
         "import", "--agency", county, "--from", str(out)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "rows changed" in done.stdout
    on_postgres = region.settings.model_copy(update={"index_url": postgres_url})
    assert plate_answers(on_postgres, county, "7ABC123") == before
    assert plate_answers(on_postgres, county, "8XYZ999") == plate_answers(
        region.settings, county, "8XYZ999"
    )


def test_import_refuses_a_folder_that_is_not_an_export(region: Region, tmp_path: Path) -> None:
    done = mutualaid_cli(region, "import", "--agency", region.county, "--from", str(tmp_path))
    assert done.returncode == 2
    assert "not an export" in done.stderr


def rms_events(ori: str) -> list[dict]:
    """The NIBRS conformance reports (insert, replace, juvenile, delete, arrests) as the RMS
    connector of ``ori`` publishes them, the zero report skipped as it skips it."""
    adapter, events = RmsAdapter(ori), []
    for path in sorted((DATA / "rms" / "conformance").glob("*.xml")):
        raw = path.read_bytes().replace(FIXTURE_ORI.encode(), ori.encode())
        try:
            events.append(adapter.to_event(SourceItem(raw, 1, None, where=path.name)))  # type: ignore[arg-type]
        except Skipped:
            continue
    return events


@pytest.mark.broker
def test_own_rms_records_are_exported_as_nibrs_xml_that_validates(
    region: Region, tmp_path: Path
) -> None:
    ori = region.local
    events = rms_events(ori)
    # An RMS row polled from SQL without an incident number: no NIBRS report can carry it.
    unnumbered = {
        "envelope": new_envelope(
            source_ori=ori,
            source_system="sql",
            kind=Kind.RMS_RECORD,
            record_id="row-9",
            version=1,
            occurred_at=events[0]["envelope"]["occurred_at"],
        ),
        "body": {"narrative": "found property"},
    }
    publish_source(region, Kind.RMS_RECORD, [*events, unnumbered], partition=0)
    settings = region.settings
    registry = load_registry(settings.agencies_file)
    out = tmp_path / "export"

    def exported() -> dict | None:
        manifest_path = Exporter(
            settings, registry, load_policy(settings.agreements_dir, registry), ori, out, Window()
        ).run()
        manifest = json.loads(manifest_path.read_text())
        files = {f["path"]: f for f in manifest["files"]}
        done = files["own/rms.record.avro"]["records"] == len(events) + 1
        return manifest if done else None

    manifest = wait_for(exported, 30, "the export to hold every RMS event")
    assert isinstance(manifest, dict)
    files = {f["path"]: f for f in manifest["files"]}
    entry = files["own/rms.record.nibrs/SHA256SUMS"]
    assert entry["format"] == "nibrs-xml"
    assert entry["records"] == len(events)
    assert manifest["nibrs_skipped"] == {
        "an incident report needs its incident number (NIBRS element 2)": 1
    }
    directory = out / "own" / "rms.record.nibrs"
    sums = [line.split("  ") for line in (directory / "SHA256SUMS").read_text().splitlines()]
    assert sorted(name for _, name in sums) == sorted(p.name for p in directory.glob("*.xml"))
    schema = xmlschema.XMLSchema(str(NIBRS_XSD))
    actions = []
    for (digest, name), event in zip(sums, events, strict=True):
        data = (directory / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
        errors = [str(e) for e in schema.iter_errors(data.decode())]
        assert errors == [], f"{name} does not validate: {errors[0] if errors else ''}"
        # Read back by the RMS connector: the same record, every NIBRS data element kept.
        again = RmsAdapter(ori).to_event(SourceItem(data, 1, None, where=name))  # type: ignore[arg-type]
        assert again["envelope"]["record_id"] == event["envelope"]["record_id"]
        assert again["envelope"]["op"] == event["envelope"]["op"]
        assert again["body"] == event["body"], name
        header = ElementTree.fromstring(data).find(".//{*}ReportActionCategoryCode")
        assert header is not None
        actions.append(header.text)
    # Insert, replace, insert, delete; arrest report, its deletion (as the fixtures are).
    assert actions == ["I", "R", "I", "D", "A", "D"]
