"""Read-to-alert latency at a steady read rate with a large hotlist loaded, and the matcher's
memory.

    python -m bench.alerts [--entries 1000000] [--rate 1000] [--seconds 30] [--broker tansu|kafka]

Runs the real path on the embedded broker (or one Apache Kafka node): hotlist entries
published with `hotlist load`'s publisher, a `mutualaid matcher` process, reads produced at a
fixed rate to a source topic (1% of them on the hotlist), and a consumer of the dispatch
center's alert topic. Latency is from the read's ``ingested_at`` (when a connector would have
published it) to the alert being consumed, and to the alert being on a dispatch console's
board (fed by the console's own follower, ``consumers/alerts/console.py``). The baseline,
measured in the same run, is the same reads' own Kafka hop: from
``ingested_at`` to a consumer of the source topic receiving them; the matcher's cost is the
difference. Memory is the matcher's resident set with the hotlist loaded, against the same
process started with an empty hotlist. Figures are printed and saved under bench/results/.
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench import percentile, save, start_broker
from consumers.alerts.console import AlertBoard, follow_alerts
from mutualaid.auditlog import ensure_stage_keys
from mutualaid.events import new_envelope, record_key
from mutualaid.kafka import ensure_topics, next_batch, producer_config, wait_for_broker
from mutualaid.processes import spawn, stop
from mutualaid.serde import (
    HIT_ALERT,
    SOURCE_EVENT,
    AvroDeserializer,
    AvroSerializer,
    SchemaStore,
    SerializationContext,
)
from mutualaid.settings import Settings
from mutualaid.topics import Kind, alerts_topic, source_topic, topics_for
from producers import samples
from producers.hotlist import EXTRACT_SYSTEM, HotlistPublisher, entry_event

CENTER = "CA0990100"  # Riverbend PD in deploy/agencies.yaml: owns the reads and the entries
CAMERA = (38.94, -119.98)
HIT_SHARE = 0.01
WARM_SECONDS = 5
# The empty-hotlist matcher's own group and stage key (see ``main``).
EMPTY_MATCHER = "bench-empty-matcher"


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def hotlist_plates(count: int) -> list[tuple[str, str]]:
    """Unique plates over several states' formats, like a regional NCIC extract."""
    return samples.plate_pool(["CA", "NV", "AZ", "OR", "TX", "WA"], count, random.Random(13))


def publish_hotlist(settings: Settings, plates: list[tuple[str, str]]) -> float:
    now = datetime.now(UTC)
    entries = (
        entry_event(
            CENTER,
            f"V{n:09d}",
            {"plate": plate, "plate_state": state, "reason": "stolen_vehicle"},
            EXTRACT_SYSTEM,
            None,
            now,
        )
        for n, (plate, state) in enumerate(plates)
    )
    started = time.perf_counter()
    HotlistPublisher(settings).publish(entries)
    return time.perf_counter() - started


def start_matcher(config: Path, log: Path) -> tuple[object, float]:
    """A matcher process once it has read the hotlists, and how long that took."""
    matcher = spawn([sys.executable, "-m", "cli", "--config", str(config), "matcher"], log=log)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        found = re.search(
            r"hotlists loaded: \d+ entries from \d+ agencies in ([\d.]+)s", log.read_text()
        )
        if found:
            return matcher, float(found.group(1))
        if matcher.poll() is not None:
            raise SystemExit(f"the matcher exited; see {log}")
        time.sleep(0.5)
    raise SystemExit(f"the matcher did not load the hotlists in time; see {log}")


Seen = dict[str, tuple[float, datetime]]  # record id -> (arrived, ingested_at)


def latencies_ms(seen: Seen, ids: list[str]) -> list[float]:
    """From ingestion to arrival, for each of ``ids`` that arrived."""
    return [(seen[i][0] - seen[i][1].timestamp()) * 1000 for i in ids if i in seen]


class Arrivals(threading.Thread):
    """Consumes one topic from the start and notes, per record id, when each arrived."""

    def __init__(self, settings: Settings, topic: str, schema: str, record_id: str) -> None:
        super().__init__(daemon=True)
        self.seen: Seen = {}
        self._done = threading.Event()
        self._decode = AvroDeserializer(SchemaStore(), schema)
        self._topic, self._id = topic, record_id
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": "bench-arrivals",
                "fetch.wait.max.ms": 10,
            }
        )
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def run(self) -> None:
        while not self._done.is_set():
            # A record is stamped as soon as it arrives: consume(500, 0.05) would hold it for
            # the rest of the 50 ms, up to 50 ms added to every latency measured.
            for msg in next_batch(self._consumer, 500, 0.05):
                if msg.error() is None:
                    arrived = time.time()
                    record = self._decode(msg.value(), SerializationContext(self._topic))
                    if self._id == "read":
                        key = record["envelope"]["record_id"]
                        ingested = record["envelope"]["ingested_at"]
                    else:
                        key, ingested = record["read_record_id"], record["read_ingested_at"]
                    self.seen[key] = (arrived, ingested)
        self._consumer.close()

    def close(self) -> None:
        self._done.set()
        self.join(10)


