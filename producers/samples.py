"""Synthetic but realistic ALPR exports, for the demo, the tests and the benchmarks.

Nothing here is real data: plates are drawn from each state's format, cameras sit around an
agency's jurisdiction, and the same vehicles pass several agencies' cameras, which is the
situation that makes sharing worth it.
"""

from __future__ import annotations

import csv
import json
import random
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from producers import hotlist

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


HOTLIST_REASONS = ["stolen_vehicle", "stolen_vehicle", "stolen_plate", "wanted", "amber"]


def write_hotlist_csv(
    path: Path, plates: list[tuple[str, str]], entered: datetime, rng: random.Random
) -> int:
    """An NCIC-style extract with one entry per plate, in the layout `hotlist load` reads."""
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=hotlist.COLUMNS)
        writer.writeheader()
        for plate, state in plates:
            make, model = rng.choice(VEHICLES)
            reason = rng.choice(HOTLIST_REASONS)
            writer.writerow(
                {
                    "ncic_number": f"V{rng.randrange(10**9):09d}",
                    "plate": plate,
                    "state": state,
                    "plate_type": "PC",
                    "reason": reason,
                    "entered": entered.date().isoformat(),
                    "expires": (entered + timedelta(days=90)).date().isoformat(),
                    "vehicle_make": make,
                    "vehicle_model": model,
                    "vehicle_color": rng.choice(COLORS),
                    "caution": "armed and dangerous" if reason == "wanted" else "",
                    "notes": f"{reason.replace('_', ' ')}; confirm with the entering agency",
                }
            )
    return len(plates)


# CAD incident types (APCO common incident types, as CAD systems code them) and their priority.
INCIDENT_TYPES = [
    ("TA", "Traffic accident with injuries", "1"),
    ("BURG", "Burglary, residential", "2"),
    ("THEFT", "Vehicle theft", "2"),
    ("DIST", "Disturbance", "2"),
    ("SUSP", "Suspicious vehicle", "3"),
    ("WELF", "Welfare check", "3"),
    ("FIRE", "Structure fire", "1"),
]
CAD_STATUSES = ["Dispatched", "En Route", "On Scene", "Closed"]
FIRST_NAMES = ["Pat", "Alex", "Jordan", "Sam", "Maria", "Wei", "Aisha", "Diego", "Lena", "Tom"]
LAST_NAMES = ["Doe", "Garcia", "Nguyen", "Smith", "Okafor", "Kim", "Patel", "Rossi", "Brown"]
# NIBRS offense codes with the property they usually involve (None: none).
OFFENSES = [("240", "03"), ("220", "07"), ("23F", "04"), ("13A", None), ("290", "05")]


def _address(rng: random.Random) -> tuple[str, str]:
    number, street = str(rng.randint(10, 4999)), rng.choice(STREETS)
    road, _, suffix = street.rpartition(" ")
    return number, f"{road}|{suffix}"


