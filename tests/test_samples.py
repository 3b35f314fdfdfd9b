"""The demo ALPR generator writes the reference layout the connector expects, deterministically."""

from __future__ import annotations

import csv
import itertools
import random
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from producers import samples

HEADER = (
    "read_id,plate,state,read_at,confidence,camera_id,camera_name,latitude,longitude,heading,"
    "make,model,color"
)
# Written out here rather than taken from samples.PLATE_FORMATS, so the test checks the formats.
FORMATS = {
    "CA": r"\d[A-Z]{3}\d{3}",
    "TX": r"[A-Z]{3}\d{4}",
    "NV": r"\d{3}[A-Z]\d{3}",
    "AZ": r"[A-Z]{3}\d{4}",
    "OR": r"\d{3}[A-Z]{3}",
    "WA": r"[A-Z]{3}\d{4}",
    "ID": r"[A-Z]{3}\d{4}",  # no format on file: the default
}
PACIFIC = timezone(timedelta(hours=-8))
START = datetime(2026, 11, 24, 21, 14, 3, tzinfo=PACIFIC)
ORI = "CA0990100"
COUNT = 500


def normalise(plate: str) -> str:
    return plate.upper().replace(" ", "").replace("-", "")


def export(path: Path, seed: int = 7, count: int = COUNT) -> tuple[int, list[samples.Camera]]:
    rng = random.Random(seed)
    cameras = samples.cameras_for(ORI, (38.94, -119.98), 6, rng)
    pool = samples.plate_pool(list(FORMATS), 50, rng)
    return samples.write_alpr_csv(path, ORI, cameras, pool, count, START, rng), cameras


@pytest.fixture
def written(tmp_path: Path) -> tuple[int, list[dict[str, str]], str, list[samples.Camera]]:
    path = tmp_path / "reads.csv"
    count, cameras = export(path)
    text = path.read_text(encoding="utf-8")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return count, rows, text, cameras


def test_header_and_row_count(written) -> None:
    count, rows, text, _ = written
    assert text.splitlines()[0] == HEADER
    assert count == COUNT == len(rows)