class ConsoleArrivals(AlertBoard):
    """A dispatch console's board fed by the console's own follower, noting when each alert
    is put on it (what a dispatcher's browser is then sent)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(CENTER, {})
        self.seen: Seen = {}
        self._stop = threading.Event()
        self._follower = follow_alerts(settings, CENTER, self)
        self._thread = threading.Thread(target=self._follower.run, args=(self._stop,), daemon=True)

    def add_alert(self, hit: dict) -> None:
        self.seen[hit["read_record_id"]] = (time.time(), hit["read_ingested_at"])
        super().add_alert(hit)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def send_reads(
    producer: Producer,
    hits: list[tuple[str, str]],
    count: int,
    rate: int,
    *,
    hit_share: float = HIT_SHARE,
    prefix: str = "bench",
) -> tuple[list[str], list[str]]:
    """``count`` reads at ``rate`` per second, ``hit_share`` of them hotlist plates (each hit a
    different entry); returns (all ids, hit ids). ``producer`` is one that already sent:
    a new idempotent producer holds its first records until the broker gives it a producer id,
    and every read stamped meanwhile arrives up to half a second late."""
    rng = random.Random(17)
    encode = AvroSerializer(SchemaStore(), SOURCE_EVENT[Kind.ALPR_READ])
    topic = source_topic(CENTER, Kind.ALPR_READ)
    ids, hit_ids = [], []
    hit_plates = iter(hits)
    started = time.perf_counter()
    for n in range(count):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        is_hit = rng.random() < hit_share
        plate, state = next(hit_plates) if is_hit else (samples.random_plate("CA", rng), "CA")
        record_id = f"{prefix}-{n:07d}"
        envelope = new_envelope(
            source_ori=CENTER,
            source_system="bench",
            kind=Kind.ALPR_READ,
            record_id=record_id,
            version=1,
            occurred_at=datetime.now(UTC),
        )
        body = {"plate": plate, "plate_state": state, "latitude": CAMERA[0], "longitude": CAMERA[1]}
        value = encode({"envelope": envelope, "body": body}, SerializationContext(topic))
        producer.produce(topic, value, record_key(envelope))
        producer.poll(0)
        ids.append(record_id)
        if is_hit:
            hit_ids.append(record_id)
    producer.flush(30)
    return ids, hit_ids


def main(entries: int, rate: int, seconds: int, broker_kind: str = "tansu") -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mutualaid-bench-alerts-"))
    broker = start_broker(broker_kind, tmp)
    try:
        values = {
            "bootstrap_servers": broker.bootstrap_servers,
            "data_dir": str(tmp / "var"),
            "metrics_port": 0,
            "alert_repeat_seconds": 0,
        }
        config = tmp / "mutualaid.yaml"
        config.write_text(yaml.safe_dump(values))
        settings = Settings(**values)
        # The empty-hotlist matcher, measured for memory only, is a group of its own: stopped
        # before its first join completed, it left Tansu's group unable to assign the measured
        # matcher any partition (README, The embedded broker; 3 of about 35 runs).
        empty_config = tmp / "mutualaid-empty.yaml"
        empty_config.write_text(yaml.safe_dump({**values, "matcher_id": EMPTY_MATCHER}))
        # Each matcher signs its audit records, with its own stage key.
        ensure_stage_keys(settings, [settings.matcher_id, EMPTY_MATCHER])
        registry_oris = ["CA0990100", "CA0990200", "NV0990300", "DC0990400"]
        ensure_topics(wait_for_broker(broker.bootstrap_servers), topics_for(registry_oris, 4), 1)
        print(
            f"mutualaid bench.alerts: {entries:,} hotlist entries, {rate:,} reads/s for "
            f"{seconds}s on {broker_kind}"
        )

        empty, _ = start_matcher(empty_config, tmp / "matcher-empty.log")
        time.sleep(3)
        empty_mb = rss_mb(empty.pid)
        stop(empty, timeout=10)

        plates = hotlist_plates(entries)
        # The million plates live for the whole run: out of the collector's way, so that a full
        # collection of this process, which would walk them all, cannot pause its clocks.
        gc.freeze()
        publish_s = publish_hotlist(settings, plates)
        print(f"  hotlist published in {publish_s:.1f}s ({entries / publish_s:,.0f} entries/s)")
        matcher, load_s = start_matcher(config, tmp / "matcher.log")
        try:
            loaded_mb = rss_mb(matcher.pid)
            print(
                f"  matcher loaded the hotlist in {load_s:.1f}s; resident {loaded_mb:,.0f} MB "
                f"(empty hotlist {empty_mb:,.0f} MB: "
                f"{(loaded_mb - empty_mb) * 1024 * 1024 / max(entries, 1):,.0f} bytes per entry)"
            )
            alerts = Arrivals(settings, alerts_topic(CENTER), HIT_ALERT, "alert")
            reads = Arrivals(
                settings, source_topic(CENTER, Kind.ALPR_READ), SOURCE_EVENT[Kind.ALPR_READ], "read"
            )
            console = ConsoleArrivals(settings)
            alerts.start()
            reads.start()
            console.start()
            # Warm up: until one hit has come through, the matcher is still joining its group;
            # then WARM_SECONDS at the full rate, which the broker and the matcher first meet
            # with a few hundred milliseconds of stalls (JIT, buffers, first fetches), not
            # what a dispatch center sees all day.
            hits = plates[: int(rate * seconds * HIT_SHARE * 2) + 100]
            warm_hits = plates[-int(rate * WARM_SECONDS * HIT_SHARE * 2) - 100 :]
            producer = Producer(producer_config(settings))
            send_reads(producer, warm_hits[-20:], 20, 10, hit_share=1.0, prefix="join")
            deadline = time.monotonic() + 120
            while not alerts.seen and time.monotonic() < deadline:
                time.sleep(0.2)
            if not alerts.seen:
                log = (tmp / "matcher.log").read_text()[-3000:]
                raise SystemExit(
                    f"no hit alert came through in 120 s ({len(reads.seen)} reads reached their "
                    f"topic's consumer, {len(console.seen)} alerts the console); the matcher's "
                    f"log:\n{log}"
                )
            send_reads(producer, warm_hits[:-20], rate * WARM_SECONDS, rate, prefix="warm")
            time.sleep(1)
            alerts.seen.clear()
            reads.seen.clear()
            console.seen.clear()
            ids, hit_ids = send_reads(producer, hits, rate * seconds, rate)
            deadline = time.monotonic() + 30
            while (
                min(len([i for i in hit_ids if i in seen]) for seen in (alerts.seen, console.seen))
                < len(hit_ids)
                and time.monotonic() < deadline
            ):
                time.sleep(0.2)
            alert_ms = latencies_ms(alerts.seen, hit_ids)
            read_ms = latencies_ms(reads.seen, ids)
            console_ms = latencies_ms(console.seen, hit_ids)
            alerts.close()
            reads.close()
            console.close()
        finally:
            stop(matcher, timeout=10)
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    figures = {
        "broker": broker_kind,
        "entries": entries,
        "rate_per_second": rate,
        "seconds": seconds,
        "hits_sent": len(hit_ids),
        "alerts_received": len(alert_ms),
        "read_to_alert_p50_ms": round(percentile(alert_ms, 0.50), 1),
        "read_to_alert_p99_ms": round(percentile(alert_ms, 0.99), 1),
        "alerts_on_console": len(console_ms),
        "read_to_console_p50_ms": round(percentile(console_ms, 0.50), 1),
        "read_to_console_p99_ms": round(percentile(console_ms, 0.99), 1),
        "baseline_kafka_hop_p50_ms": round(percentile(read_ms, 0.50), 1),
        "baseline_kafka_hop_p99_ms": round(percentile(read_ms, 0.99), 1),
        "matcher_rss_mb": round(loaded_mb, 1),
        "matcher_rss_empty_mb": round(empty_mb, 1),
        "hotlist_load_seconds": load_s,
    }
    f = figures
    print(
        f"  read -> alert consumed        p50 {f['read_to_alert_p50_ms']:>7.1f} ms  "
        f"p99 {f['read_to_alert_p99_ms']:>7.1f} ms  ({len(alert_ms)}/{len(hit_ids)} hits alerted)"
    )
    print(
        f"  read -> on a dispatch console p50 {f['read_to_console_p50_ms']:>7.1f} ms  "
        f"p99 {f['read_to_console_p99_ms']:>7.1f} ms  ({len(console_ms)}/{len(hit_ids)} shown)"
    )
    print(
        f"  baseline: read -> a consumer  p50 {f['baseline_kafka_hop_p50_ms']:>7.1f} ms  "
        f"p99 {f['baseline_kafka_hop_p99_ms']:>7.1f} ms"
    )
    save(figures, "alerts-")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.alerts", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--entries", type=int, default=1_000_000, help="hotlist entries (1,000,000)"
    )
    parser.add_argument("--rate", type=int, default=1000, help="reads per second (1,000)")
    parser.add_argument("--seconds", type=int, default=30, help="how long to send reads (30)")
    parser.add_argument(
        "--broker",
        choices=["tansu", "kafka"],
        default="tansu",
        help="the embedded Tansu (default) or one Apache Kafka node",
    )
    options = parser.parse_args()
    main(options.entries, options.rate, options.seconds, options.broker)
