"""A tamper-evident audit: each record signed by the stage that wrote it, and chained.

The signature and the chain travel in Kafka record headers, so the audit value (the Avro record
every reader decodes) is unchanged:

- ``mutualaid-audit-writer``: ``<stage>@<instance>``: the stage's identity (its key is
  ``<public_keys_dir>/stages/<stage>.pub``, and the retired ones ``<stage>.<when>.pub``) and the
  worker instance, so that several workers of one stage each keep a chain of their own
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
order, and at start it recovers its chain head by reading its last record back from the topic.
That is also what keeps a crash verifiable: a record signed but never delivered (the process
died first) is not on the topic, so the restarted writer links on from the last record that
is, and no hole appears; a record whose delivery was only never confirmed is on the topic and
is linked on from. The chain state lives nowhere but on the topic.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mutualaid.claims import claim, claimant
from mutualaid.errors import MutualaidError, UsageError
from mutualaid.kafka import (
    FETCH_WAIT_MAX_MS,
    DeliveryTracker,
    TopicFollower,
    next_batch,
    produce,
    producer_config,
    watermarks,
)
from mutualaid.kafkaclients import client_config
from mutualaid.private import open_private, private_dir, private_file
from mutualaid.settings import Settings

WRITER, SEQ, PREV, SIG = (f"mutualaid-audit-{n}" for n in ("writer", "seq", "prev", "sig"))
# On a writer's first record after a restart that found its last records unsigned (it died
# mid-batch): its signatures do not vouch for those, which it cannot tell from records someone
# else appended under its name.
RESTART = "mutualaid-audit-restart"
GENESIS = "0" * 64
_DOMAIN = b"mutualaid-audit-v1"
STAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")

Headers = list[tuple[str, bytes]]


class AuditKeyError(UsageError):
    """A stage key that is missing or not an Ed25519 key."""


class AuditTopicMissing(MutualaidError):
    """An audit topic a stage was to write that the broker does not have."""


class InstanceInUse(UsageError):
    """``audit_instance`` names a worker that another process on this host is running."""

    prefix = "cannot start: "


def stage_key_paths(settings: Settings, stage: str) -> tuple[Path, Path]:
    """(private, public) key files of a stage."""
    if not STAGE_NAME.match(stage):
        raise AuditKeyError(
            f"stage name {stage!r}: use lower-case letters, digits and '-' (e.g. router, "
            "the router_id, or projector-ca0990100)"
        )
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
    with os.fdopen(open_private(private_path, os.O_WRONLY | os.O_EXCL), "wb") as out:
        out.write(_private_pem(key))
    _write_public(public_path, key)
    return public_path


def rotate_stage_key(settings: Settings, stage: str) -> tuple[Path, Path]:
    """Replace ``stage``'s key with a new one. The old public key stays, renamed
    ``<stage>.<when>.pub``, so the records it signed still verify; the old private key is
    gone (nothing needs it to sign again). A running stage signs with the key it loaded until
    it restarts. Returns (new public key, retired public key)."""
    private_path, public_path = stage_key_paths(settings, stage)
    if not private_path.exists() or not public_path.exists():
        raise AuditKeyError(
            f"no audit key for {stage} to rotate at {private_path}; "
            f"run mutualaid keys stage --stage {stage}"
        )
    when = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    retired = public_path.with_name(f"{stage}.{when}.pub")
    key = Ed25519PrivateKey.generate()
    fresh = private_path.with_name(private_path.name + ".new")
    fresh.unlink(missing_ok=True)
    with os.fdopen(open_private(fresh, os.O_WRONLY | os.O_EXCL), "wb") as out:
        out.write(_private_pem(key))
    os.replace(public_path, retired)
    _write_public(public_path, key)
    os.replace(fresh, private_path)
    return public_path, retired


def audit_stages(settings: Settings, oris: list[str]) -> list[str]:
    """The stages that sign audit records in a region of ``oris``: the router, the matcher and
    each agency's projector (its search audit)."""
    return [settings.router_id, settings.matcher_id, *(search_audit_stage(o) for o in oris)]


