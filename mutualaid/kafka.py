"""Kafka client factories and the few admin operations every stage needs.

All configuration that decides delivery guarantees lives here, so that no stage can quietly
produce without ``acks=all`` or commit offsets on its own schedule.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from mutualaid.errors import MutualaidError
from mutualaid.kafkaclients import client_config
from mutualaid.lag import LAG_INTERVAL_SECONDS, statistics_callback
from mutualaid.settings import Settings
from mutualaid.topics import TopicSpec

FETCH_WAIT_MAX_MS = 50
# Refusals of a principal that may not create or configure a topic (ACLs).
_NOT_ALLOWED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.POLICY_VIOLATION,
}
log = logging.getLogger("mutualaid.kafka")


class BrokerUnavailable(MutualaidError):
    """The broker did not answer in time."""


class DeliveryFailed(MutualaidError):
    """The broker did not acknowledge every produced record; nothing may be checkpointed."""


# How long librdkafka keeps retrying a record before it reports it failed, and so how long a
# stage waits for acknowledgements before giving up. It must outlast a leader election after a
# broker dies (broker.session.timeout.ms, 9 s, then metadata refreshes; far longer on a loaded
# host): with 30 s, a connector gave up while a three-node cluster was still failing over.
DELIVERY_TIMEOUT_SECONDS = 120.0


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return {
        **client_config(settings),
        # Idempotence implies acks=all and ordered retries: no duplicates, no reordering.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": int(DELIVERY_TIMEOUT_SECONDS * 1000),
        **overrides,
    }


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        **client_config(settings),
        "group.id": group_id,
        # Offsets are committed by the stage, only after its output is durable.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 6),
        # How long the broker may hold a fetch that has no data yet. Apache Kafka answers as soon
        # as data arrives (fetch.min.bytes=1), so there this only bounds idle polling; the
        # embedded broker holds every fetch for the whole wait, so librdkafka's 500 ms default
        # would add up to half a second to every hop.
        "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
        # mutualaid_consumer_lag, from the statistics librdkafka gathers as it fetches.
        "statistics.interval.ms": int(LAG_INTERVAL_SECONDS * 1000),
        "stats_cb": statistics_callback(group_id),
        **overrides,
    }


def stage_producer_config(settings: Settings) -> dict[str, Any]:
    """For a stream stage's outputs (the router's and the matcher's): idempotent with acks=all
    as every producer, and batched and compressed for throughput, since a stage writes several
    records per record it reads and waits for them only once a batch. A broker that does not
    answer fails the batch within ``delivery.timeout.ms`` instead of librdkafka's 5 minutes."""
    return producer_config(
        settings,
        **{
            "compression.type": "lz4",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "delivery.timeout.ms": 30_000,
        },
    )


class DeliveryTracker:
    """Counts acknowledgements for one producer, so a stage knows when its output is durable.

    Safe to share between threads that produce and wait at once (a router's batch loop and its
    rechecks after an agreement changed): a record is counted before it is handed to librdkafka,
    so ``pending`` never drops below the records not yet acknowledged, and ``wait`` returns only
    once it saw the count at zero, not merely the queue empty at the end of one flush."""

    def __init__(self) -> None:
        self.pending = 0
        self.errors: list[str] = []
        # ``+=`` on an attribute is not atomic: two threads could lose a count between them.
        self._lock = threading.Lock()

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            self.pending -= 1
            if err is not None:
                self.errors.append(f"{msg.topic()}: {err.str()}")

    def sent(self) -> None:
        with self._lock:
            self.pending += 1

    def unsent(self) -> None:
        """A record counted by ``sent`` that librdkafka did not take after all."""
        with self._lock:
            self.pending -= 1

    def wait(self, producer: Producer, timeout: float = DELIVERY_TIMEOUT_SECONDS + 5) -> None:
        """Block until every record produced so far is acknowledged, or raise DeliveryFailed.

        One flush is not enough when another thread produces meanwhile: its records can arrive
        between the flush's end and the count being read (a router once exited on "4 records
        unacknowledged after 75s" 10 s after it started), so flush again until both agree."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            remaining = producer.flush(max(0.0, deadline - time.monotonic()))
            if not remaining and not self.pending:
                break
            if time.monotonic() >= deadline:
                raise DeliveryFailed(
                    f"{max(remaining, self.pending)} records unacknowledged after "
                    f"{time.monotonic() - started:.0f}s; is the broker at bootstrap_servers up?"
                )
            if not remaining:  # counted by another thread that is about to hand it over
                time.sleep(0.001)
        if self.errors:
            with self._lock:
                errors, self.errors = self.errors, []
            raise DeliveryFailed("broker refused records: " + "; ".join(errors[:5]))


def produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    acks: DeliveryTracker,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Produce one record, counted by ``acks`` (to ``partition``, or where the partitioner puts
    its key), with ``headers`` if any; when the local queue is full, let deliveries drain and
    try again rather than fail (large loads outrun the broker's round trips)."""
    extra: dict[str, Any] = {} if partition is None else {"partition": partition}
    if headers:
        extra["headers"] = headers
    while True:
        # Counted first: another thread's poll may serve the acknowledgement before
        # ``produce`` even returns here.
        acks.sent()
        try:
            producer.produce(topic, value, key, on_delivery=acks, **extra)
            return
        except BufferError:
            acks.unsent()
            producer.poll(0.01)
        except BaseException:
            acks.unsent()
            raise


