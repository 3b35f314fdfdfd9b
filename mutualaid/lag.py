"""Consumer lag, per partition: the records past the group's committed offset. It is the work a
stage has still to finish, and what a restart would read again.

The end of each partition is taken from the fetch responses a consumer receives anyway
(librdkafka's statistics), not from a ListOffsets request: the embedded Tansu
broker answers that one short after batched produces (see the project's ENVIRONMENT notes),
while every Kafka-protocol broker reports the fetch high watermark right.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping

from mutualaid.metrics import CONSUMER_LAG

Partition = tuple[str, int]  # (topic, partition)
LAG_INTERVAL_SECONDS = 5.0  # how often each consumer exports its lag

_shown: dict[str, set[Partition]] = {}
_lock = threading.Lock()


def show_lag(group: str, lag: Mapping[Partition, int]) -> None:
    """Export ``group``'s lag per partition. Partitions it no longer lists (moved to another
    member by a rebalance) are dropped, so no two members report the same one."""
    with _lock:
        for topic, partition in _shown.get(group, set()) - lag.keys():
            CONSUMER_LAG.remove(group, topic, str(partition))
        for (topic, partition), records in lag.items():
            CONSUMER_LAG.labels(group, topic, str(partition)).set(records)
        _shown[group] = set(lag)


def lag_from_statistics(statistics: str) -> dict[Partition, int]:
    """Lag per assigned partition from librdkafka's statistics JSON: the fetch high watermark
    less the committed offset; before the group's first commit there, less the partition's
    first offset (where ``auto.offset.reset=earliest`` starts)."""
    lag = {}
    for topic, stats in json.loads(statistics).get("topics", {}).items():
        for number, p in stats.get("partitions", {}).items():
            start = p["committed_offset"] if p["committed_offset"] >= 0 else p["lo_offset"]
            # -1 is librdkafka's own bookkeeping partition; "desired" means assigned to us.
            if number != "-1" and p["desired"] and p["hi_offset"] >= 0 and start >= 0:
                lag[(topic, int(number))] = max(0, p["hi_offset"] - start)
    return lag


def statistics_callback(group: str) -> Callable[[str], None]:
    """A librdkafka ``stats_cb`` exporting ``group``'s lag each ``statistics.interval.ms``."""
    return lambda statistics: show_lag(group, lag_from_statistics(statistics))
