"""Reading source events back by position, for a recall (``Router._recheck``).

The router keeps, per held record, only where its latest source event is (partition and
offset); a recall reads the event from there instead of keeping a copy of every record in the
router's table. Rechecks are posted in source-offset order per partition, so each read fetches
a batch from that offset and the next rechecks are served from it: one pass along the
partition, not one fetch per record.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

from mutualaid.kafkaclients import client_config
from mutualaid.settings import Settings

READ_AHEAD = 500


class SourceReader:
    """``read(topic, partition, offset)``: the bytes there, or None if they are gone (deleted
    by retention, or compacted away) or cannot be read within ``timeout`` seconds, which the
    router treats alike: the copies are withdrawn, the protective choice."""

    def __init__(self, settings: Settings, group_id: str, timeout: float = 10.0) -> None:
        self.timeout = timeout
        # A group id only because the client requires one: partitions are assigned directly,
        # nothing is committed.
        self._consumer = Consumer(
            client_config(
                settings,
                **{
                    "group.id": group_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                },
            )
        )
        self._ahead: dict[tuple[str, int], dict[int, bytes | None]] = {}

    def __call__(self, topic: str, partition: int, offset: int) -> bytes | None:
        return self.read(topic, partition, offset)

    def read(self, topic: str, partition: int, offset: int) -> bytes | None:
        ahead = self._ahead.get((topic, partition), {})
        if offset in ahead:
            return ahead[offset]
        fetched = self._fetch(topic, partition, offset)
        self._ahead[(topic, partition)] = fetched
        return fetched.get(offset)

    def _fetch(self, topic: str, partition: int, offset: int) -> dict[int, bytes | None]:
        """Up to READ_AHEAD records from ``offset`` on. The first record returned is the one
        at ``offset`` unless that one is gone: the broker then resets to the earliest it has,
        past it. Partition ends are not trusted (the embedded broker misreports them after
        batched produces): nothing within the timeout is nothing."""
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        got: dict[int, bytes | None] = {}
        deadline = time.monotonic() + self.timeout
        while not got and time.monotonic() < deadline:
            for msg in self._consumer.consume(READ_AHEAD, 0.2):
                if msg.error() is None and (at := msg.offset()) is not None:
                    got[at] = msg.value()
        return got

    def close(self) -> None:
        self._consumer.close()