def wait_for_broker(target: str | Settings, timeout: float = 15.0) -> AdminClient:
    """An AdminClient once the broker answers a metadata request: at ``target``'s bootstrap
    servers with its ``kafka`` properties (TLS, SASL), or at a bare address."""
    if isinstance(target, str):
        config: dict[str, Any] = {"bootstrap.servers": target}
    else:
        config = client_config(target)
    bootstrap_servers = config["bootstrap.servers"]
    # librdkafka logs every refused connection while the broker is still starting; silence the
    # probe and hand back a normal client once the broker has answered.
    probe = AdminClient({**config, "log_level": 0})
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            probe.list_topics(timeout=1.0)
            return AdminClient(config)
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
    """Create the topics that do not exist yet; return their names. Existing ones keep their
    partitions, but get the configuration mutualaid sets (retention, compaction) where it
    differs, so a topic made before a setting changed, or by hand, cannot quietly delete
    audit records after the broker's default week."""
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [s for s in specs if s.name not in existing]
    found = [s for s in specs if s.name in existing]
    created: set[str] = set()
    refused: set[str] = set()
    if missing:
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=replication_factor,
                config=s.config,
            )
            for s in missing
        ]
        for name, future in admin.create_topics(new, request_timeout=timeout).items():
            try:
                future.result()
                created.add(name)
            except KafkaException as exc:
                code = exc.args[0].code()
                if code in _NOT_ALLOWED:
                    # A stage under ACLs sees only its own topics; the others are the
                    # operator's to create (as the broker's super user), not a fault here.
                    log.info("not allowed to create topic %s: left to the operator", name)
                    refused.add(name)
                elif code != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        # Apache Kafka's metadata can lag a topic's creation by a moment: one made just
        # before (by hand, by another stage) is "already there" only now, and gets the
        # configuration like any other that existed.
        found += [s for s in missing if s.name not in created and s.name not in refused]
    _set_configs(admin, found, timeout)
    names = [s.name for s in missing if s.name in created]
    _await_leaders(admin, names, timeout)
    return names


def _await_leaders(admin: AdminClient, topics: list[str], timeout: float) -> None:
    """Return once every partition of ``topics`` has a leader. Apache Kafka acknowledges a
    CreateTopics before its brokers lead the new partitions, and a ListOffsets or produce sent
    in between fails with NOT_LEADER_FOR_PARTITION."""
    deadline = time.monotonic() + timeout
    waiting = set(topics)
    while waiting:
        meta = admin.list_topics(timeout=timeout).topics
        waiting = {
            t
            for t in waiting
            if t not in meta
            or meta[t].error is not None
            or not meta[t].partitions
            or any(p.leader < 0 or p.error is not None for p in meta[t].partitions.values())
        }
        if waiting and time.monotonic() >= deadline:
            raise BrokerUnavailable(
                f"{len(waiting)} new topics had no leader after {timeout:.0f}s, e.g. "
                f"{sorted(waiting)[0]}"
            )
        if waiting:
            time.sleep(0.1)


