"""The signed, chained audit on the real broker: a writer's records verify, its chain continues
after a restart, and each kind of tampering (forged, altered, missing, reordered) is named, as
is a gap at the start that retention would leave."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Message, Producer

from mutualaid.auditlog import SEQ, AuditWriter, generate_stage_key, verify, worker_instance
from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.settings import Settings
from mutualaid.topics import AUDIT_DISSEMINATION, TopicSpec
from support.brokers import read_topic
from support.processes import mutualaid_cli
from support.regions import Region

pytestmark = pytest.mark.broker


def new_topic(region: Region, partitions: int = 1) -> str:
    name = f"audit.test-{uuid.uuid4().hex[:8]}"
    # The project's own creation: on Apache Kafka it also waits until the partitions have
    # leaders, without which a writer sees a topic of no partitions.
    ensure_topics(
        wait_for_broker(region.settings.bootstrap_servers), [TopicSpec(name, partitions)], 1
    )
    return name


def written(region: Region, count: int, writer: str = "router") -> tuple[str, list[Message]]:
    """A scratch topic holding ``count`` genuine records of ``writer`` (written as for
    audit.dissemination), and those records."""
    topic = new_topic(region, partitions=2)
    audit = AuditWriter(region.settings, topic, writer, AUDIT_DISSEMINATION, instance="w1")
    for n in range(1, count + 1):
        audit.write(f"CA0990100/R-{n}".encode(), f"decision {n}".encode())
    audit.close()
    records = read_topic(region.settings.bootstrap_servers, topic, lambda r: len(r) >= count)
    assert len(records) == count
    return topic, sorted(records, key=lambda m: int(dict(m.headers())[SEQ]))


def copied(region: Region, records: list[Message | tuple]) -> str:
    """A new topic holding ``records`` in this order, headers and all, as someone with write
    access to the cluster could rebuild one; a tuple is (key, value, headers) made up."""
    topic = new_topic(region)
    producer = Producer({"bootstrap.servers": region.settings.bootstrap_servers})
    for record in records:
        key, value, headers = (
            record
            if isinstance(record, tuple)
            else (record.key(), record.value(), record.headers())
        )
        producer.produce(topic, value, key, headers=headers, partition=0)
    assert producer.flush(10) == 0
    return topic


@pytest.fixture
def keys(region: Region) -> None:
    generate_stage_key(region.settings, "router")


def test_genuine_records_verify_and_the_chain_continues_after_a_restart(
    region: Region, keys: None
) -> None:
    topic, _ = written(region, 5)
    report = verify(region.settings, topic, AUDIT_DISSEMINATION)
    assert (report.records, report.problems, report.gaps) == (5, [], [])
    assert report.writers == {"router@w1": 5}
    # A restarted writer reads its last record back and links on from it.
    again = AuditWriter(region.settings, topic, "router", AUDIT_DISSEMINATION, instance="w1")
    again.write(b"CA0990100/R-6", b"decision 6")
    again.close()
    report = verify(region.settings, topic, AUDIT_DISSEMINATION)
    assert (report.records, report.problems, report.writers) == (6, [], {"router@w1": 6})


def test_a_writer_whose_last_record_lies_far_back_continues_its_chain(
    region: Region, keys: None
) -> None:
    # Another worker wrote 350 records on the partition since: the restarted writer's last
    # record lies beyond the first two windows read back (100 records, then 200 more), and
    # its first record further still; it links on from its last.
    topic = new_topic(region)
    first = AuditWriter(region.settings, topic, "router", AUDIT_DISSEMINATION, instance="w1")
    for n in (1, 2):
        first.write(f"CA0990100/R-{n}".encode(), f"decision {n}".encode())
    first.close()
    other = AuditWriter(region.settings, topic, "router", AUDIT_DISSEMINATION, instance="w2")
    for n in range(350):
        other.write(f"CA0990200/R-{n}".encode(), b"decision")
    other.close()
    again = AuditWriter(region.settings, topic, "router", AUDIT_DISSEMINATION, instance="w1")
    again.write(b"CA0990100/R-3", b"decision 3")
    again.close()
    report = verify(region.settings, topic, AUDIT_DISSEMINATION)
    assert (report.problems, report.writers) == ([], {"router@w1": 3, "router@w2": 350})


def as_writer(record: Message, writer: bytes) -> list[tuple[str, bytes]]:
    return [(n, writer if n.endswith("-writer") else v) for n, v in record.headers()]


def tampered(records: list[Message], case: str) -> list[Message | tuple]:
    r = records
    cases: dict[str, Callable[[], list[Message | tuple]]] = {
        "forged": lambda: [*r[:2], (b"CA0990100/X", b"DENIED, by a bare producer", None), *r[2:]],
        "altered": lambda: [*r[:1], (r[1].key(), b"SHARED instead", r[1].headers()), *r[2:]],
        "unknown writer": lambda: [
            *r,
            (
                b"k",
                b"v",
                [(n, b"intruder" if n.endswith("writer") else v) for n, v in r[0].headers()],
            ),
        ],
        "missing": lambda: [*r[:2], *r[3:]],
        "reordered": lambda: [r[0], r[1], r[3], r[2], r[4]],
    }
    return cases[case]()


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("forged", "partition 0 offset 2: forged: not signed by any stage"),
        ("altered", "partition 0 offset 1: altered or forged: router@w1 seq 2 does not match"),
        ("unknown writer", "offset 5: forged: signed as 'intruder', whose key is unknown"),
        ("missing", "missing: router@w1 seq 3 is not on the topic"),
        ("reordered", "partition 0 offset 3: reordered: router@w1 seq 3 comes after seq 4"),
    ],
)
def test_each_kind_of_tampering_is_named(region: Region, keys: None, case: str, named: str) -> None:
    _, records = written(region, 5)
    topic = copied(region, tampered(records, case))
    report = verify(region.settings, topic, AUDIT_DISSEMINATION)
    assert not report.intact
    assert any(p.startswith(named) or named in p for p in report.problems), report.problems
    result = mutualaid_cli(region, "audit", "verify", "--topic", topic, "--as", AUDIT_DISSEMINATION)
    assert result.returncode == 4, result.stderr
    assert named in result.stdout and "NOT INTACT" in result.stdout


def test_a_gap_at_the_start_is_reported_as_retention_would_leave_it(
    region: Region, keys: None
) -> None:
    _, records = written(region, 5)
    topic = copied(region, records[2:])
    report = verify(region.settings, topic, AUDIT_DISSEMINATION)
    assert report.intact  # nothing inside the chain is wrong...
    assert report.gaps == [  # ...but its start is gone, and verify says so
        f"router@w1: the topic starts at seq 3 ({topic} partition 0 offset 0); seq 1 to 2 are "
        "gone: deleted by retention, or removed"
    ]
    result = mutualaid_cli(region, "audit", "verify", "--topic", topic, "--as", AUDIT_DISSEMINATION)
    assert result.returncode == 0, result.stderr
    assert "gap: router@w1: the topic starts at seq 3" in result.stdout


def test_keys_stage_writes_a_private_key_and_the_public_key_verify_reads(
    region: Region,
) -> None:
    made = mutualaid_cli(region, "keys", "stage", "--stage", "projector-ca0990100")
    assert made.returncode == 0, made.stderr
    public = region.settings.public_keys_dir / "stages" / "projector-ca0990100.pub"
    assert f"verifiers need {public}" in made.stdout
    private = region.settings.private_keys_dir / "stages" / "projector-ca0990100.pem"
    assert private.stat().st_mode & 0o777 == 0o600
    again = mutualaid_cli(region, "keys", "stage", "--stage", "projector-ca0990100")
    assert again.returncode == 1 and "not overwritten" in again.stderr


def test_a_rotated_key_leaves_the_records_it_signed_verifiable(region: Region, keys: None) -> None:
    topic, _ = written(region, 3)
    private = region.settings.private_keys_dir / "stages" / "router.pem"
    before = private.read_bytes()
    rotated = mutualaid_cli(region, "keys", "stage", "--stage", "router", "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert "rotated; verifiers need" in rotated.stdout and "and keep" in rotated.stdout
    assert private.read_bytes() != before and private.stat().st_mode & 0o777 == 0o600
    # The restarted writer signs with the new key; its chain runs on across the change.
    after = AuditWriter(region.settings, topic, "router", AUDIT_DISSEMINATION, instance="w1")
    after.write(b"CA0990100/R-4", b"decision 4")
    after.close()
    report = verify(region.settings, topic, AUDIT_DISSEMINATION)
    assert (report.records, report.problems, report.writers) == (4, [], {"router@w1": 4})
    # Without the retired public key, what the old key signed no longer verifies.
    for retired in (region.settings.public_keys_dir / "stages").glob("router.*.pub"):
        retired.unlink()
    report = verify(region.settings, topic, AUDIT_DISSEMINATION)
    assert len(report.problems) == 3 and "does not match its signature" in report.problems[0]


def test_each_worker_keeps_its_own_chain(region: Region, keys: None, tmp_path: Path) -> None:
    """Two workers of one stage write the same topic at once, as two routers in one group do:
    each is its own writer (the instance kept in its data directory), so neither chain is
    broken by the other's records."""
    own = [
        Settings(**{**region.settings.model_dump(), "data_dir": tmp_path / f"worker-{n}"})
        for n in (1, 2)
    ]
    instances = [worker_instance(s) for s in own]
    assert instances == [worker_instance(s) for s in own]  # kept: a restart continues
    assert instances[0] != instances[1]
    topic = new_topic(region, partitions=2)
    workers = [AuditWriter(s, topic, "router", AUDIT_DISSEMINATION) for s in own]
    for n in range(3):
        for worker in workers:
            worker.write(f"CA0990100/R-{n}".encode(), f"decision {n}".encode())
    for worker in workers:
        worker.close()
    report = verify(region.settings, topic, AUDIT_DISSEMINATION)
    assert (report.records, report.problems) == (6, [])
    assert report.writers == {f"router@{i}": 3 for i in instances}


