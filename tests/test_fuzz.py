"""Fuzz tests (hypothesis) with a fixed budget: whatever arrives, ingest answers 202, 400 or 413
(never 500) and dead-letters every bad read with a reason; the readers and parsers turn every
input into an event the Avro schema takes or a Rejected with a reason, and raise nothing else.

Entry points, chosen to outlive rewrites of the parsers: the HTTP endpoint of the real ingest
app (uvicorn in this process, the real broker); for files, ``LineFile`` and the connectors'
``Adapter.to_event(SourceItem)`` (what the runner calls and dead-letters on Rejected) of
``AlprAdapter`` (CSV and NDJSON), ``RmsAdapter(ori)`` (NIBRS XML) and ``CadAdapter(ori)``
(EIDO JSON). ``MUTUALAID_FUZZ_EXAMPLES`` raises the budget for a longer run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_alpr_http import NDJSON_MAPPING, READ, ingest_in_thread, published, push

from mutualaid import tokens
from mutualaid.serde import SOURCE_EVENT, AvroSerializer, SchemaStore, SerializationContext
from mutualaid.topics import Stage, source_topic
from producers.alpr import DEFAULT_MAPPING, AlprAdapter, load_mapping
from producers.cad import CadAdapter
from producers.contract import Adapter, Rejected
from producers.rms import RmsAdapter
from producers.sources import LineFile, SourceItem
from support.brokers import dead_letters
from support.processes import wait_for
from support.regions import Region

EXAMPLES = int(os.environ.get("MUTUALAID_FUZZ_EXAMPLES", "100"))
# derandomize: the same examples on every run, so CI stays repeatable; no example database
# written into the clone.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ORI = "CA0990100"
DATA = Path(__file__).parent / "data"
CSV_HEADER = (
    b"read_id,plate,state,read_at,confidence,camera_id,camera_name,latitude,longitude,"
    b"heading,make,model,color"
)
CSV_GOOD = [
    "R-1",
    "7abc 123",
    "ca",
    "2026-11-24T21:14:03-08:00",
    "0.93",
    "CAM-1",
    "Main & 5th",
    "38.94",
    "-119.98",
    "N",
    "",
    "",
    "Silver",
]

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
read_keys = st.sampled_from([*READ, "camera_id", "camera_name", "image_ref", "vendor"])
reads = st.builds(
    lambda changes: {**READ, **changes}, st.dictionaries(read_keys, json_values, max_size=4)
)
deep = st.builds(
    lambda n, opener: opener * n, st.integers(1, 2000), st.sampled_from(["[", "{", '{"a":'])
)
ndjson = st.lists(
    st.one_of(reads.map(json.dumps), st.text(max_size=60), deep), min_size=2, max_size=8
)
bodies = st.one_of(
    st.binary(max_size=400),
    json_values.map(json.dumps),
    reads.map(json.dumps),
    st.lists(st.one_of(reads, json_values), max_size=6).map(json.dumps),
    ndjson.map("\n".join),
    deep,
).map(lambda b: b if isinstance(b, bytes) else b.encode("utf-8", "surrogatepass"))


def encodes(adapter: Adapter) -> Callable[[SourceItem], str]:
    """``item`` through the adapter: "event" if it gives an event the kind's Avro schema
    takes (so the runner can publish it), "rejected" if it raises Rejected with a reason."""
    serialize = AvroSerializer(SchemaStore(), SOURCE_EVENT[adapter.kind])
    topic = source_topic(ORI, adapter.kind)

    def run(item: SourceItem) -> str:
        try:
            event = adapter.to_event(item)
        except Rejected as why:
            assert why.error_type and why.reason, why
            return "rejected"
        serialize(event, SerializationContext(topic))
        return "event"

    return run


@pytest.mark.broker
def test_fuzzed_requests_never_fail_and_every_bad_read_is_dead_lettered(region: Region) -> None:
    token = tokens.issue(region.settings.cameras_file, region.local, "CAM7")
    tally = {"accepted": 0, "rejected": 0}
    with ingest_in_thread(region.settings, region.local, delivery_timeout=10) as url:

        @FUZZ
        @given(body=bodies)
        @example(body=b"[" * 100_000)
        @example(body=b"\n".join([b"{}"] * 2000))
        @example(body=b'{"plate": "7ABC123", "confidence": ' + b"9" * 5000 + b"}")
        def post(body: bytes) -> None:
            status, answer, _ = push(url, token, body)
            assert status in (202, 400, 413), (status, answer)
            if status == 413:
                return  # refused whole: nothing published, nothing dead-lettered
            result = answer if status == 202 else answer["detail"]
            for rejection in result["rejected"]:
                assert rejection["error_type"] and rejection["reason"], rejection
            tally["accepted"] += result["accepted"]
            tally["rejected"] += len(result["rejected"])

        post()
    # Every accepted read is on the topic; every rejection is a dead letter with its reason.
    assert len(published(region, tally["accepted"] + 1, timeout=2)) == tally["accepted"]

    def all_letters() -> list[dict] | None:
        found = dead_letters(
            region.settings.bootstrap_servers,
            Stage.PRODUCERS,
            lambda d: d["source_ori"] == region.local,
            timeout=2,
        )
        return found if len(found) >= tally["rejected"] else None

    found = wait_for(all_letters, 60, f"{tally['rejected']} dead letters")
    assert len(found) == tally["rejected"]
    assert all(d["reason"] and d["error_type"] and d["position"] for d in found)


csv_fields = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from(',"\r\x00'),
    max_size=30,
)


@st.composite
def csv_lines(draw: st.DrawFn) -> bytes:
    """A good line with some fields replaced by anything, or bytes that need not be text."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200)).replace(b"\n", b" ")
    fields = list(CSV_GOOD)
    for index in draw(st.lists(st.integers(0, len(fields) - 1), max_size=4)):
        fields[index] = draw(csv_fields)
    return ",".join(fields).replace("\n", " ").encode()