def _set_configs(admin: AdminClient, specs: list[TopicSpec], timeout: float) -> None:
    if not specs:
        return
    changes = []
    configs = _describe(admin, [s.name for s in specs], timeout)
    for spec, current in zip(specs, configs, strict=True):
        if current is None:
            continue  # a stage's principal may use a topic, not configure it: the operator's
        differ = {k: v for k, v in spec.config.items() if k not in current or current[k].value != v}
        if differ:
            entries = [
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, v in differ.items()
            ]
            changes.append(
                ConfigResource(ResourceType.TOPIC, spec.name, incremental_configs=entries)
            )
    if changes:
        for future in admin.incremental_alter_configs(changes, request_timeout=timeout).values():
            future.result(timeout)


def _describe(
    admin: AdminClient, topics: list[str], timeout: float
) -> list[dict[str, ConfigEntry] | None]:
    """Each topic's configuration, in one request per round; None for a topic this principal
    may not describe. A topic made a moment before (by hand, by another stage) can be listed
    by one broker while the one answering DescribeConfigs does not know it yet (Apache Kafka
    answers UNKNOWN_TOPIC_OR_PART): those alone are asked again until ``timeout``."""
    deadline = time.monotonic() + timeout
    found: dict[str, dict[str, ConfigEntry] | None] = {}
    asking = list(topics)
    while asking:
        resources = [ConfigResource(ResourceType.TOPIC, t) for t in asking]
        unknown = []
        for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
            try:
                found[resource.name] = future.result(timeout)
            except KafkaException as exc:
                code = exc.args[0].code()
                if code in _NOT_ALLOWED:
                    found[resource.name] = None
                elif code == KafkaError.UNKNOWN_TOPIC_OR_PART and time.monotonic() < deadline:
                    unknown.append(resource.name)
                else:
                    raise
        asking = unknown
        if asking:
            time.sleep(0.2)
    return [found[t] for t in topics]


# Errors of a partition whose leadership is moving (librdkafka does not flag all retriable), or
# of a topic just created that the client's metadata does not show yet: on a three-node
# cluster the router's first read-back of its new holders changelog got _UNKNOWN_PARTITION and
# the router exited (tests/test_kafka_cluster.py, once in a CI rehearsal).
_BETWEEN_LEADERS = {
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
}


