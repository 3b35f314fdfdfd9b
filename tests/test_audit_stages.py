"""The audit the real stages write, checked by `mutualaid audit verify` on the real broker: the
router's and the projector's records are signed and chained, a restart continues the chain,
and each kind of tampering with what they wrote (forged, altered, missing, reordered, and the
gap retention leaves) is named by topic, partition, offset, writer and seq."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from mutualaid.auditlog import SEQ, SIG, WRITER, AuditWriter, search_audit_stage, stage_of
from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.kafkaserver import KafkaCluster
from mutualaid.serde import (
    AUDIT_DISSEMINATION_SCHEMA,
    SEARCH_AUDIT,
    AvroDeserializer,
    AvroSerializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.topics import AUDIT_DISSEMINATION, AUDIT_SEARCH, Kind, TopicSpec
from support.brokers import Broker, read_topic
from support.events import alpr_event
from support.processes import mutualaid_cli, running_stages
from support.regions import Region, publish_source

pytestmark = pytest.mark.broker

STORE = SchemaStore()


def signed_as(stage: str, topic: str, region: Region, count: int) -> list[Message]:
    """The records on ``topic`` signed by ``stage`` (any instance), in seq order, once there
    are at least ``count``."""

    def mine(records: list[Message]) -> list[Message]:
        return [m for m in records if stage_of(header(m, WRITER)) == stage]

    records = mine(
        # A restarted router first waits for its group and table: a generous deadline, polled.
        read_topic(
            region.settings.bootstrap_servers, topic, lambda r: len(mine(r)) >= count, timeout=90
        )
    )
    assert len(records) >= count, f"{len(records)} of {count} {stage} records on {topic}"
    return sorted(records, key=lambda m: int(header(m, SEQ)))


def header(msg: Message, name: str) -> str:
    return dict(msg.headers() or []).get(name, b"").decode()


def verify(region: Region, *args: str) -> subprocess.CompletedProcess[str]:
    return mutualaid_cli(region, "audit", "verify", *args)


def reads(region: Region, count: int) -> None:
    """``count`` plate reads by the neighbour, which its agreement shares with both CA
    agencies: a decision, and so an audit record, per partner."""
    now = datetime.now(UTC)
    events = [
        alpr_event(region.neighbour, f"N-{uuid.uuid4().hex[:6]}", at=now) for _ in range(count)
    ]
    publish_source(region, Kind.ALPR_READ, events, owner=region.neighbour)


def scratch_copy(region: Region, records: list[Message]) -> str:
    """A one-partition topic holding ``records`` in this order, headers and all, as someone
    with write access to the cluster could rebuild the audit."""
    topic = f"audit.copy-{region.local.lower()}-{uuid.uuid4().hex[:6]}"
    ensure_topics(wait_for_broker(region.settings.bootstrap_servers), [TopicSpec(topic, 1)], 1)
    producer = Producer({"bootstrap.servers": region.settings.bootstrap_servers})
    for m in records:
        producer.produce(topic, m.value(), m.key(), headers=m.headers(), partition=0)
    assert producer.flush(10) == 0
    return topic


def rewritten(msg: Message, schema: str, topic: str, **changes: object) -> bytes:
    """The record's Avro value with ``changes``: a plausible record, not noise."""
    ctx = SerializationContext(topic)
    record = AvroDeserializer(STORE, schema)(msg.value(), ctx)
    return AvroSerializer(STORE, schema)({**record, **changes}, ctx)


def produced(region: Region, topic: str, msg: Message, value: bytes, headers: object) -> str:
    """Write ``value`` under ``msg``'s key to ``msg``'s partition of ``topic`` with a bare
    producer; where it landed, as verify names it."""
    landed: list[Message] = []
    producer = Producer({"bootstrap.servers": region.settings.bootstrap_servers})
    producer.produce(
        topic,
        value,
        msg.key(),
        partition=msg.partition(),
        headers=headers,
        on_delivery=lambda err, m: landed.append(m),
    )
    assert producer.flush(10) == 0 and landed[0].error() is None
    return f"{topic} partition {landed[0].partition()} offset {landed[0].offset()}"


