"""PIDF-LO (RFC 4119, 5139, 5491): the XML an EIDO carries in ``locationByValue``.

One location object holds a civic address (``ca:civicAddress``), a geodetic shape (``gml:Point``,
``gs:Circle``, ``gs:Ellipsoid``, ...), or both, inside ``gp:location-info`` of a tuple, device
or person. ``read`` returns the first civic address and the first shape's centre with its
uncertainty, and the ``gp:method``.

The XML is parsed with defusedxml, which refuses DTDs, entity declarations and external
references: a location comes from whoever placed the call, so it is untrusted input.

Two repairs, both named in the result's ``problem`` so nobody mistakes them for a clean read:
- whitespace before the XML declaration is removed (it is not well-formed XML, but a common
  artefact of JSON string building), and a prefix of the PIDF-LO profile (``gs``, ``gml``,
  ``con``, ``ca``, ...) used without its namespace declaration is declared with the namespace
  the RFCs give it;
- a document that is still not well-formed is not read as XML at all: only the text of its first
  ``<gml:pos>`` (two or three numbers) is taken, because a partner who needs to find the scene
  is better served by a flagged position than by none.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from producers.runner import Rejected

MAX_BYTES = 256 * 1024  # a PIDF-LO is a few KiB; anything larger is not a location

NS = {
    "pidf": "urn:ietf:params:xml:ns:pidf",
    "dm": "urn:ietf:params:xml:ns:pidf:data-model",
    "gp": "urn:ietf:params:xml:ns:pidf:geopriv10",
    "gbp": "urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy",
    "ca": "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr",
    "gml": "http://www.opengis.net/gml",
    "gs": "http://www.opengis.net/pidflo/1.0",
    "con": "urn:ietf:params:xml:ns:geopriv:conf",
}
CIVIC, GML, GS, GP, CON = (f"{{{NS[p]}}}" for p in ("ca", "gml", "gs", "gp", "con"))

# RFC 5139 and RFC 6848 element names, as the Avro record spells them (lower case).
CIVIC_ELEMENTS = (
    "country",
    "A1",
    "A2",
    "A3",
    "A4",
    "A5",
    "A6",
    "PRM",
    "PRD",
    "RD",
    "STS",
    "POD",
    "POM",
    "RDSEC",
    "RDBR",
    "RDSUBBR",
    "HNO",
    "HNS",
    "LMK",
    "LOC",
    "FLR",
    "NAM",
    "PC",
    "BLD",
    "UNIT",
    "ROOM",
    "SEAT",
    "PLC",
    "PCN",
    "POBOX",
    "ADDCODE",
)
SHAPES = ("Point", "Circle", "Ellipse", "Ellipsoid", "Sphere", "Polygon", "Prism", "ArcBand")
_PREFIX_USE = re.compile(r"<\s*/?\s*([A-Za-z_][\w.-]*):")
_POS = re.compile(r"<(?:[\w.-]+:)?pos(?:\s[^<>]*)?>\s*([-+0-9.eE\s]+?)\s*</(?:[\w.-]+:)?pos>")


@dataclass(frozen=True)
class PidfLocation:
    civic: dict[str, str | None] | None
    point: dict[str, Any] | None
    method: str | None
    problem: str | None


def parse(xml: str, where: str) -> ET.Element:
    """Any small XML document of an EIDO (PIDF-LO, RFC 7852 additional data), safely, strictly."""
    if len(xml.encode()) > MAX_BYTES:
        raise Rejected("bad_location", f"{where} is over {MAX_BYTES // 1024} KiB")
    try:
        return fromstring(xml.strip())
    except DefusedXmlException as exc:
        raise Rejected(
            "bad_xml", f"{where} uses {type(exc).__name__}: DTDs and entities are refused"
        ) from None
    except ET.ParseError as exc:
        raise Rejected("bad_xml", f"{where} is not well-formed XML: {exc}") from None


def read(xml: str, where: str) -> PidfLocation:
    """The civic address, geodetic point and method of one PIDF-LO document."""
    if len(xml.encode()) > MAX_BYTES:
        raise Rejected("bad_location", f"{where} is over {MAX_BYTES // 1024} KiB: not a PIDF-LO")
    text, repairs = _repaired(xml)
    try:
        root = fromstring(text)
    except DefusedXmlException as exc:
        raise Rejected(
            "bad_location", f"{where} uses {type(exc).__name__}: DTDs and entities are refused"
        ) from None
    except ET.ParseError as exc:
        return _salvaged(xml, where, f"not well-formed XML ({exc})")
    problem = f"repaired: {'; '.join(repairs)}" if repairs else None
    civic = point = method = None
    for info in root.iter(f"{GP}location-info"):
        civic = civic or _civic(info)
        point = point or _point(info, where)
    for found in root.iter(f"{GP}method"):
        method = (found.text or "").strip() or None
        break
    return PidfLocation(civic, point, method, problem)


def _repaired(xml: str) -> tuple[str, list[str]]:
    repairs = []
    text = xml
    if text != text.lstrip():
        text = text.lstrip()
        repairs.append("whitespace before the XML declaration removed")
    declared = set(re.findall(r"xmlns:([A-Za-z_][\w.-]*)\s*=", text))
    missing = sorted({p for p in _PREFIX_USE.findall(text) if p in NS and p not in declared})
    missing = [p for p in missing if p != "xml"]
    if missing:
        declarations = "".join(f' xmlns:{p}="{NS[p]}"' for p in missing)
        # Declare on the root element: the first start tag after the XML declaration.
        match = re.search(r"<(?![?!])[^\s/>]+", text)
        if match:
            text = text[: match.end()] + declarations + text[match.end() :]
            repairs.append(f"undeclared prefixes {', '.join(missing)} declared")
    return text, repairs


def _salvaged(xml: str, where: str, why: str) -> PidfLocation:
    match = _POS.search(xml)
    if not match:
        return PidfLocation(None, None, None, f"{why}: nothing read")
    point = _position(match.group(1), where)
    return PidfLocation(None, point, None, f"{why}: only its gml:pos was read")


def _civic(info: ET.Element) -> dict[str, str | None] | None:
    element = info.find(f"{CIVIC}civicAddress")
    if element is None:
        return None
    out: dict[str, str | None] = {name.lower(): None for name in CIVIC_ELEMENTS}
    for child in element:
        name = child.tag.rpartition("}")[2]
        value = (child.text or "").strip()
        if name in CIVIC_ELEMENTS and value:
            # RFC 5139 allows repeats (e.g. two LOC): keep every one, in order.
            key = name.lower()
            out[key] = f"{out[key]}, {value}" if out[key] else value
    return out if any(out.values()) else None


def _point(info: ET.Element, where: str) -> dict[str, Any] | None:
    for shape in info:
        name = shape.tag.rpartition("}")[2]
        if name not in SHAPES:
            continue
        positions = [p.text or "" for p in shape.iter(f"{GML}pos")]
        positions += [
            " ".join(chunk)
            for lst in shape.iter(f"{GML}posList")
            for chunk in _pairs((lst.text or "").split())
        ]
        if not positions:
            raise Rejected("bad_location", f"{where}: gml {name} has no gml:pos")
        points = [_position(p, where) for p in positions]
        # A polygon's (or prism's) centre: the mean of its vertices is close enough to find it.
        out = points[0] | {
            "latitude": sum(p["latitude"] for p in points) / len(points),
            "longitude": sum(p["longitude"] for p in points) / len(points),
        }
        out |= {
            "shape": name,
            "srs": shape.get("srsName"),
            "radius_m": _measure(shape, "radius", where),
            "semi_major_m": _measure(shape, "semiMajorAxis", where),
            "semi_minor_m": _measure(shape, "semiMinorAxis", where),
            "vertical_m": _measure(shape, "verticalAxis", where),
            "orientation_deg": _measure(shape, "orientation", where),
            "confidence": _confidence(info, where),
        }
        return out
    return None


def _pairs(numbers: list[str]) -> list[list[str]]:
    return [numbers[i : i + 2] for i in range(0, len(numbers) - 1, 2)]


def _position(pos: str, where: str) -> dict[str, Any]:
    """'lat lon [alt]' (EPSG 4326 / 4979 order) as a point without shape details."""
    parts = pos.split()
    if len(parts) not in (2, 3):
        raise Rejected(
            "bad_coordinates", f"{where}: gml:pos {pos.strip()!r} is not 'lat lon [alt]'"
        )
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise Rejected(
            "bad_coordinates", f"{where}: gml:pos {pos.strip()!r} is not numbers"
        ) from None
    lat, lon = numbers[0], numbers[1]
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise Rejected("bad_coordinates", f"{where}: gml:pos {lat} {lon} is out of range")
    blank = dict.fromkeys(
        ("shape", "srs", "radius_m", "semi_major_m", "semi_minor_m", "vertical_m")
    ) | {"orientation_deg": None, "confidence": None}
    return blank | {
        "latitude": lat,
        "longitude": lon,
        "altitude_m": numbers[2] if len(numbers) == 3 else None,
    }


def _measure(shape: ET.Element, name: str, where: str) -> float | None:
    element = shape.find(f"{GS}{name}")
    if element is None or not (element.text or "").strip():
        return None
    try:
        return float(element.text)
    except ValueError:
        raise Rejected(
            "bad_location", f"{where}: gs:{name} {element.text.strip()!r} is not a number"
        ) from None


def _confidence(info: ET.Element, where: str) -> int | None:
    element = info.find(f"{CON}confidence")
    if element is None or not (element.text or "").strip():
        return None
    try:
        value = round(float(element.text))
    except ValueError:
        raise Rejected(
            "bad_location", f"{where}: con:confidence {element.text.strip()!r} is not a number"
        ) from None
    if not 0 <= value <= 100:
        raise Rejected("bad_location", f"{where}: con:confidence {value} is not a percentage")
    return value