def end_offsets(settings: Settings, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """Per partition, the broker's end offset: at or before the true end (Tansu reports less
    after batched produces), so reading from here never misses what comes after it. A
    partition between leaders (a new topic, a broker just lost) is asked again until
    ``timeout``."""
    consumer = Consumer(client_config(settings, **{"group.id": "mutualaid-offsets"}))
    deadline = time.monotonic() + timeout
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {}
        for p in partitions:
            left = max(1.0, deadline - time.monotonic())
            ends[p] = watermarks(consumer, TopicPartition(topic, p), left)[1]
        return ends
    finally:
        consumer.close()


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float = 30.0) -> tuple[int, int]:
    """The partition's (low, high) watermarks. A partition between leaders (a new topic, a
    broker just lost) is asked again until ``timeout``: a router writing audit records while a
    node died crashed its agent on the first timed-out ask (tests/test_kafka_cluster.py)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            return low, high
        except KafkaException as exc:
            error = exc.args[0]
            passing = error.retriable() or error.code() in _BETWEEN_LEADERS
            if not passing or time.monotonic() >= deadline:
                raise
            # A client that still takes a dead node for the leader keeps asking it until its
            # metadata ages out (a new consumer asked a killed node for 60 s and the router
            # exited, tests/test_kafka_cluster.py in a CI rehearsal): ask who leads now.
            with contextlib.suppress(KafkaException):  # the next ask says what is wrong
                consumer.list_topics(tp.topic, timeout=5)
            time.sleep(0.2)


class TopicFollower:
    """Reads topics from their beginning (or ``start`` offsets) on, without a consumer group.

    For state every instance must hold entire, such as the hotlists the matcher joins reads
    against (a consumer group would hand each instance only some partitions), and for a
    connector looking at what it published before a crash. ``caught_up`` is
    set once every partition has been read to the end it had when reading began (the fetch's
    end-of-partition signal, which the embedded broker reports correctly).
    """

    def __init__(
        self,
        settings: Settings,
        topics: list[str],
        on_message: Callable[[Message], None],
        start: Mapping[tuple[str, int], int] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.caught_up = threading.Event()
        self._on_message = on_message
        self._consumer = Consumer(
            client_config(
                settings,
                **{
                    "group.id": "mutualaid-follower",  # required by librdkafka; never joined
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    # Its readers wait on it (a dispatch console for a hit alert): on the
                    # embedded broker librdkafka's 500 ms would hold each fetch ~250 ms.
                    "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
                    **(config or {}),
                },
            )
        )
        self._pending: set[tuple[str, int]] = set()
        assignment = []
        for topic in topics:
            meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
            if meta.error is not None:
                raise KafkaException(meta.error)
            for partition in meta.partitions:
                offset = (start or {}).get((topic, partition), OFFSET_BEGINNING)
                assignment.append(TopicPartition(topic, partition, offset))
                self._pending.add((topic, partition))
        self._consumer.assign(assignment)
        if not self._pending:
            self.caught_up.set()

    def poll(self, timeout: float = 0.2) -> int:
        """Hand every record that arrived to the callback, waiting up to ``timeout`` for the
        first; return how many. A lone record is handed on when it comes: ``consume(1000,
        timeout)`` held it for the rest of the timeout, so an alert reached a dispatch console
        up to 200 ms after it reached the alert topic."""
        handled = 0
        for msg in next_batch(self._consumer, 1000, timeout):
            error = msg.error()
            if error is None:
                self._on_message(msg)
                handled += 1
            elif error.code() == KafkaError._PARTITION_EOF:
                self._pending.discard((msg.topic(), msg.partition()))
                if not self._pending:
                    self.caught_up.set()
            elif error.code() != KafkaError.GROUP_AUTHORIZATION_FAILED:
                raise KafkaException(error)
            # (librdkafka looks up the coordinator of the group id it requires even though a
            # follower never joins or commits; under ACLs its principal may not describe that
            # group, and the topics it reads are all it needs.)
        return handled

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.poll()
        finally:
            self.close()

    def close(self) -> None:
        self._consumer.close()


# A commit refused because this member is no longer the partitions' owner: its session expired
# (a broker node's death moved the group coordinator) or the group rebalanced meanwhile.
GROUP_MOVED_ON = {
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError._ASSIGNMENT_LOST,
}

# A commit not taken because the group's coordinator is moving or out of reach (a broker node
# died): it was not stored, but this member may still own the partitions, and its next commit,
# of offsets as high or higher, goes to the new coordinator and covers these.
COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._WAIT_COORD,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
}


def next_batch(consumer: Consumer, size: int, wait: float) -> list[Message]:
    """Wait up to ``wait`` seconds for a first record, then take what else has already
    arrived, up to ``size``: a lone record goes on as soon as it comes, never held for a batch
    that is not coming (librdkafka's ``consume(n, timeout)`` waits the whole timeout for n),
    while under load every batch is still full."""
    first = consumer.poll(wait)
    if first is None:
        return []
    return [first, *consumer.consume(size - 1, 0)]


def commit_past(consumer: Consumer, messages: list[Message], logger: logging.Logger) -> bool:
    """Commit past ``messages``, whose work is done (indexed, delivered). If the group has moved
    on without this member, say so on ``logger`` and go on (False): whoever owns the partitions
    now reads them again, which the consumers' idempotence absorbs (the index keeps the
    highest version, webhook receivers drop a repeated alert id). The same if the group's
    coordinator is moving (``COORDINATOR_MOVING``). Raising on either stopped a projector for
    good when a broker node died (tests/test_kafka_cluster.py)."""
    last: dict[tuple[str, int], int] = {}
    for msg in messages:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if msg.error() is not None or topic is None or partition is None or offset is None:
            continue
        last[(topic, partition)] = offset
    if not last:
        return True
    offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        error = exc.args[0]
        if error.code() in GROUP_MOVED_ON:
            why = "the group moved on without this member, which rejoins; what it finished "
            why += "will be read again"
        elif error.code() in COORDINATOR_MOVING:
            why = "the group's coordinator is moving; the next commit covers these offsets"
        else:
            raise
        logger.warning("commit of %d partition(s) refused (%s): %s", len(offsets), error.str(), why)
        return False
    return True