def test_the_router_signs_and_chains_its_audit_across_a_restart_and_tampering_is_named(
    region: Region, tmp_path: Path, broker: Broker
) -> None:
    router = region.settings.router_id
    with running_stages(region, tmp_path / "first", []):
        reads(region, 2)
        first = signed_as(router, AUDIT_DISSEMINATION, region, 4)
    # A clean restart: the worker links on from its last record, it does not start over.
    with running_stages(region, tmp_path / "second", []):
        reads(region, 1)
        signed_as(router, AUDIT_DISSEMINATION, region, 6)
    # Read again once it stopped, so nothing is still on its way. (Reads the first router had
    # routed but not yet committed are decided, and audited, again: at least once.)
    records = signed_as(router, AUDIT_DISSEMINATION, region, 6)
    writer = header(records[0], WRITER)
    assert writer.startswith(f"{router}@")
    assert {header(m, WRITER) for m in records} == {writer}
    assert [int(header(m, SEQ)) for m in records] == list(range(1, len(records) + 1))
    assert [m.offset() for m in records[:4]] == [m.offset() for m in first]
    result = verify(region, "--topic", AUDIT_DISSEMINATION, "--stage", router)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"chains: {writer} to seq {len(records)}\n" in result.stdout
    assert "intact" in result.stdout

    # Forged: a DENIED record by a bare producer, beside the router's genuine one.
    genuine = records[1]
    denied = rewritten(genuine, AUDIT_DISSEMINATION_SCHEMA, AUDIT_DISSEMINATION, decision="DENIED")
    forged_at = produced(region, AUDIT_DISSEMINATION, genuine, denied, None)
    # Altered: the router's headers kept, the decision changed.
    altered_at = produced(region, AUDIT_DISSEMINATION, genuine, denied, genuine.headers())
    result = verify(region, "--topic", AUDIT_DISSEMINATION)
    assert result.returncode == 4 and "NOT INTACT" in result.stdout
    assert f"{forged_at}: forged: not signed by any stage" in result.stdout
    assert f"{altered_at}: altered or forged: {writer} seq 2 " in result.stdout
    # Narrowed to the router, the bare record is not checked, the altered one still fails.
    result = verify(region, "--topic", AUDIT_DISSEMINATION, "--stage", router)
    assert result.returncode == 4
    assert f"{forged_at}: forged" not in result.stdout and altered_at in result.stdout

    # Missing, reordered and a gap at the start, in copies of what the router wrote.
    copy = scratch_copy(region, [*records[:2], *records[3:]])
    result = verify(region, "--topic", copy, "--as", AUDIT_DISSEMINATION)
    assert result.returncode == 4
    assert (
        f"missing: {writer} seq 3 is not on the topic (between {copy} partition 0 offset 1 and "
        "offset 2)"
    ) in result.stdout
    copy = scratch_copy(region, [records[0], records[2], records[1], *records[3:]])
    result = verify(region, "--topic", copy, "--as", AUDIT_DISSEMINATION)
    assert result.returncode == 4
    assert f"{copy} partition 0 offset 2: reordered: {writer} seq 2 comes after seq 3" in (
        result.stdout
    )
    assert "missing" not in result.stdout  # the record is there, only out of place
    # Only the last record of each batch is signed, vouching for the rest through the chain:
    # records that no signature vouches for (here the first, alone) are named.
    assert SIG not in dict(records[0].headers())
    copy = scratch_copy(region, records[:1])
    result = verify(region, "--topic", copy, "--as", AUDIT_DISSEMINATION)
    assert result.returncode == 4
    assert f"{copy} partition 0 offset 0: unvouched: {writer} seq 1 is covered by no signature" in (
        result.stdout
    )
    # As the broker's retention would leave it: the oldest records deleted. Apache Kafka
    # deletes them as retention does (DeleteRecords); Tansu has no DeleteRecords (the request
    # stops it), so there the copy simply starts later.
    if isinstance(broker, KafkaCluster):
        copy, start = scratch_copy(region, records), 2
        admin = AdminClient({"bootstrap.servers": region.settings.bootstrap_servers})
        for future in admin.delete_records([TopicPartition(copy, 0, 2)]).values():
            future.result(timeout=10)
    else:
        copy, start = scratch_copy(region, records[2:]), 0
    result = verify(region, "--topic", copy, "--as", AUDIT_DISSEMINATION)
    assert result.returncode == 0, result.stdout
    assert f"gap: {writer}: the topic starts at seq 3 ({copy} partition 0 offset {start})" in (
        result.stdout
    )


