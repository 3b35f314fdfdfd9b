"""Kafka client factories and the few admin operations every stage needs.

All configuration that decides delivery guarantees lives here, so that no stage can quietly
produce without ``acks=all`` or commit offsets on its own schedule.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from mutualaid.settings import Settings
from mutualaid.topics import TopicSpec


class BrokerUnavailable(Exception):
    """The broker did not answer in time."""


class DeliveryFailed(Exception):
    """The broker did not acknowledge every produced record; nothing may be checkpointed."""


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        # Idempotence implies acks=all and ordered retries: no duplicates, no reordering.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        **overrides,
    }


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": group_id,
        # Offsets are committed by the stage, only after its output is durable.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 6),
        **overrides,
    }


class DeliveryTracker:
    """Counts acknowledgements for one producer, so a stage knows when its output is durable."""

    def __init__(self) -> None:
        self.pending = 0
        self.errors: list[str] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        self.pending -= 1
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err.str()}")

    def sent(self) -> None:
        self.pending += 1

    def wait(self, producer: Producer, timeout: float = 30.0) -> None:
        """Block until every record produced so far is acknowledged, or raise DeliveryFailed."""
        remaining = producer.flush(timeout)
        if remaining or self.pending:
            raise DeliveryFailed(
                f"{max(remaining, self.pending)} records unacknowledged after "
                f"{timeout:.0f}s; is the broker at bootstrap_servers up?"
            )
        if self.errors:
            errors, self.errors = self.errors, []
            raise DeliveryFailed("broker refused records: " + "; ".join(errors[:5]))


def wait_for_broker(bootstrap_servers: str, timeout: float = 15.0) -> AdminClient:
    """An AdminClient once the broker answers a metadata request."""
    # librdkafka logs every refused connection while the broker is still starting; silence the
    # probe and hand back a normal client once the broker has answered.
    probe = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0})
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            probe.list_topics(timeout=1.0)
            return AdminClient({"bootstrap.servers": bootstrap_servers})
        except KafkaException as exc:
            last = exc
            time.sleep(0.1)
    raise BrokerUnavailable(
        f"no Kafka broker answered at {bootstrap_servers} within {timeout:.0f}s ({last}); "
        "start one with `mutualaid broker` or set MUTUALAID_BOOTSTRAP_SERVERS"
    )


def ensure_topics(
    admin: AdminClient, specs: list[TopicSpec], replication_factor: int, timeout: float = 15.0
) -> list[str]:
    """Create the topics that do not exist yet; return their names. Existing ones are left as is."""
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=replication_factor,
            config={"cleanup.policy": "compact"} if s.compacted else {},
        )
        for s in missing
    ]
    for future in admin.create_topics(new, request_timeout=timeout).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return [s.name for s in missing]