def read_lines(path: Path, has_header: bool) -> list[SourceItem]:
    source = LineFile(path, has_header=has_header)
    return list(source.items(source.start(None), lambda: False))


def test_fuzzed_csv_export_lines_become_reads_or_reasons(tmp_path: Path) -> None:
    export = tmp_path / "export.csv"
    adapter = AlprAdapter(load_mapping(DEFAULT_MAPPING), CSV_HEADER, ORI)
    run = encodes(adapter)

    @FUZZ
    @given(lines=st.lists(csv_lines(), min_size=1, max_size=8))
    def read(lines: list[bytes]) -> None:
        export.write_bytes(CSV_HEADER + b"\n" + b"\n".join(lines) + b"\n")
        items = read_lines(export, has_header=True)
        assert len(items) == len([line for line in lines if line.strip()])
        for item in items:
            run(item)

    read()


def test_fuzzed_ndjson_export_lines_become_reads_or_reasons(tmp_path: Path) -> None:
    export = tmp_path / "export.ndjson"
    run = encodes(AlprAdapter(load_mapping(NDJSON_MAPPING), b"", ORI))

    @FUZZ
    @given(lines=ndjson)
    def read(lines: list[str]) -> None:
        export.write_bytes("\n".join(line.replace("\n", " ") for line in lines).encode())
        for item in read_lines(export, has_header=False):
            run(item)

    read()


XML_SEEDS = sorted((DATA / "rms").glob("*.xml"))
TEXT_NODE = re.compile(rb">([^<]*)<")


@st.composite
def nibrs_documents(draw: st.DrawFn) -> bytes:
    """A real NIBRS sample with element values replaced by anything (still well-formed, so the
    value parsers see it), a slice cut out or spliced in, or bytes."""
    seed = draw(st.sampled_from(XML_SEEDS)).read_bytes()
    how = draw(st.sampled_from(["values", "splice", "bytes"]))
    if how == "bytes":
        return draw(st.binary(max_size=300))
    if how == "splice":
        start = draw(st.integers(0, len(seed)))
        end = draw(st.integers(start, min(len(seed), start + 200)))
        return seed[:start] + draw(st.binary(max_size=40)) + seed[end:]
    nodes = list(TEXT_NODE.finditer(seed))
    chosen = set(draw(st.lists(st.integers(0, len(nodes) - 1), min_size=1, max_size=6)))
    out, last = bytearray(), 0
    for index, node in enumerate(nodes):
        if index in chosen:
            out += seed[last : node.start(1)] + escape(draw(st.text(max_size=30))).encode()
            last = node.end(1)
    return bytes(out + seed[last:])


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>'
)


def test_fuzzed_nibrs_documents_become_records_or_reasons() -> None:
    run = encodes(RmsAdapter(ORI))

    @FUZZ
    @given(document=nibrs_documents())
    @example(document=BILLION_LAUGHS)
    @example(document=b"<a>" * 50_000)
    def parse(document: bytes) -> None:
        run(SourceItem(document, 1, None))  # type: ignore[arg-type]

    parse()


EIDO_SEEDS = [json.loads(p.read_text()) for p in sorted((DATA / "eido").glob("0*.json"))]


def _paths(value: object, at: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (keys and list indexes)."""
    found = [at]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*at, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*at, index))
    return found


@st.composite
def eido_documents(draw: st.DrawFn) -> bytes:
    """A real EIDO sample with values at some paths replaced by any JSON, or bytes."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=300))
    doc = json.loads(json.dumps(draw(st.sampled_from(EIDO_SEEDS))))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            doc = draw(json_values)
            continue
        parent = doc
        try:
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed this path
    return json.dumps(doc).encode()


def test_fuzzed_eido_documents_become_incidents_or_reasons() -> None:
    run = encodes(CadAdapter(ORI))

    @FUZZ
    @given(document=eido_documents())
    @example(document=b"[" * 100_000)
    @example(document=b'{"incidentComponent": ' + b"9" * 5000 + b"}")
    def parse(document: bytes) -> None:
        run(SourceItem(document, 1, None))  # type: ignore[arg-type]

    parse()
