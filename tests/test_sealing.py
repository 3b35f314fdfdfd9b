"""Whole-record sealing of share topics, without a broker: the router seals, only the partner
opens, a clear part moved or edited does not open, data keys rotate and are reused between."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from consumers.opening import ShareReader, open_shared
from mutualaid.agencies import load_registry
from mutualaid.crypto import generate_keypair, load_keyring, newest_public_key
from mutualaid.disclosure import MissingKey
from mutualaid.events import new_envelope
from mutualaid.policy import load_policy
from mutualaid.sealing import SEALED_SHARE, Sealer, Unsealer, UnsealError
from mutualaid.serde import (
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    Codecs,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import Kind
from streams.router import Consumed, Output, Router

STORE = SchemaStore()
CODECS = Codecs(STORE)
OWNER, PARTNER, OTHER = "NV0990300", "CA0990100", "CA0990200"  # deploy/: NV shares with both
AT = datetime(2026, 11, 24, 21, 0, tzinfo=UTC)
PLATE, PLACE = "7ABC123", "Lake Pkwy & Kingsbury Grade"
TOPIC = "share.ca0990100.alpr.read"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    public, private = tmp_path / "public", tmp_path / "private"
    for ori in (PARTNER, OTHER):
        generate_keypair(ori, public, private)
    return public, private


def router(public: Path, clock: Clock | None = None, required: bool = False) -> Router:
    registry = load_registry(Path("deploy/agencies.yaml"))
    sealer = Sealer(
        lambda ori: newest_public_key(ori, public),
        rotate_seconds=3600,
        required=required,
        clock=clock or Clock(),
    )
    policy = load_policy(Path("deploy/agreements"), registry)
    return Router(policy, Codecs(STORE), public_keys={}, hash_key=None, sealer=sealer)


def source(n: int, op: str = "UPSERT") -> Consumed:
    envelope = new_envelope(
        source_ori=OWNER,
        source_system="t",
        kind=Kind.ALPR_READ,
        record_id=f"r{n}",
        version=1,
        occurred_at=AT,
        now=AT,
        op=op,
    )
    body = {"plate": PLATE, "plate_state": "CA", "camera_name": PLACE}
    topic = f"src.{OWNER.lower()}.alpr.read"
    value = AvroSerializer(STORE, SOURCE_EVENT[Kind.ALPR_READ])(
        {"envelope": envelope, "body": body}, SerializationContext(topic)
    )
    return Consumed(topic, 0, n, None, value)


def share(outputs: list[Output], topic: str = TOPIC) -> Output:
    (found,) = [o for o in outputs if o.topic == topic and o.value is not None]
    return found


def sealed_record(value: bytes) -> dict:
    record = AvroDeserializer(STORE, SEALED_SHARE)(value, SerializationContext(TOPIC))
    assert record is not None
    return record


def reencode(record: dict) -> bytes:
    value = AvroSerializer(STORE, SEALED_SHARE)(record, SerializationContext(TOPIC))
    assert value is not None
    return value


def reader(private: Path, ori: str = PARTNER) -> ShareReader:
    return ShareReader(CODECS, load_keyring(ori, private))


def test_the_partner_opens_the_whole_record_and_the_topic_holds_no_clear_body(keys) -> None:
    public, private = keys
    value = share(router(public).route(source(1), {})).value
    assert value is not None
    assert PLATE.encode() not in value and b"Kingsbury" not in value
    clear = sealed_record(value)
    assert (clear["source_ori"], clear["partner_ori"], clear["op"], clear["tier"]) == (
        OWNER,
        PARTNER,
        "UPSERT",
        "FULL",
    )
    event = reader(private).decode(Kind.ALPR_READ, value, SerializationContext(TOPIC))
    assert event["body"]["plate"] == PLATE and event["body"]["camera_name"] == PLACE
    assert event["envelope"]["event_id"] == clear["event_id"]
    assert open_shared(event, load_keyring(PARTNER, private), False) == event  # no field seals


def test_another_partner_cannot_open_it(keys) -> None:
    public, private = keys
    value = share(router(public).route(source(1), {})).value
    assert value is not None
    with pytest.raises(UnsealError, match="sealed for CA0990100"):
        reader(private, OTHER).decode(Kind.ALPR_READ, value, SerializationContext(TOPIC))
    # Relabelled for the other partner, the wrap still does not open with its keys.
    relabelled = reencode({**sealed_record(value), "partner_ori": OTHER})
    with pytest.raises(UnsealError, match="does not unwrap"):
        reader(private, OTHER).decode(Kind.ALPR_READ, relabelled, SerializationContext(TOPIC))


@pytest.mark.parametrize(
    "field, value",
    [("record_id", "r2"), ("op", "DELETE"), ("version", 9), ("revision", 1), ("tier", "POINTER")],
)
def test_an_edited_clear_part_does_not_open(keys, field: str, value: object) -> None:
    public, private = keys
    sealed = sealed_record(share(router(public).route(source(1), {})).value or b"")
    with pytest.raises(UnsealError, match="altered"):
        reader(private).decode(
            Kind.ALPR_READ, reencode({**sealed, field: value}), SerializationContext(TOPIC)
        )


def test_a_clear_part_swapped_onto_another_body_does_not_open(keys) -> None:
    public, private = keys
    r = router(public)
    first = sealed_record(share(r.route(source(1), {})).value or b"")
    second = sealed_record(share(r.route(source(2), {})).value or b"")
    assert first["data_key_id"] == second["data_key_id"]  # one data key: only the AAD differs
    swapped = {**first, "nonce": second["nonce"], "ciphertext": second["ciphertext"]}
    with pytest.raises(UnsealError, match="altered"):
        reader(private).decode(Kind.ALPR_READ, reencode(swapped), SerializationContext(TOPIC))


def test_withdrawals_are_sealed_too(keys) -> None:
    public, private = keys
    r = router(public)
    holders: dict = {}
    r.route(source(1), holders)
    value = share(r.route(source(1, op="DELETE"), holders)).value
    assert value is not None and sealed_record(value)["op"] == "DELETE"
    event = reader(private).decode(Kind.ALPR_READ, value, SerializationContext(TOPIC))
    assert event["envelope"]["op"] == "DELETE" and event["body"] is None


def test_data_keys_rotate_on_schedule_and_with_the_partners_key(keys) -> None:
    public, private = keys
    clock = Clock()
    r = router(public, clock)

    def data_key(n: int) -> tuple[str, str]:
        record = sealed_record(share(r.route(source(n), {})).value or b"")
        return record["data_key_id"], record["key_id"]

    first = data_key(1)
    assert data_key(2) == first  # cached: no new key agreement per record
    clock.now = 3600.0
    second = data_key(3)
    assert second[0] != first[0] and second[1] == first[1]  # a new data key, same partner key
    new_key_id = generate_keypair(PARTNER, public, private)
    clock.now += 30  # within a minute of the partner's new key: still the old one
    assert data_key(4) == second
    clock.now += 60
    third = data_key(5)
    assert third[1] == new_key_id and third[0] != second[0]
    # The partner holds both private keys: records under every data key still open.
    opened = reader(private)
    for n in range(1, 6):
        value = share(r.route(source(n), {})).value or b""
        assert opened.decode(Kind.ALPR_READ, value, SerializationContext(TOPIC))["body"]


def test_the_partner_unwraps_each_data_key_once(keys, monkeypatch) -> None:
    public, private = keys
    r = router(public)
    keyring = load_keyring(PARTNER, private)
    unwraps = []
    real = keyring.unwrap_key
    monkeypatch.setattr(keyring, "unwrap_key", lambda *a: unwraps.append(1) or real(*a))
    unsealer = Unsealer(keyring)
    for n in range(5):
        unsealer.open(sealed_record(share(r.route(source(n), {})).value or b""))
    assert len(unwraps) == 1


def test_required_sealing_refuses_a_partner_without_a_key(tmp_path: Path) -> None:
    public = tmp_path / "public"
    generate_keypair(PARTNER, public, tmp_path / "private")  # not OTHER, nor the rest
    with pytest.raises(MissingKey, match=r"share_sealing is required.*CA0990200"):
        router(public, required=True)
    # Keyed: a partner without a key gets clear copies, and is named for the warning.
    keyed = router(public)
    assert OTHER in keyed.unsealed_partners() and PARTNER not in keyed.unsealed_partners()
    outputs = keyed.route(source(1), {})
    assert PLATE.encode() in share(outputs, "share.ca0990200.alpr.read").value  # type: ignore[operator]
    assert PLATE.encode() not in share(outputs).value  # type: ignore[operator]