def test_the_search_audit_is_signed_by_the_agencys_projector(
    region: Region, tmp_path: Path
) -> None:
    stage = search_audit_stage(region.county)
    with running_stages(region, tmp_path, [region.county]):
        for reason in ("case 24-001", "case 24-002"):
            searched = mutualaid_cli(
                region, "search", "--agency", region.county, "--plate", "7ABC123",
                "--reason", reason, "--user", "det.rivera",
            )  # fmt: skip
            assert searched.returncode == 0, searched.stderr
        records = signed_as(stage, AUDIT_SEARCH, region, 2)
    writer = header(records[0], WRITER)
    result = verify(region, "--topic", AUDIT_SEARCH, "--stage", stage)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"chains: {writer} to seq 2\n" in result.stdout
    # Someone rewrites who searched, keeping the projector's signature headers.
    value = rewritten(records[0], SEARCH_AUDIT, AUDIT_SEARCH, user="someone.else")
    altered_at = produced(region, AUDIT_SEARCH, records[0], value, records[0].headers())
    result = verify(region, "--topic", AUDIT_SEARCH, "--stage", stage)
    assert result.returncode == 4
    assert f"{altered_at}: altered or forged: {writer} seq 1 " in result.stdout


def test_a_record_signed_but_never_delivered_leaves_no_hole(region: Region) -> None:
    """The crash case: the writer signed a record, then died before it reached the broker.
    The chain lives only on the topic, so the restarted writer links on from the last record
    that arrived, and verify finds the chain whole."""
    topic = f"audit.crash-{region.local.lower()}"
    ensure_topics(wait_for_broker(region.settings.bootstrap_servers), [TopicSpec(topic, 2)], 1)
    router = region.settings.router_id
    before = AuditWriter(region.settings, topic, router, AUDIT_DISSEMINATION, instance="w1")
    for n in (1, 2):
        before.write(f"k{n}".encode(), f"decision {n}".encode())
    before.signer.seal(topic, b"k3", b"signed, never sent", AUDIT_DISSEMINATION)
    before.close()
    after = AuditWriter(region.settings, topic, router, AUDIT_DISSEMINATION, instance="w1")
    after.write(b"k3", b"decision 3")
    after.close()
    result = verify(region, "--topic", topic, "--as", AUDIT_DISSEMINATION)
    assert result.returncode == 0, result.stdout
    assert f"chains: {router}@w1 to seq 3\n" in result.stdout and "intact" in result.stdout


def test_records_a_crash_left_unsigned_are_named_not_vouched_for(region: Region) -> None:
    """A writer that dies mid-batch leaves records on the topic whose signed last record never
    came. Its restart links on from them but cannot tell them from records someone appended
    under its name, so it says it restarted, and verify names them rather than vouch."""
    topic = f"audit.midbatch-{region.local.lower()}"
    ensure_topics(wait_for_broker(region.settings.bootstrap_servers), [TopicSpec(topic, 1)], 1)
    router = region.settings.router_id
    before = AuditWriter(region.settings, topic, router, AUDIT_DISSEMINATION, instance="w1")
    before.write(b"k1", b"decision 1")
    producer = Producer({"bootstrap.servers": region.settings.bootstrap_servers})
    for n in (2, 3):  # delivered, unsigned: the batch's last record never written
        key, value = f"k{n}".encode(), f"decision {n}".encode()
        partition, headers = before.signer.seal(topic, key, value, AUDIT_DISSEMINATION, False)
        producer.produce(topic, value, key, partition=partition, headers=headers)
    assert producer.flush(10) == 0
    before.close()
    after = AuditWriter(region.settings, topic, router, AUDIT_DISSEMINATION, instance="w1")
    after.write(b"k4", b"decision 4")
    after.close()
    result = verify(region, "--topic", topic, "--as", AUDIT_DISSEMINATION)
    assert result.returncode == 4, result.stdout
    assert f"chains: {router}@w1 to seq 4\n" in result.stdout
    assert (
        f"{topic} partition 0 offset 1: unvouched: {router}@w1 seq 2-3 is covered by no "
        f"signature: its writer restarted at {topic} partition 0 offset 3"
    ) in result.stdout