def _pidf_lo(number: str, road: str, suffix: str, lat: float, lon: float) -> str:
    """A PIDF-LO (RFC 4119/5139/5491) with a civic address and a geodetic point."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" '
        'xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" '
        'xmlns:gml="http://www.opengis.net/gml" entity="pres:caller@cad.example"><tuple id="t1">'
        "<status><gp:geopriv><gp:location-info><ca:civicAddress><ca:country>US</ca:country>"
        f"<ca:A1>CA</ca:A1><ca:HNO>{number}</ca:HNO><ca:RD>{road}</ca:RD><ca:STS>{suffix}</ca:STS>"
        '</ca:civicAddress><gml:Point srsName="urn:ogc:def:crs:EPSG::4326">'
        f"<gml:pos>{lat} {lon}</gml:pos></gml:Point></gp:location-info><gp:usage-rules/>"
        "<gp:method>GPS</gp:method></gp:geopriv></status></tuple></presence>"
    )


def write_eido_documents(
    directory: Path, ori: str, center: tuple[float, float], incidents: int, rng: random.Random
) -> int:
    """NENA EIDO JSON documents (NENA-STA-021.1), one per status change (each a new version of
    its incident); returns how many were written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    start = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
    agency = f"psap.{ori.lower()}.example"

    def prologue(id_: str, at: str) -> dict:
        return {"$id": id_, "lastUpdateTimeStamp": at, "updatedByAgencyReference": {"$ref": agency}}

    for n in range(1, incidents + 1):
        code, description, priority = rng.choice(INCIDENT_TYPES)
        number, street = _address(rng)
        road, suffix = street.split("|")
        created = start + timedelta(minutes=rng.randint(0, 600))
        incident_id = f"urn:emergency:uid:incidentid:{n:06d}{ori.lower()}:{agency}"
        call_id = f"urn:emergency:uid:callid:{n:06d}{ori.lower()}:bcf.{agency}"
        lat = round(center[0] + rng.uniform(-0.04, 0.04), 5)
        lon = round(center[1] + rng.uniform(-0.05, 0.05), 5)
        units = [f"{rng.choice('EMPT')}{rng.randint(1, 40)}" for _ in range(rng.randint(1, 3))]
        caller = (rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES))
        phone = f"+1530555{rng.randint(0, 9999):04d}"
        component = f"urn:emergency:uid:eidodatacomponent:{n:06d}"
        for step, status in enumerate(CAD_STATUSES[: rng.randint(1, len(CAD_STATUSES))]):
            updated = (created + timedelta(minutes=4 * step + 1)).isoformat()
            document = {
                **prologue(incident_id, updated),
                "eidoVersion": "1.0",
                "issuingElementIdentification": f"cad.{agency}",
                "agencyComponent": [
                    {
                        **prologue(agency, created.isoformat()),
                        "agencyRoleDescriptionRegistryText": ["Dispatch"],
                        "agencyType": ["psap"],
                    }
                ],
                "incidentComponent": {
                    **prologue(f"{component}-incident:{agency}", updated),
                    "internalIncidentId": f"{ori[-3:]}-26-{n:06d}",
                    "incidentTypeCommonRegistryText": code,
                    "incidentTypeInternalText": description,
                    "incidentPriorityInternalText": priority,
                    "incidentCommonPriorityNumber": int(priority),
                    "incidentStatusCommonRegistryText": [status.replace(" ", "")],
                },
                "callComponent": [
                    {
                        **prologue(call_id, created.isoformat()),
                        "standardPrimaryCallType": "emergency",
                        "direction": "incoming",
                        "callStartTimestamp": created.isoformat(),
                        "callStateRegistryText": "callAnswered",
                        "callBackReference": {"$ref": f"{component}-callback:{agency}"},
                    }
                ],
                "callbackComponent": [
                    {
                        **prologue(f"{component}-callback:{agency}", created.isoformat()),
                        "callBackInformationUri": [f"tel:{phone}"],
                    }
                ],
                "locationComponent": [
                    {
                        **prologue(f"{component}-location:{agency}", created.isoformat()),
                        "locationTypeDescriptionRegistryText": "Incident",
                        "locationByValue": _pidf_lo(number, road, suffix, lat, lon),
                    }
                ],
                "personComponent": [
                    {
                        **prologue(f"{component}-caller:{agency}", created.isoformat()),
                        "personIncidentRoleRegistryText": ["Caller"],
                        "callIdentifier": [call_id],
                        "callBackReference": {"$ref": f"{component}-callback:{agency}"},
                        "ncPersonComponent": {
                            "name": [
                                {
                                    "personGivenName": [{"value": caller[0]}],
                                    "personSurName": [{"value": caller[1]}],
                                }
                            ]
                        },
                    }
                ],
                "emergencyResourceComponent": [
                    {
                        **prologue(f"{u.lower()}@{agency}", updated),
                        "emergencyResourceName": u,
                        "emergencyResourceTypeCommonRegistryText": "Unit",
                        "primaryUnitStatusRegistryText": status.replace(" ", ""),
                        "secondaryUnitStatusRegistryText": [],
                        "resourceAttributeRegistryText": [],
                        "agentReference": [],
                    }
                    for u in units
                ],
                "notesComponent": [
                    {
                        **prologue(f"{component}-note:{agency}", created.isoformat()),
                        "notesActionComments": f"{description} reported.",
                    }
                ],
            }
            (directory / f"{n:06d}-{step}.json").write_text(json.dumps(document, indent=1))
            written += 1
    return written


