"""A tamper-evident audit: each record signed by the stage that wrote it, and chained.

The signature and the chain travel in Kafka record headers, so the audit value (the Avro record
every reader decodes) is unchanged:

- ``mutualaid-audit-writer``: the stage's name (its key is ``<public_keys_dir>/stages/<name>.pub``)
- ``mutualaid-audit-seq``: 1, 2, 3 ... per writer
- ``mutualaid-audit-prev``: the link hash of the writer's previous record (64 zeros for the first)
- ``mutualaid-audit-sig``: Ed25519 over the writer, seq, prev, stream, key hash and value hash

The stream is the audit topic the record was written for (``audit.dissemination``), so a record
copied into another audit stream does not verify there; a copy of a whole topic (a mirror, a
backup) is checked as the stream it was written for.

A record's link hash is SHA-256 over what was signed and its signature. ``verify`` reads a
topic whole and says which records are unsigned or signed by an unknown writer (forged), which
fail their signature (altered), where a writer's sequence has a hole (missing), runs backwards
(reordered) or does not link to the record before it (replaced). A writer whose first record on
the topic is not seq 1 is reported as a gap at the start: retention deletes the oldest records,
and from the topic alone that cannot be told apart from records removed on purpose.

A writer keeps its records on one partition (chosen from its name), so Kafka keeps them in
order, and at start it recovers its chain head by reading its last record back.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mutualaid.errors import UsageError
from mutualaid.kafka import DeliveryTracker, TopicFollower, producer_config
from mutualaid.kafkaclients import client_config
from mutualaid.private import open_private, private_dir
from mutualaid.settings import Settings

WRITER, SEQ, PREV, SIG = (f"mutualaid-audit-{n}" for n in ("writer", "seq", "prev", "sig"))
GENESIS = "0" * 64
_DOMAIN = b"mutualaid-audit-v1"


class AuditKeyError(UsageError):
    """A stage key that is missing or not an Ed25519 key."""


def stage_key_paths(settings: Settings, stage: str) -> tuple[Path, Path]:
    """(private, public) key files of a stage."""
    return (
        settings.private_keys_dir / "stages" / f"{stage}.pem",
        settings.public_keys_dir / "stages" / f"{stage}.pub",
    )


def generate_stage_key(settings: Settings, stage: str) -> Path:
    """A new Ed25519 key for ``stage``: private 0600 (never overwritten), public beside the
    partners' keys, where ``verify`` looks. Returns the public key's path."""
    private_path, public_path = stage_key_paths(settings, stage)
    private_dir(private_path.parent)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with os.fdopen(open_private(private_path, os.O_WRONLY | os.O_EXCL), "wb") as out:
        out.write(pem)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_path


def load_stage_key(settings: Settings, stage: str) -> Ed25519PrivateKey:
    path = stage_key_paths(settings, stage)[0]
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise AuditKeyError(
            f"no audit key for {stage} at {path}; run mutualaid keys stage --stage {stage}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path} is not an Ed25519 private key")
    return key


def public_stage_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    keys = {}
    for path in sorted((settings.public_keys_dir / "stages").glob("*.pub")):
        key = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise AuditKeyError(f"{path} is not an Ed25519 public key")
        keys[path.stem] = key
    return keys


def _signed(
    writer: str, seq: int, prev: str, stream: str, key: bytes | None, value: bytes
) -> bytes:
    parts = [
        _DOMAIN,
        writer.encode(),
        str(seq).encode(),
        prev.encode(),
        stream.encode(),
        hashlib.sha256(key or b"").hexdigest().encode(),
        hashlib.sha256(value).hexdigest().encode(),
    ]
    return b"\0".join(parts)


def _link(signed: bytes, signature: bytes) -> str:
    return hashlib.sha256(signed + signature).hexdigest()


class AuditChain:
    """One writer's chain: the headers for its next record, and where the chain stands."""

    def __init__(self, writer: str, key: Ed25519PrivateKey, seq: int = 0, head: str = GENESIS):
        self.writer, self._key, self.seq, self.head = writer, key, seq, head

    def seal(
        self, stream: str, key: bytes | None, value: bytes
    ) -> list[tuple[str, str | bytes | None]]:
        seq = self.seq + 1
        signed = _signed(self.writer, seq, self.head, stream, key, value)
        signature = self._key.sign(signed)
        headers: list[tuple[str, str | bytes | None]] = [
            (WRITER, self.writer.encode()),
            (SEQ, str(seq).encode()),
            (PREV, self.head.encode()),
            (SIG, signature),
        ]
        self.seq, self.head = seq, _link(signed, signature)
        return headers


def writer_partition(writer: str, partitions: int) -> int:
    return zlib.crc32(writer.encode()) % partitions


