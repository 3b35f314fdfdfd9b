"""What `mutualaid export` costs: records/s and MB/s out, and its peak memory, on a real broker.

    python -m bench.export [--records 1000000] [--counts 20000,200000] [--rms-share 0.01]
                           [--broker tansu|kafka]

The broker (the embedded Tansu, or Apache Kafka from the Maven cache) is filled with an
agency's own ALPR reads and a share of RMS reports (also written as NIBRS XML), then
`mutualaid export` runs as its own process, as an operator runs it: its time covers reading
every topic to its end and writing Avro, NDJSON, the NIBRS files and the manifest. Peak memory
is the export process's own high-water mark (VmHWM, read while it runs). With
``--counts``, each count is exported in turn, so whether memory stays flat in the record count
can be read off the figures; ``--records`` alone measures one count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer

from bench import save
from bench.brokers import start as start_broker
from bench.data import alpr_lines, rms_events
from mutualaid.events import record_key
from mutualaid.kafka import ensure_topics, wait_for_broker
from mutualaid.serde import SOURCE_EVENT, AvroSerializer, SchemaStore, SerializationContext
from mutualaid.settings import Settings
from mutualaid.topics import Kind, source_topic, topics_for
from producers.alpr import DEFAULT_MAPPING, AlprAdapter, load_mapping

ORI = "CA0990100"
ORIS = ["CA0990100", "CA0990200", "NV0990300", "DC0990400"]
CHUNK = 50_000  # events made and published at a time: the bench's own memory stays small


def fill(bootstrap: str, tmp: Path, reads: int, reports: int) -> None:
    """Publish ``reads`` ALPR reads and ``reports`` RMS reports of ORI to its own topics."""
    store = SchemaStore()
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"}
    )

    def publish(kind: Kind, events: list[dict]) -> None:
        topic = source_topic(ORI, kind)
        encode, ctx = AvroSerializer(store, SOURCE_EVENT[kind]), SerializationContext(topic)
        for event in events:
            while True:
                try:
                    producer.produce(topic, encode(event, ctx), record_key(event["envelope"]))
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)

    header, items = alpr_lines(tmp, ORI, reads)
    adapter = AlprAdapter(load_mapping(DEFAULT_MAPPING), header, ORI)
    for start in range(0, reads, CHUNK):
        publish(Kind.ALPR_READ, [adapter.to_event(i) for i in items[start : start + CHUNK]])
    del items
    publish(Kind.RMS_RECORD, rms_events(ORI, reports))
    assert producer.flush(120) == 0


def _high_water_kib(pid: int) -> int:
    """A running process's peak resident set (VmHWM), in KiB; 0 once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def export_once(env: dict[str, str], out: Path) -> dict[str, float]:
    """Run `mutualaid export` as a process: seconds, records, bytes written, peak RSS."""
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "export", "--agency", ORI, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # Its own high-water mark, read while it runs: the rusage wait4 gives would count the
    # bench's address space the child was forked from, before it exec'd the export.
    peak_kib = 0
    while proc.poll() is None:
        peak_kib = max(peak_kib, _high_water_kib(proc.pid))
        time.sleep(0.1)
    seconds = time.perf_counter() - began
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    manifest = json.loads((out / "manifest.json").read_text())
    files = manifest["files"]
    records = sum(f["records"] for f in files if f["format"] == "avro")
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "seconds": seconds,
        "records": records,
        "bytes_written": written,
        "nibrs_files": sum(f["records"] for f in files if f["format"] == "nibrs-xml"),
        "records_per_second": records / seconds,
        "mb_per_second": written / seconds / 1e6,
        "peak_rss_mib": peak_kib / 1024,
    }


def main(counts: list[int], rms_share: float, broker_kind: str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="mutualaid-bench-export-"))
    figures: dict = {"agency": ORI, "rms_share": rms_share, "broker": broker_kind, "runs": []}
    print(
        f"mutualaid bench.export: {', '.join(f'{c:,}' for c in counts)} records of {ORI} "
        f"on {broker_kind}"
    )
    try:
        for count in counts:
            (tmp / f"broker-{count}").mkdir()
            broker = start_broker(broker_kind, tmp / f"broker-{count}")
            try:
                settings = Settings(bootstrap_servers=broker.bootstrap_servers)
                ensure_topics(
                    wait_for_broker(broker.bootstrap_servers),
                    topics_for(ORIS, settings.partitions),
                    1,
                )
                reports = int(count * rms_share)
                began = time.perf_counter()
                fill(broker.bootstrap_servers, tmp, count - reports, reports)
                filled = time.perf_counter() - began
                env = {
                    **os.environ,
                    "MUTUALAID_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                    "MUTUALAID_DATA_DIR": str(tmp / f"var-{count}"),
                }
                run = {"count": count, "fill_seconds": filled}
                run |= export_once(env, tmp / f"export-{count}")
            finally:
                broker.stop()
            shutil.rmtree(tmp / f"export-{count}", ignore_errors=True)
            figures["runs"].append(run)
            print(
                f"  {run['records']:>9,} records in {run['seconds']:6.1f}s: "
                f"{run['records_per_second']:>8,.0f} records/s, "
                f"{run['mb_per_second']:6.1f} MB/s written ({run['bytes_written'] / 1e6:,.0f} MB, "
                f"{run['nibrs_files']:,} NIBRS files), peak RSS {run['peak_rss_mib']:,.0f} MiB"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save(figures, "export-")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records (1,000,000)")
    parser.add_argument("--counts", help="several record counts, comma-separated, one run each")
    parser.add_argument("--rms-share", type=float, default=0.01, help="share of RMS reports (0.01)")
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")] if args.counts else [args.records]
    main(counts, args.rms_share, args.broker)