def ensure_stage_keys(settings: Settings, stages: list[str]) -> list[Path]:
    """Make the keys of ``stages`` that are missing (for ``up`` and its demo); the public keys
    made."""
    return [
        generate_stage_key(settings, stage)
        for stage in stages
        if not stage_key_paths(settings, stage)[0].exists()
    ]


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_public(path: Path, key: Ed25519PrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_stage_key(settings: Settings, stage: str) -> Ed25519PrivateKey:
    path = stage_key_paths(settings, stage)[0]
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise AuditKeyError(
            f"no audit key for {stage} at {path}; run mutualaid keys stage --stage {stage} "
            "(or set audit_signing: false to write the audit unsigned)"
        ) from None
    except ValueError as exc:
        raise AuditKeyError(f"{path}: not a readable private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path} is not an Ed25519 private key")
    return key


def public_stage_keys(settings: Settings) -> dict[str, list[Ed25519PublicKey]]:
    """Every stage's public keys, the current one and those rotated out, by stage name."""
    keys: dict[str, list[Ed25519PublicKey]] = defaultdict(list)
    for path in sorted((settings.public_keys_dir / "stages").glob("*.pub")):
        key = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise AuditKeyError(f"{path} is not an Ed25519 public key")
        keys[path.name.split(".", 1)[0]].append(key)
    return dict(keys)


def search_audit_stage(ori: str) -> str:
    """The stage that signs an agency's search audit: its projector, which publishes it."""
    return f"projector-{ori.lower()}"


def stage_of(writer: str) -> str:
    """The stage whose key signs for ``writer`` (``router@a1b2c3`` -> ``router``)."""
    return writer.split("@", 1)[0]


INSTANCE_FILE = "audit-instance"
CLAIMS_DIR = "audit-claims"
CLAIMS_LEDGER = ".every-chain-claimed"
READ_BACK_FIRST = 100  # records: a restarted worker's own last record is among the newest
READ_BACK_BATCH = 1000
MAX_SLOTS = 1000


def worker_instance(settings: Settings) -> str:
    """The data directory's instance: ``audit_instance`` if set, else an id made on first
    start and kept in the data directory, so a restarted worker continues its own chain."""
    if settings.audit_instance:
        return settings.audit_instance
    path = settings.data_dir / INSTANCE_FILE
    if not path.exists():
        private_dir(path.parent)
        # Made whole beside it and linked in, which fails if another stage starting at the
        # same moment got there first: then both take its id, not one each.
        made = path.with_name(f".{INSTANCE_FILE}.{os.getpid()}")
        private_file(made).write_text(secrets.token_hex(4) + "\n")
        try:
            os.link(made, path)
        except FileExistsError:
            pass
        finally:
            made.unlink()
    return path.read_text().strip()


def claim_instance(settings: Settings, stage: str) -> tuple[str, bool]:
    """(instance, fresh) for this process's worker of ``stage``: an instance no other running
    process of the stage holds in this data directory, claimed until this process exits, and
    whether its chain is new (nothing to read back).

    Workers started with one settings file share its data directory (an operator adding a
    router worker, a second projector of an agency during a rebalance); had they one
    instance, they would interleave one chain and verify would call it replayed. So each claims
    (``mutualaid.claims``) the first free one of the kept id, ``<id>-2``, ``<id>-3``, ...: a
    restarted worker takes up a chain that a stopped one left. ``audit_instance`` is one fixed
    instance: if a running process holds it, the stage does not start."""
    if settings.audit_instance:
        path = _claim_file(settings, stage, settings.audit_instance)
        if not claim(path):
            raise InstanceInUse(
                f"audit_instance {settings.audit_instance}: another {stage} worker using "
                f"{settings.data_dir} runs as it (pid {claimant(path)}); give each worker its "
                "own audit_instance, or leave it unset and each worker takes one of its own"
            )
        return settings.audit_instance, False
    # Whether every chain written from this directory has its claim file, so a missing one
    # means a chain never written: true of a directory made since claims were kept (the
    # ledger is made before the instance file, so a stage that sees the one sees the other).
    # In an older one, a stage may have written before claims were, so its first slot's
    # chain is read back (slow on a large topic, never wrong), as it was then.
    ledger = settings.data_dir / CLAIMS_DIR / CLAIMS_LEDGER
    if not (settings.data_dir / INSTANCE_FILE).exists():
        private_dir(ledger.parent)
        private_file(ledger)
    every_chain_claimed = ledger.exists()
    base = worker_instance(settings)
    for slot in range(1, MAX_SLOTS + 1):
        instance = base if slot == 1 else f"{base}-{slot}"
        path = _claim_file(settings, stage, instance)
        used_before = path.exists()  # the claim file stays: it marks a chain to continue
        if claim(path):
            return instance, not used_before and (slot > 1 or every_chain_claimed)
    raise InstanceInUse(f"{MAX_SLOTS} {stage} workers already run using {settings.data_dir}")


def _claim_file(settings: Settings, stage: str, instance: str) -> Path:
    return settings.data_dir / CLAIMS_DIR / f"{stage}@{instance}"


def _signed(
    writer: str,
    seq: int,
    prev: str,
    stream: str,
    key: bytes | None,
    value: bytes,
    restart: bool = False,
) -> bytes:
    parts = [
        _DOMAIN,
        writer.encode(),
        str(seq).encode(),
        prev.encode(),
        stream.encode(),
        hashlib.sha256(key or b"").hexdigest().encode(),
        hashlib.sha256(value).hexdigest().encode(),
        *([b"restart"] if restart else []),
    ]
    return b"\0".join(parts)


def _link(signed: bytes) -> str:
    return hashlib.sha256(signed).hexdigest()


class AuditChain:
    """One writer's chain: the headers for its next record, and where the chain stands."""

    def __init__(
        self,
        writer: str,
        key: Ed25519PrivateKey,
        seq: int = 0,
        head: str = GENESIS,
        unsigned_tail: bool = False,
    ):
        self.writer, self._key, self.seq, self.head = writer, key, seq, head
        self._restart = unsigned_tail  # the next record says so

    def seal(self, stream: str, key: bytes | None, value: bytes, sign: bool = True) -> Headers:
        """The headers of the next record; signed if ``sign``. A signature covers the record
        and, through the previous-record hashes, every record before it in the chain, so a
        stage signs only the last record of each batch it writes (one Ed25519 signature per
        batch instead of per record)."""
        seq = self.seq + 1
        signed = _signed(self.writer, seq, self.head, stream, key, value, self._restart)
        headers = [
            (WRITER, self.writer.encode()),
            (SEQ, str(seq).encode()),
            (PREV, self.head.encode()),
        ]
        if self._restart:
            headers.append((RESTART, b"1"))
            self._restart = False
        if sign:
            headers.append((SIG, self._key.sign(signed)))
        self.seq, self.head = seq, _link(signed)
        return headers


def writer_partition(writer: str, partitions: int) -> int:
    return zlib.crc32(writer.encode()) % partitions


class AuditSigner:
    """A stage worker's signing of the audit records it writes: one chain per audit topic,
    each on the partition its writer name picks, continued from the writer's last record on
    that topic (read back when the topic is first written, and again after ``resync``).

    The key is loaded at once, so a stage without one refuses to start; the topics are read
    only at the first record, since a stage may create them after it is built.
    """

    def __init__(self, settings: Settings, stage: str, instance: str | None = None) -> None:
        self._settings = settings
        self._key = load_stage_key(settings, stage)
        # A worker whose instance is new has written nothing: its chains start afresh, without
        # reading back a year of other writers' records to find none of its own.
        self._fresh = False
        if instance is None:
            instance, self._fresh = claim_instance(settings, stage)
        self.writer = f"{stage}@{instance}"
        self._chains: dict[str, tuple[int, AuditChain]] = {}

    def seal(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        stream: str | None = None,
        sign: bool = True,
    ) -> tuple[int, Headers]:
        """(partition, headers) for the next record to ``topic``: produce it there, in the
        order sealed (an idempotent producer keeps that order). Sign at least the last record
        of every batch (see ``AuditChain.seal``)."""
        placed = self._chains.get(topic)
        if placed is None:
            placed = self._chains[topic] = self._open(topic, stream or topic)
        partition, chain = placed
        return partition, chain.seal(stream or topic, key, value, sign)

    def resync(self) -> None:
        """Forget where the chains stand: after records failed to arrive, the next record
        links on from the last one that did."""
        self._chains.clear()
        self._fresh = False

    def _open(self, topic: str, stream: str) -> tuple[int, AuditChain]:
        # With the kafka: setting (TLS, SASL) like every other client of the stage.
        probe = Consumer(client_config(self._settings, **{"group.id": "-"}))
        try:
            partitions = probe.list_topics(topic, timeout=10).topics[topic].partitions
        finally:
            probe.close()
        if not partitions:
            raise AuditTopicMissing(f"{topic}: the broker has no such topic; the stage makes it")
        partition = writer_partition(self.writer, len(partitions))
        if self._fresh:
            return partition, AuditChain(self.writer, self._key)
        seq, head, unsigned = _chain_head(self._settings, topic, stream, partition, self.writer)
        return partition, AuditChain(self.writer, self._key, seq, head, unsigned)


class AuditWriter:
    """Writes one stage's signed, chained audit records to ``topic``, one at a time, waiting
    for each; the chain continues from the writer's last record on the topic."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        stage: str,
        stream: str | None = None,
        instance: str | None = None,
    ) -> None:
        self.topic, self.stream = topic, stream or topic
        self._producer = Producer(producer_config(settings))
        self.signer = AuditSigner(settings, stage, instance)

    def write(self, key: bytes | None, value: bytes) -> None:
        """Publish one audit record and wait for the broker (DeliveryFailed otherwise)."""
        acks = DeliveryTracker()
        partition, headers = self.signer.seal(self.topic, key, value, self.stream)
        produce(self._producer, self.topic, key, value, acks, partition, headers)
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
) -> tuple[int, str, bool]:
    """(seq, link hash, whether it is unsigned) of the writer's last record on the partition;
    (0, GENESIS, False) if it has none there.

    Read back from the end in windows that double and never overlap, so a writer whose last
    record lies d records from the end reads about 2d records at most, and nothing is read
    twice (the windows grew tenfold and each read on to the end: up to 11d, 311,000 records
    and 6.1 s for d = 200,000 on the embedded broker). A writer stopped while others kept
    writing to its partition still reads what they wrote since (README: Audit, Restarts).
    """
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": "mutualaid-audit-head",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                # Each window is a new fetch: not held the embedded broker's whole 500 ms.
                "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
            },
        )
    )
    try:
        low, high = watermarks(consumer, TopicPartition(topic, partition), timeout=60)
        end: int | None = None  # the newest window reads on to the end of the partition
        start, size = high, READ_BACK_FIRST
        while start > low or end is None:
            start = max(low, start - size)
            last = _last_by(consumer, TopicPartition(topic, partition, start), end, writer)
            if last is not None:
                found = _headers(last)
                signed = _signed(
                    writer,
                    int(found[SEQ]),
                    found[PREV].decode(),
                    stream,
                    last.key(),
                    last.value() or b"",
                    RESTART in found,
                )
                return int(found[SEQ]), _link(signed), SIG not in found
            end, size = start, size * 2
        return 0, GENESIS, False
    finally:
        consumer.close()


def _last_by(
    consumer: Consumer, first: TopicPartition, end: int | None, writer: str
) -> Message | None:
    """The last record of ``writer`` from offset ``first`` up to ``end`` (not included), or
    to the end of the partition if ``end`` is None: to its end-of-partition signal, not the
    high watermark, which the embedded broker can report short after batched produces."""
    consumer.assign([first])
    wanted, last, inside = writer.encode(), None, False
    while True:
        batch = next_batch(consumer, READ_BACK_BATCH, 5)
        if not batch:
            return last  # nothing more within the wait
        for msg in batch:
            if msg.error() is not None:
                return last  # the end of the partition
            offset = msg.offset()
            if end is not None and (offset is None or offset >= end):
                if inside:
                    return last  # the end of the window
                # Read before any of the window's own (a fetch of the newer window still
                # under way, or a window compacted empty): not this window's, and no reason
                # to stop before the window has been read.
                continue
            inside = True
            if _headers(msg).get(WRITER) == wanted:
                last = msg


@dataclass
class Report:
    records: int = 0
    problems: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # at a writer's start: retention, or removal
    writers: dict[str, int] = field(default_factory=dict)  # writer -> last seq seen
    skipped: int = 0  # records of writers not asked for

    @property
    def intact(self) -> bool:
        return not self.problems


def verify(
    settings: Settings, topic: str, stream: str | None = None, stages: list[str] | None = None
) -> Report:
    """Read ``topic`` whole and check every record's signature (as written for ``stream``,
    by default the topic itself) and every writer's chain; with ``stages``, only the records
    signed as those stages (unsigned ones included only without it)."""
    keys = public_stage_keys(settings)
    records: list[Message] = []
    follower = TopicFollower(settings, [topic], records.append)
    try:
        while not follower.caught_up.is_set():
            follower.poll()
    finally:
        follower.close()
    return check(records, keys, stream or topic, stages)


@dataclass
class _Link:
    seq: int
    prev: str
    link: str
    partition: int
    offset: int
    signed: bool
    restart: bool = False


def check(
    records: list[Message],
    keys: dict[str, list[Ed25519PublicKey]],
    stream: str,
    stages: list[str] | None = None,
) -> Report:
    report = Report(records=len(records))
    chains: dict[str, list[_Link]] = defaultdict(list)
    for msg in sorted(records, key=lambda m: (m.partition(), m.offset())):
        where = f"{msg.topic()} partition {msg.partition()} offset {msg.offset()}"
        found = _headers(msg)
        if not {WRITER, SEQ, PREV} <= set(found):
            if stages:
                report.skipped += 1
            else:
                report.problems.append(f"{where}: forged: not signed by any stage")
            continue
        writer = found[WRITER].decode(errors="replace")
        if stages and stage_of(writer) not in stages:
            report.skipped += 1
            continue
        public = keys.get(stage_of(writer))
        if not public:
            report.problems.append(f"{where}: forged: signed as {writer!r}, whose key is unknown")
            continue
        try:
            seq, prev = int(found[SEQ]), found[PREV].decode()
        except (ValueError, UnicodeDecodeError):
            report.problems.append(f"{where}: forged: unreadable sequence headers")
            continue
        restart = RESTART in found
        signed = _signed(writer, seq, prev, stream, msg.key(), msg.value() or b"", restart)
        signature = found.get(SIG)
        if signature is not None and not any(_verifies(k, signature, signed) for k in public):
            report.problems.append(
                f"{where}: altered or forged: {writer} seq {seq} does not match its signature"
            )
            continue
        vouched = signature is not None
        partition, offset = msg.partition() or 0, msg.offset() or 0  # set on a consumed record
        link = _Link(seq, prev, _link(signed), partition, offset, vouched, restart)
        chains[writer].append(link)
    for writer, chain in sorted(chains.items()):
        _check_chain(report, writer, chain, (records[0].topic() or stream) if records else stream)
    return report


def _verifies(key: Ed25519PublicKey, signature: bytes, signed: bytes) -> bool:
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        return False
    return True


def _check_chain(report: Report, writer: str, chain: list[_Link], topic: str) -> None:
    """One writer's records in topic order: a hole, a step back, a broken link, and records
    no signature vouches for are named.

    A signed record vouches for itself and, through the previous-record hashes, for the
    unsigned records before it back to the last signed one, as long as every link holds.
    """

    def at(link: _Link) -> str:
        return f"{topic} partition {link.partition} offset {link.offset}"

    def unvouched(links: list[_Link], why: str) -> None:
        for start, end in _runs([link.seq for link in links]):
            named = f"seq {start}" if start == end else f"seq {start}-{end}"
            report.problems.append(
                f"{at(links[0])}: unvouched: {writer} {named} is covered by no signature: {why}"
            )

    first = chain[0]
    if first.seq != 1:
        report.gaps.append(
            f"{writer}: the topic starts at seq {first.seq} ({at(first)}); seq 1 to "
            f"{first.seq - 1} are gone: deleted by retention, or removed"
        )
    elif first.prev != GENESIS:
        report.problems.append(f"{at(first)}: {writer} seq 1 does not start a chain")
    # A record that turns up out of order was named as reordered; the place it left is not
    # also called missing.
    present = {link.seq for link in chain}
    seen: dict[int, _Link] = {}
    uncovered: list[_Link] = []  # unsigned, linked on to the newest record so far
    highest: _Link | None = None
    for link in chain:
        if highest is not None and link.seq <= highest.seq:
            earlier = seen.get(link.seq)
            if earlier is not None and earlier.link != link.link:
                report.problems.append(
                    f"{at(link)}: altered or forged: {writer} seq {link.seq} differs from the "
                    f"seq {link.seq} at {at(earlier)}"
                )
            elif earlier is not None:
                report.problems.append(
                    f"{at(link)}: replayed: a copy of {writer} seq {link.seq} ({at(earlier)})"
                )
            else:
                report.problems.append(
                    f"{at(link)}: reordered: {writer} seq {link.seq} comes after seq {highest.seq}"
                )
            continue
        intact = highest is None or (link.seq == highest.seq + 1 and link.prev == highest.link)
        if highest is not None and link.seq > highest.seq + 1:
            absent = [n for n in range(highest.seq + 1, link.seq) if n not in present]
            for start, end in _runs(absent):
                named = f"seq {start}" if start == end else f"seq {start}-{end}"
                report.problems.append(
                    f"missing: {writer} {named} is not on the topic (between {at(highest)} "
                    f"and offset {link.offset})"
                )
        elif highest is not None and not intact:
            if highest.signed:
                report.problems.append(
                    f"{at(link)}: replaced: {writer} seq {link.seq} does not follow seq "
                    f"{highest.seq}"
                )
            else:
                report.problems.append(
                    f"{at(highest)}: altered or forged: {writer} seq {highest.seq} does not "
                    f"match the hash seq {link.seq} names for it"
                )
                uncovered = [u for u in uncovered if u is not highest]
        if not intact:  # the path from a later signature back to them is broken
            unvouched(uncovered, "the chain after them is broken")
            uncovered = []
        if link.restart:
            unvouched(
                uncovered,
                f"its writer restarted at {at(link)} without vouching for them (it stopped "
                "mid-batch, or someone else added them)",
            )
            uncovered = []
        if link.signed:
            uncovered = []
        else:
            uncovered.append(link)
        seen[link.seq] = highest = link
    unvouched(
        uncovered,
        "forged, or the writer stopped before signing (or is writing them now: check again)",
    )
    report.writers[writer] = max(link.seq for link in chain)


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted numbers: [2, 3, 7] -> [(2, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs
