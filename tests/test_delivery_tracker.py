"""DeliveryTracker shared by two threads that produce and wait at once, as the router's batch
loop and its rechecks after an agreement changed do through one Outbox. CI once saw the router
exit on "4 records unacknowledged after 75s" ten seconds after it started: one thread's flush
had ended, the other had just produced a batch, and the first read the count as unacknowledged.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import Producer

from mutualaid.errors import MutualaidError
from mutualaid.kafka import DeliveryFailed, DeliveryTracker, produce, producer_config
from mutualaid.settings import Settings
from support.brokers import Broker


class Handover:
    """Stands in for librdkafka at the one moment a broker cannot be made to hit: between the
    end of a flush and the count being read, another thread produced a record."""

    def __init__(self, acks: DeliveryTracker) -> None:
        self.acks = acks
        self.flushes = 0
        self.unserved: list[Any] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.unserved.append(on_delivery)

    def flush(self, timeout: float) -> int:
        self.flushes += 1
        for callback in self.unserved:
            callback(None, None)
        self.unserved.clear()
        if self.flushes == 1:  # the other thread's batch, just after this flush ended
            produce(self, "t", b"k", b"v", self.acks)  # type: ignore[arg-type]
        return 0


def test_a_record_produced_as_a_flush_ends_is_waited_for_not_reported_lost() -> None:
    acks = DeliveryTracker()
    producer = Handover(acks)
    acks.wait(producer, timeout=5.0)  # type: ignore[arg-type]
    assert producer.flushes == 2 and acks.pending == 0


def test_a_record_never_acknowledged_still_fails_the_wait_naming_the_time_waited() -> None:
    class Silent(Handover):
        def flush(self, timeout: float) -> int:
            time.sleep(min(timeout, 0.05))
            return len(self.unserved)

    acks = DeliveryTracker()
    producer = Silent(acks)
    produce(producer, "t", b"k", b"v", acks)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(DeliveryFailed, match=r"1 records unacknowledged after 0s"):
        acks.wait(producer, timeout=0.3)  # type: ignore[arg-type]
    assert 0.3 <= time.monotonic() - started < 2.0
    assert issubclass(DeliveryFailed, MutualaidError)


def test_two_threads_producing_and_waiting_on_one_tracker_never_fail_on_a_live_broker(
    broker: Broker,
) -> None:
    settings = Settings(bootstrap_servers=broker.bootstrap_servers)
    producer = Producer(producer_config(settings))
    acks = DeliveryTracker()
    batches = 200
    done = threading.Event()
    failures: list[BaseException] = []

    def batch_loop() -> None:  # the router's: a batch of four outputs, then wait for them
        try:
            for n in range(batches):
                for i in range(4):
                    produce(producer, "delivery-tracker", f"{n}-{i}".encode(), b"x", acks)
                acks.wait(producer, timeout=30.0)
        except BaseException as exc:
            failures.append(exc)
        finally:
            done.set()

    def rechecks() -> None:  # the rechecks': waits of its own while the batches go on
        try:
            while not done.is_set():
                acks.wait(producer, timeout=30.0)
        except BaseException as exc:
            failures.append(exc)
            done.set()

    threads = [threading.Thread(target=batch_loop), threading.Thread(target=rechecks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    assert acks.pending == 0 and not acks.errors
    assert producer.flush(10) == 0
