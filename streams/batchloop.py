"""The loop both stream stages run (the router and the matcher), on librdkafka alone.

One batch at a time:

1. take up to ``batch_size`` records (a lone record is processed at once, never held for
   company: ``mutualaid.kafka.next_batch``);
2. process each (``streams.router.Router.route``, ``streams.matcher.Matcher.match``); what it
   returns goes to the stage's ``Outbox`` (one idempotent librdkafka producer, ``acks=all``);
3. write what the batch changed in the stage's tables (``streams.table``) to their changelogs,
   through that producer;
4. wait until the broker acknowledged all of it; if it refuses or does not answer, exit (70)
   without committing: the batch is processed again after restart;
5. commit the batch's offsets.

A crash anywhere loses nothing: what was not committed is processed again, and since outputs
are keyed and versioned (or carry deterministic ids), every index applies a repeat once and
every webhook receiver drops a repeated alert id. Offsets are committed by this loop alone
(``enable.auto.commit`` and ``enable.auto.offset.store`` are off).

Why not faust: measured on one 2-core machine (``./run bench``), a faust agent that only
forwards raw bytes moves ~4,800-6,200 events/s, where a confluent-kafka consume-produce loop
moves ~40,000-68,000; the router ran at ~750/s inside faust (~2,100 here), and faust needed a
commit gate, a stall watchdog and wrapped internals to keep it from committing records it never
processed across a rebalance. faust's fetch path also held a hit alert ~300-500 ms per hop.

Rebalances are eager, with the ``range`` assignor: every worker gets the same partition numbers
of every input topic, so a record's events meet the worker that holds its table partition. A
worker reads back the changelog of each partition it is newly assigned before processing
anything of it, and processes nothing of a partition no longer assigned (records fetched before
a revocation are dropped, for the new owner to read).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from mutualaid.kafka import DeliveryFailed, commit_past, consumer_config, next_batch
from mutualaid.kafkaclients import client_config
from mutualaid.settings import Settings
from streams.router import Consumed, Output
from streams.table import ChangelogTable
from streams.worker import EXIT_DELIVERY_FAILED, Outbox

Process = Callable[[Consumed], list[Output]]


class BatchLoop:
    """Consume ``topics`` in group ``group_id``, ``process`` each record, produce, commit.

    ``tick`` runs between batches every ``tick_seconds`` (reloads, rechecks, hotlist updates);
    ``assigned`` after each assignment, once the tables are loaded; ``acknowledged`` with a
    batch's outputs once the broker has them (the matcher's alert latency)."""

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        topics: Sequence[str],
        outbox: Outbox,
        process: Process,
        *,
        log: logging.Logger,
        tables: Sequence[ChangelogTable[Any]] = (),
        batch_size: int = 500,
        poll_seconds: float = 0.5,
        tick: Callable[[], None] | None = None,
        tick_seconds: float = 1.0,
        assigned: Callable[[set[int]], None] | None = None,
        acknowledged: Callable[[list[Output]], None] | None = None,
    ) -> None:
        self.topics = list(topics)
        self.outbox = outbox
        self.tables = list(tables)
        self.batch_size, self.poll_seconds = batch_size, poll_seconds
        self._process, self._log = process, log
        self._tick, self._tick_seconds, self._next_tick = tick, tick_seconds, 0.0
        self._on_assigned, self._acknowledged = assigned, acknowledged
        self._consumer = Consumer(
            consumer_config(
                settings,
                group_id,
                # Co-partitioned assignment: see the module's docstring.
                **{"partition.assignment.strategy": "range"},
            )
        )
        # Assigned partitions directly, never committing: reads the tables' changelogs back.
        self._changelog = Consumer(
            client_config(
                settings,
                **{
                    "group.id": f"{group_id}-table-reader",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                },
            )
        )
        self._assigned: set[tuple[str, int]] = set()

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; exit the process (70) if the broker does not
        acknowledge a batch's outputs."""
        self._consumer.subscribe(
            self.topics, on_assign=self._assign, on_revoke=self._revoke, on_lost=self._revoke
        )
        try:
            while not stop.is_set():
                self.step()
        except DeliveryFailed:
            self._log.critical(
                "broker did not acknowledge records; exiting so the batch is consumed again "
                "after restart",
                exc_info=True,
            )
            os._exit(EXIT_DELIVERY_FAILED)  # no commit, no orderly leave: processed again
        finally:
            self._consumer.close()
            self._changelog.close()

    def step(self) -> int:
        """Process one batch and commit it once all it produced is acknowledged. Returns the
        number of records processed."""
        now = time.monotonic()
        if self._tick is not None and now >= self._next_tick:
            self._next_tick = now + self._tick_seconds
            self._tick()
            # What the tick changed in the tables (entries expired) is written now, not held
            # for a batch that may not come; it answers to no offset, so nothing is committed.
            if self._send_table_changes():
                self.outbox.flush()
        batch = [
            m
            for m in next_batch(self._consumer, self.batch_size, self.poll_seconds)
            if self._ours(m)
        ]
        if not batch:
            return 0
        sent: list[Output] = []
        for msg in batch:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None  # _ours
            for table in self.tables:
                table.at(partition)
            consumed = Consumed(topic, partition, offset, msg.key(), msg.value())
            outputs = self._process(consumed)
            for out in outputs:
                self.outbox.send(out)
            if self._acknowledged is not None:
                sent += outputs
        self._send_table_changes()
        self.outbox.flush()
        if self._acknowledged is not None:
            self._acknowledged(sent)
        commit_past(self._consumer, batch, self._log)
        return len(batch)

    def _send_table_changes(self) -> int:
        sent = 0
        for table in self.tables:
            for partition, key, value in table.changes():
                self.outbox.send(Output(table.changelog_topic, key, value, partition))
                sent += 1
        return sent

    def _ours(self, msg: Message) -> bool:
        """A record to process: no error, and of a partition still assigned here."""
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                self._log.warning("consumer: %s", error.str())
            return False
        return (msg.topic(), msg.partition()) in self._assigned

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = {(tp.topic, tp.partition) for tp in partitions}
        numbers = {tp.partition for tp in partitions}
        for table in self.tables:
            table.keep_only(numbers)
            table.load(self._changelog, numbers)
        self._log.info("assigned partitions %s", sorted(numbers))
        if self._on_assigned is not None:
            self._on_assigned(numbers)

    def _revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Everything processed is committed by now (callbacks run inside the consumer's poll,
        # between batches): nothing to finish, only stop processing these.
        self._assigned -= {(tp.topic, tp.partition) for tp in partitions}
