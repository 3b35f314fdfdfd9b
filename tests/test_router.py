"""The router's decision for one record, without a broker: shares, or one dead letter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from mutualaid.agencies import load_registry
from mutualaid.events import new_envelope, record_key
from mutualaid.policy import load_policy
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    DEAD_LETTER,
    SHARED_EVENT,
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    Codecs,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import Kind
from streams.router import Consumed, Router, holders_expiry
from support.events import DESERT, FEDERAL, alpr_event

STORE = SchemaStore()
ROUTER = Router(
    load_policy(Path("deploy/agreements"), load_registry(Path("deploy/agencies.yaml"))),
    Codecs(STORE),
    public_keys={},
    hash_key=None,
)
AT = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)


def consumed(topic: str, value: bytes | None) -> Consumed:
    return Consumed(topic, 2, 17, b"k", value)


def encode(event: dict) -> bytes:
    return AvroSerializer(STORE, SOURCE_EVENT[Kind.ALPR_READ])(event, SerializationContext("t"))


def dead(output) -> dict:
    assert output.topic == "dlq.streams"
    return AvroDeserializer(STORE, DEAD_LETTER)(output.value, SerializationContext("dlq.streams"))


def test_shares_go_to_each_partner_with_one_audit_record_per_decision() -> None:
    outputs = ROUTER.route(
        consumed("src.nv0990300.alpr.read", encode(alpr_event(DESERT, "r1", where=None, at=AT))), {}
    )
    assert [o.topic for o in outputs] == [
        "share.ca0990100.alpr.read",
        "audit.dissemination",
        "share.ca0990200.alpr.read",
        "audit.dissemination",
    ]
    decode = AvroDeserializer(STORE, SHARED_EVENT[Kind.ALPR_READ])
    first = decode(outputs[0].value, SerializationContext(outputs[0].topic))
    assert first["disclosure"]["partner_ori"] == "CA0990100"
    assert first["disclosure"]["agreement_id"] == "desert-springs-alpr"
    assert first["body"]["plate"] == "7ABC123"
    assert first["envelope"]["source_position"] is None  # the owner's file paths stay home
    assert outputs[0].key == record_key(alpr_event(DESERT, "r1", where=None, at=AT)["envelope"])
    audit = AvroDeserializer(STORE, AUDIT_DISSEMINATION_SCHEMA)(
        outputs[1].value, SerializationContext("audit.dissemination")
    )
    assert (audit["partner_ori"], audit["decision"], audit["agreement_id"]) == (
        "CA0990100",
        "SHARED",
        "desert-springs-alpr",
    )
    assert audit["fields_in_clear"] == ["plate"]


def test_no_agreement_no_output() -> None:
    assert (
        ROUTER.route(
            consumed(
                "src.dc0990400.alpr.read", encode(alpr_event(FEDERAL, "r1", where=None, at=AT))
            ),
            {},
        )
        == []
    )


def test_an_event_claiming_another_owner_is_dead_lettered() -> None:
    (out,) = ROUTER.route(
        consumed("src.ca0990100.alpr.read", encode(alpr_event(DESERT, "r1", where=None, at=AT))), {}
    )
    letter = dead(out)
    assert letter["error_type"] == "wrong_topic"
    assert letter["position"] == "partition 2 offset 17"
    assert letter["source"] == "src.ca0990100.alpr.read"


def test_garbage_is_dead_lettered_with_its_bytes() -> None:
    (out,) = ROUTER.route(consumed("src.ca0990100.alpr.read", b"not avro"), {})
    letter = dead(out)
    assert letter["error_type"] == "undecodable"
    assert "not an Avro event" in letter["reason"]
    assert letter["payload"] == b"not avro"


def test_a_tombstone_on_a_source_topic_is_dead_lettered() -> None:
    (out,) = ROUTER.route(consumed("src.ca0990100.alpr.read", None), {})
    assert dead(out)["error_type"] == "null_value"


def withdrawal_router(tmp_path: Path) -> Router:
    (tmp_path / "a.yaml").write_text(
        "agreements:\n"
        "  - id: desert-out\n"
        "    version: 1\n"
        "    owner: NV0990300\n"
        "    partners: [CA0990100, CA0990200]\n"
        "    kinds: [alpr.read]\n"
        "  - id: desert-to-county-no-juveniles\n"
        "    version: 4\n"
        "    owner: NV0990300\n"
        "    partners: [CA0990200]\n"
        "    kinds: [rms.record]\n"
        "    conditions: {exclude_labels: [juvenile]}\n"
    )
    registry = load_registry(Path("deploy/agencies.yaml"))
    policy = load_policy(tmp_path, registry)
    return Router(policy, Codecs(STORE), public_keys={}, hash_key=None, clock=lambda: AT)


def version_of(owner: str, kind: Kind, op: str, version: int, labels: list[str]) -> bytes:
    envelope = new_envelope(
        source_ori=owner,
        source_system="t",
        kind=kind,
        record_id="r1",
        version=version,
        occurred_at=AT,
        now=AT,
        op=op,
        labels=labels,
    )
    body = None if op == "DELETE" else {"plate": "7ABC123"} if kind == Kind.ALPR_READ else {}
    encoder = AvroSerializer(STORE, SOURCE_EVENT[kind])
    return encoder({"envelope": envelope, "body": body}, SerializationContext("t"))


def summary(outputs: list) -> list[tuple[str, str]]:
    """(topic, what) for each output: the shared op, 'tombstone', or the audit decision."""
    out = []
    for o in outputs:
        if o.value is None:
            out.append((o.topic, "tombstone"))
        elif o.topic == "audit.dissemination":
            audit = AvroDeserializer(STORE, AUDIT_DISSEMINATION_SCHEMA)(
                o.value, SerializationContext("a")
            )
            out.append((o.topic, f"{audit['partner_ori']} {audit['decision']}"))
        else:
            kind = Kind(o.topic.split(".", 2)[2])
            shared = AvroDeserializer(STORE, SHARED_EVENT[kind])(o.value, SerializationContext("s"))
            out.append((o.topic, shared["envelope"]["op"]))
    return out


def test_a_delete_is_sent_to_exactly_the_partners_that_hold_the_record(tmp_path: Path) -> None:
    router, holders = withdrawal_router(tmp_path), {}
    topic = "src.nv0990300.alpr.read"
    router.route(consumed(topic, version_of("NV0990300", Kind.ALPR_READ, "UPSERT", 1, [])), holders)
    entry = holders["alpr.read/NV0990300/r1"]
    fingerprint = entry["partners"]["CA0990100"][2]
    assert entry == {
        "partition": 2,
        "offset": 17,  # where the source event is, to read it back for a recall
        "version": 1,
        "labels": [],
        "policy": entry["policy"],
        "revision": int(AT.timestamp() * 1000),
        "partners": {
            "CA0990100": ["desert-out", 1, fingerprint, "SHARED"],
            "CA0990200": ["desert-out", 1, fingerprint, "SHARED"],
        },
    }
    outputs = router.route(
        consumed(topic, version_of("NV0990300", Kind.ALPR_READ, "DELETE", 2, [])), holders
    )
    assert summary(outputs) == [
        ("share.ca0990100.alpr.read", "DELETE"),
        ("share.ca0990100.alpr.read", "tombstone"),
        ("audit.dissemination", "CA0990100 WITHDRAWN"),
        ("share.ca0990200.alpr.read", "DELETE"),
        ("share.ca0990200.alpr.read", "tombstone"),
        ("audit.dissemination", "CA0990200 WITHDRAWN"),
    ]
    assert holders == {}
    # Deleting again, or deleting what nobody received, sends nothing.
    again = version_of("NV0990300", Kind.ALPR_READ, "DELETE", 3, [])
    assert router.route(consumed(topic, again), holders) == []


def test_sealing_withdraws_and_a_new_label_narrows(tmp_path: Path) -> None:
    router, holders = withdrawal_router(tmp_path), {}
    topic = "src.nv0990300.rms.record"
    first = router.route(
        consumed(topic, version_of("NV0990300", Kind.RMS_RECORD, "UPSERT", 1, [])), holders
    )
    assert summary(first) == [
        ("share.ca0990200.rms.record", "UPSERT"),
        ("audit.dissemination", "CA0990200 SHARED"),
    ]
    # A new version now labelled juvenile no longer qualifies: the county gets a withdrawal.
    narrowed = router.route(
        consumed(topic, version_of("NV0990300", Kind.RMS_RECORD, "UPSERT", 2, ["juvenile"])),
        holders,
    )
    assert summary(narrowed) == [
        ("audit.dissemination", "CA0990200 DENIED"),
        ("share.ca0990200.rms.record", "DELETE"),
        ("share.ca0990200.rms.record", "tombstone"),
        ("audit.dissemination", "CA0990200 WITHDRAWN"),
    ]
    assert holders == {}
    router.route(
        consumed(topic, version_of("NV0990300", Kind.RMS_RECORD, "UPSERT", 3, [])), holders
    )
    sealed = router.route(
        consumed(topic, version_of("NV0990300", Kind.RMS_RECORD, "UPSERT", 4, ["sealed"])), holders
    )
    assert summary(sealed) == [
        ("share.ca0990200.rms.record", "DELETE"),
        ("share.ca0990200.rms.record", "tombstone"),
        ("audit.dissemination", "CA0990200 WITHDRAWN"),
    ]


def test_narrowed_agreements_recall_records_already_shared(tmp_path: Path) -> None:
    router, holders = withdrawal_router(tmp_path), {}
    topic = "src.nv0990300.alpr.read"
    first = version_of("NV0990300", Kind.ALPR_READ, "UPSERT", 1, [])
    source = {(topic, 2, 17): first}  # the source topic, as read back
    router.read_source = lambda *position: source.get(position)
    router.route(consumed(topic, first), holders)
    (tmp_path / "a.yaml").write_text(
        "agreements:\n"
        "  - id: desert-out\n"
        "    version: 2\n"
        "    owner: NV0990300\n"
        "    partners: [CA0990200]\n"
        "    kinds: [alpr.read]\n"
    )
    router.use_policy(load_policy(tmp_path, load_registry(Path("deploy/agencies.yaml"))))
    (control,) = router.rechecks(holders)
    assert (control.topic, control.key, control.partition) == (
        "mutualaid-router.control",
        b"alpr.read/NV0990300/r1",
        2,
    )
    outputs = router.route(Consumed(control.topic, 2, 0, control.key, control.value), holders)
    assert summary(outputs) == [
        ("share.ca0990100.alpr.read", "DELETE"),
        ("share.ca0990100.alpr.read", "tombstone"),
        ("audit.dissemination", "CA0990100 WITHDRAWN"),
    ]
    (kept,) = holders["alpr.read/NV0990300/r1"]["partners"].items()
    assert kept[0] == "CA0990200" and kept[1][:2] == ["desert-out", 1]
    assert router.rechecks(holders) == []  # nothing left to recall


def test_a_seal_with_a_lower_version_withdraws_at_the_version_partners_hold(
    tmp_path: Path,
) -> None:
    router, holders = withdrawal_router(tmp_path), {}
    topic = "src.nv0990300.rms.record"
    first = version_of("NV0990300", Kind.RMS_RECORD, "UPSERT", 5, [])
    router.route(consumed(topic, first), holders)
    # An older version arriving late changes nothing: the county's index holds version 5.
    late = version_of("NV0990300", Kind.RMS_RECORD, "UPSERT", 4, [])
    assert router.route(consumed(topic, late), holders) == []
    sealed = router.route(
        consumed(topic, version_of("NV0990300", Kind.RMS_RECORD, "UPSERT", 3, ["sealed"])), holders
    )
    assert summary(sealed) == [
        ("share.ca0990200.rms.record", "DELETE"),
        ("share.ca0990200.rms.record", "tombstone"),
        ("audit.dissemination", "CA0990200 WITHDRAWN"),
    ]
    withdrawal = AvroDeserializer(STORE, SHARED_EVENT[Kind.RMS_RECORD])(
        sealed[0].value, SerializationContext("s")
    )
    assert withdrawal["envelope"]["version"] == 5  # not 3, which the index would ignore
    assert holders == {}


def test_each_audit_lists_what_its_own_record_left_in_clear() -> None:
    # The router lists a body's clear paths once for all partners sharing it unchanged; a
    # record routed after another must not inherit the other's list.
    bare = alpr_event(DESERT, "r1", where=None, at=AT)
    placed = alpr_event(DESERT, "r2", at=AT, camera_name="Main St EB")
    listed = {}
    for event in (bare, placed, bare):
        outputs = ROUTER.route(consumed("src.nv0990300.alpr.read", encode(event)), {})
        audits = [
            AvroDeserializer(STORE, AUDIT_DISSEMINATION_SCHEMA)(
                o.value, SerializationContext(o.topic)
            )
            for o in outputs
            if o.topic == "audit.dissemination"
        ]
        assert len(audits) == 2
        listed[event["envelope"]["record_id"]] = [a["fields_in_clear"] for a in audits]
    assert listed["r1"] == [["plate"], ["plate"]]
    assert listed["r2"] == [["plate", "camera_name", "latitude", "longitude"]] * 2


def retention_router(tmp_path: Path, county_days: int | None) -> Router:
    """Reads shared with the city for 30 days and with the county for ``county_days`` (None:
    no retention), under two agreements."""
    county = "" if county_days is None else f"    retention_days: {county_days}\n"
    (tmp_path / "a.yaml").write_text(
        "agreements:\n"
        "  - id: desert-to-city\n"
        "    version: 1\n"
        "    owner: NV0990300\n"
        "    partners: [CA0990100]\n"
        "    kinds: [alpr.read]\n"
        "    retention_days: 30\n"
        "  - id: desert-to-county\n"
        "    version: 1\n"
        "    owner: NV0990300\n"
        "    partners: [CA0990200]\n"
        "    kinds: [alpr.read]\n" + county
    )
    policy = load_policy(tmp_path, load_registry(Path("deploy/agencies.yaml")))
    return Router(policy, Codecs(STORE), public_keys={}, hash_key=None, clock=lambda: AT)


def test_the_holders_entry_is_kept_until_a_day_after_the_last_copy_passes_its_retention(
    tmp_path: Path,
) -> None:
    holders: dict = {}
    topic = "src.nv0990300.alpr.read"
    outputs = retention_router(tmp_path, 90).route(
        consumed(topic, version_of("NV0990300", Kind.ALPR_READ, "UPSERT", 1, [])), holders
    )
    decode = AvroDeserializer(STORE, SHARED_EVENT[Kind.ALPR_READ])
    retained = {
        o.topic: decode(o.value, SerializationContext(o.topic))["disclosure"]["retain_until"]
        for o in outputs
        if o.topic.startswith("share.")
    }
    assert retained == {
        "share.ca0990100.alpr.read": AT + timedelta(days=30),
        "share.ca0990200.alpr.read": AT + timedelta(days=90),
    }
    entry = holders["alpr.read/NV0990300/r1"]
    assert entry["held_until"] == int((AT + timedelta(days=90)).timestamp() * 1000)
    assert holders_expiry(entry) == int((AT + timedelta(days=91)).timestamp() * 1000)


def test_a_copy_kept_without_limit_keeps_the_holders_entry_for_good(tmp_path: Path) -> None:
    holders: dict = {}
    retention_router(tmp_path, None).route(
        consumed(
            "src.nv0990300.alpr.read", version_of("NV0990300", Kind.ALPR_READ, "UPSERT", 1, [])
        ),
        holders,
    )
    entry = holders["alpr.read/NV0990300/r1"]
    assert "held_until" not in entry
    assert holders_expiry(entry) is None


def test_each_copy_carries_its_own_event_and_its_own_partners_fields(tmp_path: Path) -> None:
    # The router writes an event's envelope and body once for all the copies that carry them
    # unchanged; a copy whose agreement withholds a field, and the next event's copies, must
    # not be given bytes written for another.
    (tmp_path / "a.yaml").write_text(
        "agreements:\n"
        "  - id: desert-to-city\n"
        "    version: 1\n"
        "    owner: NV0990300\n"
        "    partners: [CA0990200]\n"
        "    kinds: [alpr.read]\n"
        "    fields:\n"
        "      camera_name: drop\n"
        "  - id: desert-to-county\n"
        "    version: 1\n"
        "    owner: NV0990300\n"
        "    partners: [CA0990100, DC0990400]\n"
        "    kinds: [alpr.read]\n"
    )
    policy = load_policy(tmp_path, load_registry(Path("deploy/agencies.yaml")))
    router = Router(policy, Codecs(STORE), public_keys={}, hash_key=None, clock=lambda: AT)
    decode = AvroDeserializer(STORE, SHARED_EVENT[Kind.ALPR_READ])
    events = [
        alpr_event(DESERT, "r1", at=AT, camera_name="Main St EB"),
        alpr_event(DESERT, "r1", at=AT, camera_name="Main St EB") | {"body": None},
        alpr_event(DESERT, "r2", at=AT + timedelta(minutes=1), camera_name="Elm St WB"),
        alpr_event(DESERT, "r3", at=AT + timedelta(minutes=2), camera_name="Elm St WB"),
    ]
    events[1]["envelope"] |= {"version": 2}
    read = AvroDeserializer(STORE, SOURCE_EVENT[Kind.ALPR_READ])
    for published in events:
        event = read(encode(published), SerializationContext("t"))  # every field, as routed
        outputs = router.route(consumed("src.nv0990300.alpr.read", encode(event)), {})
        copies = {
            copy["disclosure"]["partner_ori"]: copy
            for copy in (
                decode(o.value, SerializationContext(o.topic))
                for o in outputs
                if o.topic.startswith("share.")
            )
        }
        # In ORI order: the middle copy's body differs from the first's and the last's.
        assert list(copies) == ["CA0990100", "CA0990200", "DC0990400"]
        sent = {**event["envelope"], "source_position": None}
        for partner, copy in copies.items():
            assert copy["envelope"] == sent, partner
            if event["body"] is None:
                assert copy["body"] is None, partner
            elif partner == "CA0990200":
                assert copy["body"] == event["body"] | {"camera_name": None}
            else:
                assert copy["body"] == event["body"], partner