WRITE_AS_ROUTER = """
import sys, time
from pathlib import Path
from mutualaid.auditlog import AuditWriter
from mutualaid.settings import load_settings
from mutualaid.topics import AUDIT_DISSEMINATION
writer = AuditWriter(load_settings(Path(sys.argv[1])), sys.argv[2], "router", AUDIT_DISSEMINATION)
print(writer.signer.writer, flush=True)
sys.stdin.readline()  # both started: write at once
for n in range(5):
    writer.write(f"CA0990100/R-{n}".encode(), f"decision {n}".encode())
    time.sleep(0.01)
writer.close()
"""


def test_workers_started_with_one_settings_file_keep_a_chain_each(
    region: Region, keys: None
) -> None:
    """Two router processes started with the same settings (so one data directory), as an
    operator adds a worker: each claims an instance of its own, and neither breaks the other's
    chain. A restarted worker takes an instance no running worker holds."""
    topic = new_topic(region, partitions=1)  # one partition: both chains on it
    argv = [sys.executable, "-c", WRITE_AS_ROUTER, str(region.config_file), topic]

    def run_two() -> list[str]:
        procs = [
            subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        names = [p.stdout.readline().strip() for p in procs if p.stdout]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.close()
        for proc in procs:
            assert proc.wait(60) == 0
        return names

    first = run_two()
    assert len(set(first)) == 2, first
    again = run_two()  # restarted: the same two instances, each chain continued
    assert sorted(again) == sorted(first)
    report = verify(region.settings, topic, AUDIT_DISSEMINATION)
    assert report.problems == []
    assert report.writers == {name: 10 for name in first}
