"""What streams/faust_compat.py relies on in faust and aiokafka still holds (no broker needed:
these fail on an upgrade that changes it, before a worker silently misbehaves)."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiokafka
import faust

from mutualaid.settings import Settings
from mutualaid.topics import holders_changelog_topic
from streams.faust_compat import FETCH_MAX_WAIT_MS, bound_fetch_wait, set_current_event
from streams.worker import new_app


def test_aiokafka_still_takes_fetch_max_wait_ms() -> None:
    bound_fetch_wait()
    init = aiokafka.AIOKafkaConsumer.__init__
    original = inspect.unwrap(init)
    assert original is not init  # wrapped once, and only once
    bound_fetch_wait()
    assert aiokafka.AIOKafkaConsumer.__init__ is init
    assert "fetch_max_wait_ms" in inspect.signature(original).parameters


def test_the_consumer_faust_builds_waits_at_most_the_bound(tmp_path: Path) -> None:
    async def build() -> int:
        app = new_app(Settings(data_dir=tmp_path, bootstrap_servers="127.0.0.1:1"), "compat")
        thread: Any = app.consumer._thread  # type: ignore[attr-defined]
        consumer = thread._create_worker_consumer(app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    assert asyncio.run(build()) == FETCH_MAX_WAIT_MS


class Event:
    """Stands in for a faust Event: a table reads only its message (and needs a weak ref)."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = SimpleNamespace(topic=topic, partition=partition)


def test_tables_write_their_changelog_to_the_event_set_as_current(tmp_path: Path) -> None:
    async def changelog_partitions() -> list[int | None]:
        app = faust.App("compat-table", broker="kafka://127.0.0.1:1", store="memory://")
        table = app.Table("holders", partitions=8)
        sent: list[int | None] = []

        def send_changelog(partition: int | None, key: Any, value: Any, **_: Any) -> Any:
            sent.append(partition)
            return SimpleNamespace(message=SimpleNamespace(partition=partition))

        table.send_changelog = send_changelog  # type: ignore[method-assign]
        for partition in (5, 2):
            event = Event("src.ca0990100.alpr.read", partition)  # held: faust keeps a weak ref
            set_current_event(event)  # type: ignore[arg-type]
            table[f"key-{partition}"] = {"CA0990200": ["a", 1]}
            del table[f"key-{partition}"]
        return sent

    assert asyncio.run(changelog_partitions()) == [5, 5, 2, 2]


def test_the_consumer_methods_the_commit_gate_wraps_still_exist() -> None:
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import Consumer as AiokafkaConsumer

    from streams.faust_compat import commit_gate

    commit_gate(faust.App("compat-gate"))
    # The wrappers call the originals with exactly these arguments.
    expected = {
        (AiokafkaConsumer, "seek_to_committed"): ["self"],
        (Consumer, "on_partitions_revoked"): ["self", "revoked"],
        (Consumer, "_filter_committable_offsets"): ["self", "tps"],
    }
    for (cls, name), parameters in expected.items():
        wrapped = getattr(cls, name)
        original = inspect.unwrap(wrapped)
        assert original is not wrapped, name
        assert list(inspect.signature(original).parameters) == parameters, name
    # perform_seek (after each assignment) still seeks through seek_to_committed, aiokafka
    # still leaves a partition with nothing committed where it was (the gate expects 0 there),
    # and the ack bookkeeping the gate prunes is still there.
    assert "self.seek_to_committed()" in inspect.getsource(Consumer.perform_seek)
    aiokafka_seek = inspect.getsource(aiokafka.AIOKafkaConsumer.seek_to_committed)
    assert "if offset and offset > 0:" in aiokafka_seek
    init = inspect.getsource(Consumer.__init__)
    for attribute in ("_acked", "_acked_index", "_gap"):
        assert f"self.{attribute} =" in init, attribute


def test_the_router_creates_the_changelog_faust_names_for_its_holders_table() -> None:
    app = faust.App("mutualaid-router-ca0990100", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("holders", partitions=4)
    assert table.changelog_topic.get_topic_name() == holders_changelog_topic(app.conf.id)
