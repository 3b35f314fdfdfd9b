"""Synthetic but realistic ALPR exports, for the demo, the tests and the benchmarks.

Nothing here is real data: plates are drawn from each state's format, cameras sit around an
agency's jurisdiction, and the same vehicles pass several agencies' cameras, which is the
situation that makes sharing worth it.
"""

from __future__ import annotations

import csv
import random
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

HEADER = [
    "read_id",
    "plate",
    "state",
    "read_at",
    "confidence",
    "camera_id",
    "camera_name",
    "latitude",
    "longitude",
    "heading",
    "make",
    "model",
    "color",
]

# Plate formats by state: L a letter, D a digit. Most states issue more than one; these are
# the current passenger series.
PLATE_FORMATS = {
    "CA": "DLLLDDD",
    "NV": "DDDLDDD",
    "TX": "LLLDDDD",
    "AZ": "LLLDDDD",
    "OR": "DDDLLL",
    "WA": "LLLDDDD",
}
DEFAULT_FORMAT = "LLLDDDD"

VEHICLES = [
    ("Toyota", "Camry"),
    ("Ford", "F-150"),
    ("Honda", "Civic"),
    ("Chevrolet", "Silverado"),
    ("Nissan", "Altima"),
    ("Toyota", "Tacoma"),
    ("Tesla", "Model 3"),
    ("Jeep", "Wrangler"),
    ("Honda", "CR-V"),
    ("Ram", "1500"),
    ("Subaru", "Outback"),
    ("Hyundai", "Elantra"),
]
COLORS = ["Silver", "White", "Black", "Gray", "Blue", "Red", "Green", "Tan"]
STREETS = [
    "Main St",
    "Hwy 50",
    "Lake Pkwy",
    "Pioneer Trl",
    "Emerald Bay Rd",
    "Kingsbury Grade",
    "Ski Run Blvd",
    "Park Ave",
    "Al Tahoe Blvd",
    "Stateline Ave",
]
HEADINGS = ["N", "NE", "E", "SE", "S", "SW", "W", "NW"]


@dataclass(frozen=True)
class Camera:
    camera_id: str
    name: str
    latitude: float
    longitude: float
    heading: str


def cameras_for(
    ori: str, center: tuple[float, float], count: int, rng: random.Random
) -> list[Camera]:
    """Fixed cameras within a few kilometres of the jurisdiction's centre."""
    cameras = []
    for n in range(1, count + 1):
        street, cross = rng.sample(STREETS, 2)
        cameras.append(
            Camera(
                camera_id=f"{ori[:2]}{ori[-3:]}-CAM{n:02d}",
                name=f"{street} & {cross}",
                latitude=round(center[0] + rng.uniform(-0.04, 0.04), 5),
                longitude=round(center[1] + rng.uniform(-0.05, 0.05), 5),
                heading=rng.choice(HEADINGS),
            )
        )
    return cameras


def random_plate(state: str, rng: random.Random) -> str:
    """A plate in the state's current passenger format (LLLDDDD where we do not know it)."""
    pattern = PLATE_FORMATS.get(state, DEFAULT_FORMAT)
    # I, O and Q are not issued on most plates, precisely because cameras and people confuse them.
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    return "".join(rng.choice(letters) if c == "L" else rng.choice(string.digits) for c in pattern)


def plate_pool(states: list[str], size: int, rng: random.Random) -> list[tuple[str, str]]:
    """(plate, state) pairs, unique, spread over the given states."""
    pool: dict[str, str] = {}
    while len(pool) < size:
        state = rng.choice(states)
        pool.setdefault(random_plate(state, rng), state)
    return list(pool.items())


def _messy(plate: str, rng: random.Random) -> str:
    """Exports are not clean: some vendors lower-case, space or dash their plates."""
    roll = rng.random()
    if roll < 0.1:
        return plate.lower()
    if roll < 0.2:
        return f"{plate[:3]} {plate[3:]}"
    if roll < 0.25:
        return f"{plate[:3]}-{plate[3:]}"
    return plate


def write_alpr_csv(
    path: Path,
    ori: str,
    cameras: list[Camera],
    plates: list[tuple[str, str]],
    count: int,
    start: datetime,
    rng: random.Random,
) -> int:
    """Write ``count`` reads in the mutualaid reference layout; returns rows written."""
    if start.tzinfo is None:
        # The layout carries an offset; a naive time would be read in the connector's zone instead.
        raise ValueError("start must be timezone-aware")
    vehicles = {plate: (rng.choice(VEHICLES), rng.choice(COLORS)) for plate, _ in plates}
    at = start
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for n in range(1, count + 1):
            at += timedelta(seconds=rng.randint(1, 40))
            camera = rng.choice(cameras)
            plate, state = rng.choice(plates)
            (make, model), color = vehicles[plate]
            seen = rng.random() < 0.8  # the classifier does not always name the vehicle
            writer.writerow(
                [
                    f"{ori}-{n:08d}",
                    _messy(plate, rng),
                    state,
                    at.isoformat(),
                    f"{rng.uniform(0.6, 0.99):.2f}",
                    camera.camera_id,
                    camera.name,
                    f"{camera.latitude + rng.uniform(-0.0003, 0.0003):.5f}",
                    f"{camera.longitude + rng.uniform(-0.0003, 0.0003):.5f}",
                    camera.heading,
                    make if seen else "",
                    model if seen else "",
                    color if seen else "",
                ]
            )
    return count


HOTLIST_HEADER = [
    "ncic_number",
    "plate",
    "state",
    "plate_type",
    "reason",
    "entered",
    "expires",
    "vehicle_make",
    "vehicle_model",
    "vehicle_color",
    "caution",
    "notes",
]
HOTLIST_REASONS = ["stolen_vehicle", "stolen_vehicle", "stolen_plate", "wanted", "amber"]


def write_hotlist_csv(
    path: Path, plates: list[tuple[str, str]], entered: datetime, rng: random.Random
) -> int:
    """An NCIC-style extract with one entry per plate, in the layout `hotlist load` reads."""
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HOTLIST_HEADER)
        for plate, state in plates:
            make, model = rng.choice(VEHICLES)
            reason = rng.choice(HOTLIST_REASONS)
            writer.writerow(
                [
                    f"V{rng.randrange(10**9):09d}",
                    plate,
                    state,
                    "PC",
                    reason,
                    entered.date().isoformat(),
                    (entered + timedelta(days=90)).date().isoformat(),
                    make,
                    model,
                    rng.choice(COLORS),
                    "armed and dangerous" if reason == "wanted" else "",
                    f"{reason.replace('_', ' ')}; confirm with the entering agency",
                ]
            )
    return len(plates)
