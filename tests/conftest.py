"""Shared fixtures: one real broker of each kind (Tansu, Apache Kafka) per test session, and a
fresh region per test. What tests import lives in tests/support/.

Every test gets its own agencies (random ORIs), hence its own topics and consumer groups on the
shared broker, so tests never see each other's records.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mutualaid.broker import EmbeddedBroker, free_port
from mutualaid.kafka import wait_for_broker
from mutualaid.kafkaserver import KafkaCluster, KafkaUnavailable
from support.brokers import Broker, selected_brokers
from support.pgserver import postgres_bindir, throwaway_postgres
from support.regions import Region, make_region

# The browser fixture (real Chromium) for the web pages' tests.
pytest_plugins = ["support.browser"]


@pytest.fixture(scope="session", params=selected_brokers())
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Broker]:
    """One broker of each kind per session; a test that holds on one only says so with
    ``@pytest.mark.brokers("tansu", reason=...)``."""
    log_dir = tmp_path_factory.mktemp(request.param)
    if request.param == "tansu":
        with EmbeddedBroker(free_port(), log=log_dir / "broker.log") as running:
            yield running
        return
    try:
        with KafkaCluster(nodes=1, root=log_dir) as cluster:
            cluster.warm_up()
            yield cluster
    except KafkaUnavailable as exc:
        pytest.skip(f"Apache Kafka cannot run here: {exc}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "brokers(*names, reason): run only on these brokers of the broker fixture, and why",
    )


LANES = ("kafka", "other")


def lane_of(item: pytest.Item, broker: str | None) -> str:
    """Which of the two lanes `./run tests` runs side by side holds ``item``: "kafka" has the
    runs on Apache Kafka and the modules that start their own Kafka nodes, "other" the runs on
    Tansu; the tests of the broker fixture's neither are split between them by module (a
    stable hash of its name), which evens the lanes' times (about 990 s and 1,010 s of the
    slowest 150 tests' 2,000 s in one run)."""
    if broker == "kafka" or item.path.name.startswith("test_kafka"):
        return "kafka"
    if broker == "tansu":
        return "other"
    return LANES[zlib.crc32(item.path.name.encode()) % 2]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect a test's runs on brokers its ``brokers`` mark leaves out, and, when
    MUTUALAID_TEST_LANE names a lane, the tests of the other lane."""
    lane = os.environ.get("MUTUALAID_TEST_LANE")
    if lane is not None and lane not in LANES:
        raise pytest.UsageError(f"MUTUALAID_TEST_LANE: {lane!r} is not one of {LANES}")
    keep, drop = [], []
    for item in items:
        mark = item.get_closest_marker("brokers")
        param = getattr(getattr(item, "callspec", None), "params", {}).get("broker")
        if mark is not None and not mark.kwargs.get("reason"):
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.brokers needs a reason=")
        off_broker = bool(mark and param and param not in mark.args)
        off_lane = lane is not None and lane_of(item, param) != lane
        (drop if off_broker or off_lane else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for the session (libpq URL); tests keep apart by schema
    or table. Skipped only where no server binaries exist (.ci/run installs Debian's)."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl); apt-get install postgresql")
    with throwaway_postgres(bindir) as url:
        yield url


@pytest.fixture
def index_url(request: pytest.FixtureRequest) -> str | None:
    """The region's ``index_url``: SQLite files unless a test is parametrised with
    ``both_index_backends``."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def region(tmp_path: Path, broker: Broker, index_url: str | None) -> Iterator[Region]:
    made = make_region(tmp_path, broker, index_url=index_url)
    yield made
    # Every test's 41 topics would pile up on the session's broker (thousands of partitions
    # by the end, which Apache Kafka holds in its heap): the region's own go with it.
    # (The router's changelog and control topics carry the local ORI in its router_id.)
    oris = (made.local, made.county, made.neighbour, made.federal)
    admin = wait_for_broker(broker.bootstrap_servers)
    ours = {t for t in admin.list_topics(timeout=10).topics if any(o.lower() in t for o in oris)}
    # (Each name once: Apache Kafka refuses a DeleteTopics that names a topic twice.)
    for future in admin.delete_topics(sorted(ours), operation_timeout=10).values():
        future.result()