def test_read_ids_unique_and_numbered(written) -> None:
    _, rows, _, _ = written
    ids = [r["read_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert ids[0] == f"{ORI}-00000001"
    assert all(re.fullmatch(rf"{ORI}-\d{{8}}", i) for i in ids)


def test_timestamps_increase_and_carry_an_offset(written) -> None:
    _, rows, _, _ = written
    times = [datetime.fromisoformat(r["read_at"]) for r in rows]
    assert all(t.tzinfo is not None for t in times)
    assert rows[0]["read_at"].endswith("-08:00")
    assert times[0] > START
    assert all(a < b for a, b in itertools.pairwise(times))


def test_plates_match_their_state_after_normalisation(written) -> None:
    _, rows, _, _ = written
    for r in rows:
        assert re.fullmatch(FORMATS[r["state"]], normalise(r["plate"])), r


def test_raw_plates_are_messy_as_real_exports_are(written) -> None:
    _, rows, _, _ = written
    raw = [r["plate"] for r in rows]
    assert any(p != p.upper() for p in raw)
    assert any(" " in p for p in raw)
    assert any("-" in p for p in raw)
    assert sum(p == normalise(p) for p in raw) > len(raw) / 2  # most are clean


def test_fields_are_plausible(written) -> None:
    _, rows, _, cameras = written
    by_id = {c.camera_id: c for c in cameras}
    for r in rows:
        assert re.fullmatch(r"0\.[6-9]\d", r["confidence"]), r["confidence"]
        camera = by_id[r["camera_id"]]
        assert r["camera_name"] == camera.name and r["heading"] == camera.heading
        for field, centre in (("latitude", camera.latitude), ("longitude", camera.longitude)):
            assert re.fullmatch(r"-?\d+\.\d{5}", r[field])
            assert abs(float(r[field]) - centre) < 0.001
        # make, model and colour come together or not at all
        assert bool(r["make"]) == bool(r["model"]) == bool(r["color"])
    assert any(r["make"] for r in rows) and any(not r["make"] for r in rows)


def test_a_vehicle_keeps_its_make_and_colour(written) -> None:
    _, rows, _, _ = written
    seen: dict[str, tuple[str, str, str]] = {}
    for r in rows:
        if r["make"]:
            described = (r["make"], r["model"], r["color"])
            assert seen.setdefault(normalise(r["plate"]), described) == described


def test_same_seed_same_file(tmp_path: Path) -> None:
    export(tmp_path / "a.csv")
    export(tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_a_shared_pool_puts_one_vehicle_in_several_agencies(tmp_path: Path) -> None:
    rng = random.Random(3)
    pool = samples.plate_pool(["CA", "NV"], 20, rng)
    plates_by_agency = []
    for ori, centre in (("CA0990100", (38.94, -119.98)), ("NV0030200", (38.96, -119.93))):
        path = tmp_path / f"{ori}.csv"
        cams = samples.cameras_for(ori, centre, 4, rng)
        samples.write_alpr_csv(path, ori, cams, pool, 200, START, rng)
        with path.open(newline="", encoding="utf-8") as f:
            plates_by_agency.append({normalise(r["plate"]) for r in csv.DictReader(f)})
    assert plates_by_agency[0] & plates_by_agency[1]


@pytest.mark.parametrize("state", sorted(FORMATS))
def test_random_plate_follows_the_state_format(state: str) -> None:
    rng = random.Random(11)
    for _ in range(200):
        plate = samples.random_plate(state, rng)
        assert re.fullmatch(FORMATS[state], plate)
        assert not set(plate) & set("IOQ")  # not issued: cameras and people confuse them


def test_plate_pool_is_unique_and_in_the_given_states() -> None:
    pool = samples.plate_pool(["CA", "NV", "OR"], 300, random.Random(1))
    assert len(pool) == 300 == len({p for p, _ in pool})
    assert {s for _, s in pool} == {"CA", "NV", "OR"}


def test_cameras_are_distinct_and_near_the_centre() -> None:
    cams = samples.cameras_for(ORI, (38.94, -119.98), 8, random.Random(2))
    assert len({c.camera_id for c in cams}) == 8
    assert all(abs(c.latitude - 38.94) <= 0.04 and abs(c.longitude + 119.98) <= 0.05 for c in cams)


def test_naive_start_is_refused(tmp_path: Path) -> None:
    rng = random.Random(1)
    cams = samples.cameras_for(ORI, (38.94, -119.98), 1, rng)
    with pytest.raises(ValueError, match="timezone-aware"):
        samples.write_alpr_csv(
            tmp_path / "x.csv", ORI, cams, [("7ABC123", "CA")], 1, START.replace(tzinfo=None), rng
        )


def test_cad_and_rms_generators_write_documents_the_connectors_accept(tmp_path: Path) -> None:
    from producers.cad import CadAdapter
    from producers.rms import RmsAdapter
    from producers.sources import DocumentDirectory

    rng = random.Random(3)
    written = samples.write_eido_documents(tmp_path / "eido", ORI, (38.94, -119.98), 30, rng)
    plates = samples.plate_pool(["CA", "NV"], 40, rng)
    samples.write_nibrs_documents(tmp_path / "nibrs", ORI, plates, 60, rng)

    def events(directory: Path, pattern: str, adapter) -> list[dict]:
        source = DocumentDirectory(directory, pattern)
        items = source.items(source.start(None), follow=lambda: False)
        return [adapter.to_event(item) for item in items]  # a Rejected fails the test

    cad = events(tmp_path / "eido", "*.json", CadAdapter(ORI))
    assert len(cad) == written > 30  # status changes: several versions of most incidents
    versions: dict[str, list[int]] = {}
    for e in cad:
        versions.setdefault(e["envelope"]["record_id"], []).append(e["envelope"]["version"])
    assert len(versions) == 30
    assert any(len(v) > 1 for v in versions.values())
    assert len({e["body"]["incident_type"] for e in cad}) > 3

    rms = events(tmp_path / "nibrs", "*.xml", RmsAdapter(ORI))
    assert len(rms) == 60
    assert any("juvenile" in e["envelope"]["labels"] for e in rms)
    assert not all("juvenile" in e["envelope"]["labels"] for e in rms)
    stolen = [v["plate"] for e in rms for v in e["body"]["vehicles"]]
    assert stolen and set(stolen) <= {p for p, _ in plates}