def write_nibrs_documents(
    directory: Path, ori: str, plates: list[tuple[str, str]], reports: int, rng: random.Random
) -> int:
    """NIBRS XML (IEPD 4.2 shape) group A incident reports of agency ``ori``: offenses, victims
    and offenders with ages (a few juveniles), stolen vehicles with plates from ``plates``.

    The vehicles (``nc:Vehicle``, which RMS exports add and IEPD 4.2 does not define) make these
    documents NIBRS-shaped rather than valid IEPD instances; tests/data/rms/conformance/ holds
    valid ones."""
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(1, reports + 1):
        code, property_code = rng.choice(OFFENSES)
        when = datetime(2026, 11, 1) + timedelta(minutes=rng.randint(0, 30 * 24 * 60))
        victim_age, offender_age = rng.randint(18, 80), rng.choice([15, 17, 19, 24, 31, 45])
        vehicle = ""
        if property_code == "03":
            plate, state = rng.choice(plates)
            (make, model), color = rng.choice(VEHICLES), rng.choice(COLORS)
            vehicle = (
                "<nc:Vehicle><nc:ItemColorDescriptionText>"
                f"{color[:3].upper()}</nc:ItemColorDescriptionText>"
                "<nc:ConveyanceRegistrationPlateIdentification>"
                f"<nc:IdentificationID>{plate}</nc:IdentificationID><nc:IdentificationJurisdiction>"
                f"<j:LocationStateNCICLSTACode>{state}</j:LocationStateNCICLSTACode>"
                "</nc:IdentificationJurisdiction></nc:ConveyanceRegistrationPlateIdentification>"
                f"<j:VehicleMakeCode>{make[:4].upper()}</j:VehicleMakeCode>"
                f"<j:VehicleModelCode>{model[:3].upper()}</j:VehicleModelCode></nc:Vehicle>"
            )
        item = (
            f"<nc:Item><nc:ItemStatus><cjis:ItemStatusCode>STOLEN</cjis:ItemStatusCode>"
            f"</nc:ItemStatus><nc:ItemValue><nc:ItemValueAmount><nc:Amount>"
            f"{rng.randint(50, 40000)}</nc:Amount></nc:ItemValueAmount></nc:ItemValue>"
            f"<j:ItemCategoryNIBRSPropertyCategoryCode>{property_code}"
            "</j:ItemCategoryNIBRSPropertyCategoryCode></nc:Item>"
            if property_code
            else ""
        )
        (directory / f"{n:06d}.xml").write_text(
            NIBRS_TEMPLATE.format(
                ori=ori,
                month=when.strftime("%Y-%m"),
                incident=f"{ori[-3:]}{n:07d}",
                when=when.isoformat(),
                sent=(when + timedelta(hours=2)).isoformat() + "-08:00",
                code=code,
                item=item,
                vehicle=vehicle,
                victim_age=victim_age,
                offender_age=offender_age,
            )
        )
    return reports


NIBRS_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<nibrs:Submission xmlns:nibrs="http://fbi.gov/cjis/nibrs/4.2" xmlns:cjis="http://fbi.gov/cjis/1.0"
    xmlns:j="http://release.niem.gov/niem/domains/jxdm/6.1/"
    xmlns:nc="http://release.niem.gov/niem/niem-core/4.0/"
    xmlns:s="http://release.niem.gov/niem/structures/4.0/">
  <cjis:MessageMetadata><cjis:MessageDateTime>{sent}</cjis:MessageDateTime></cjis:MessageMetadata>
  <nibrs:Report>
    <nibrs:ReportHeader>
      <nibrs:NIBRSReportCategoryCode>GROUP A INCIDENT REPORT</nibrs:NIBRSReportCategoryCode>
      <nibrs:ReportActionCategoryCode>I</nibrs:ReportActionCategoryCode>
      <nibrs:ReportDate><nc:YearMonthDate>{month}</nc:YearMonthDate></nibrs:ReportDate>
      <nibrs:ReportingAgency><j:OrganizationAugmentation><j:OrganizationORIIdentification>
        <nc:IdentificationID>{ori}</nc:IdentificationID>
      </j:OrganizationORIIdentification></j:OrganizationAugmentation></nibrs:ReportingAgency>
    </nibrs:ReportHeader>
    <nc:Incident>
      <nc:ActivityIdentification><nc:IdentificationID>{incident}</nc:IdentificationID></nc:ActivityIdentification>
      <nc:ActivityDate><nc:DateTime>{when}</nc:DateTime></nc:ActivityDate>
    </nc:Incident>
    <j:Offense s:id="Offense1"><nibrs:OffenseUCRCode>{code}</nibrs:OffenseUCRCode>
      <j:OffenseAttemptedIndicator>false</j:OffenseAttemptedIndicator></j:Offense>
    {item}
    {vehicle}
    <nc:Person s:id="PersonVictim1"><nc:PersonAgeMeasure>
      <nc:MeasureIntegerValue>{victim_age}</nc:MeasureIntegerValue></nc:PersonAgeMeasure>
    </nc:Person>
    <nc:Person s:id="PersonOffender1"><nc:PersonAgeMeasure>
      <nc:MeasureIntegerValue>{offender_age}</nc:MeasureIntegerValue></nc:PersonAgeMeasure>
    </nc:Person>
    <j:Victim s:id="Victim1"><nc:RoleOfPerson s:ref="PersonVictim1"/></j:Victim>
    <j:Subject s:id="Subject1"><nc:RoleOfPerson s:ref="PersonOffender1"/></j:Subject>
  </nibrs:Report>
</nibrs:Submission>
"""