class AuditWriter:
    """Writes one stage's signed, chained audit records to ``topic``, on one partition; the
    chain continues from the stage's last record on the topic."""

    def __init__(
        self, settings: Settings, topic: str, writer: str, stream: str | None = None
    ) -> None:
        self.topic, self.stream = topic, stream or topic
        self._producer = Producer(producer_config(settings))
        partitions = self._producer.list_topics(topic, timeout=10).topics[topic].partitions
        self.partition = writer_partition(writer, len(partitions))
        seq, head = _chain_head(settings, topic, self.stream, self.partition, writer)
        self.chain = AuditChain(writer, load_stage_key(settings, writer), seq, head)

    def write(self, key: bytes | None, value: bytes) -> None:
        """Publish one audit record and wait for the broker (DeliveryFailed otherwise)."""
        acks = DeliveryTracker()
        headers = self.chain.seal(self.stream, key, value)
        self._producer.produce(
            self.topic, value, key, partition=self.partition, headers=headers, on_delivery=acks
        )
        acks.sent()
        acks.wait(self._producer, timeout=10)

    def close(self) -> None:
        self._producer.flush(10)


def _headers(msg: Message) -> dict[str, bytes]:
    # Our writers' headers are bytes; a header a client sent without a value is left out.
    found = msg.headers() or []
    pairs = found.items() if isinstance(found, dict) else found
    return {k: v for k, v in pairs if isinstance(v, bytes)}


def _chain_head(
    settings: Settings, topic: str, stream: str, partition: int, writer: str
) -> tuple[int, str]:
    """(seq, link hash) of the writer's last record on the partition, read back from the end
    in growing steps; (0, GENESIS) if it has none there."""
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": "mutualaid-audit-head",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        step = 100
        while True:
            start = max(low, high - step)
            consumer.assign([TopicPartition(topic, partition, start)])
            last = None
            while True:
                msg = consumer.poll(5)
                if msg is None or msg.error() is not None:
                    break  # end of the partition (or nothing more within the wait)
                if (msg.offset() or 0) >= high:
                    break
                if _headers(msg).get(WRITER) == writer.encode():
                    last = msg
            if last is not None:
                found = _headers(last)
                signed = _signed(
                    writer,
                    int(found[SEQ]),
                    found[PREV].decode(),
                    stream,
                    last.key(),
                    last.value() or b"",
                )
                return int(found[SEQ]), _link(signed, found[SIG])
            if start == low:
                return 0, GENESIS
            step *= 10
    finally:
        consumer.close()


@dataclass
class Report:
    records: int = 0
    problems: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # at a writer's start: retention, or removal
    writers: dict[str, int] = field(default_factory=dict)  # writer -> last seq seen

    @property
    def intact(self) -> bool:
        return not self.problems


def verify(settings: Settings, topic: str, stream: str | None = None) -> Report:
    """Read ``topic`` whole and check every record's signature (as written for ``stream``,
    by default the topic itself) and every writer's chain."""
    keys = public_stage_keys(settings)
    records: list[Message] = []
    follower = TopicFollower(settings, [topic], records.append)
    try:
        while not follower.caught_up.is_set():
            follower.poll()
    finally:
        follower.close()
    return check(records, keys, stream or topic)


def check(records: list[Message], keys: dict[str, Ed25519PublicKey], stream: str) -> Report:
    report = Report(records=len(records))
    chains: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
    for msg in sorted(records, key=lambda m: (m.partition(), m.offset())):
        where = f"partition {msg.partition()} offset {msg.offset()}"
        found = _headers(msg)
        if not {WRITER, SEQ, PREV, SIG} <= set(found):
            report.problems.append(f"{where}: forged: not signed by any stage")
            continue
        writer = found[WRITER].decode(errors="replace")
        public = keys.get(writer)
        if public is None:
            report.problems.append(f"{where}: forged: signed as {writer!r}, whose key is unknown")
            continue
        try:
            seq, prev = int(found[SEQ]), found[PREV].decode()
        except (ValueError, UnicodeDecodeError):
            report.problems.append(f"{where}: forged: unreadable sequence headers")
            continue
        signed = _signed(writer, seq, prev, stream, msg.key(), msg.value() or b"")
        try:
            public.verify(found[SIG], signed)
        except InvalidSignature:
            report.problems.append(
                f"{where}: altered or forged: {writer} seq {seq} does not match its signature"
            )
            continue
        chains[writer].append((seq, prev, _link(signed, found[SIG]), where))
    for writer, chain in sorted(chains.items()):
        first_seq, first_prev, _, first_where = chain[0]
        if first_seq != 1:
            report.gaps.append(
                f"{writer}: the topic starts at seq {first_seq} ({first_where}); seq 1 to "
                f"{first_seq - 1} are gone: deleted by retention, or removed"
            )
        elif first_prev != GENESIS:
            report.problems.append(f"{first_where}: {writer} seq 1 does not start a chain")
        present = {seq for seq, *_ in chain}
        absent = sorted(set(range(first_seq, max(present) + 1)) - present)
        for start, end in _runs(absent):
            named = f"seq {start}" if start == end else f"seq {start}-{end}"
            report.problems.append(f"missing: {writer} {named} is not on the topic")
        highest: tuple[int, str] | None = None
        for seq, prev, link, where in chain:
            if highest is not None and seq <= highest[0]:
                report.problems.append(
                    f"{where}: reordered: {writer} seq {seq} comes after seq {highest[0]}"
                )
                continue
            if highest is not None and seq == highest[0] + 1 and prev != highest[1]:
                report.problems.append(
                    f"{where}: replaced: {writer} seq {seq} does not follow seq {highest[0]}"
                )
            highest = (seq, link)
        report.writers[writer] = max(seq for seq, *_ in chain)
    return report


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted numbers: [2, 3, 7] -> [(2, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs
