"""ACLs, SCRAM and mTLS enforced by Apache Kafka: one secured broker for the module (SSL with
client certificates and SASL_SSL with SCRAM-SHA-512, the StandardAuthorizer), the ACLs that
`mutualaid acls --apply` derives and creates as the admin, and real stages connecting as their
own principals.

Apache Kafka only: Tansu has no authorizer to enforce ACLs with (see README, Security model).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)

from consumers.index import index_path
from mutualaid import certs
from mutualaid.acls import principal
from mutualaid.kafka import TopicFollower
from mutualaid.kafkaserver import ADMIN_PRINCIPAL, KafkaCluster, KafkaUnavailable, Security
from mutualaid.processes import spawn, stop
from mutualaid.serde import HIT_ALERT, AvroDeserializer, SchemaStore, SerializationContext
from mutualaid.topics import Kind, alerts_topic, share_topic, source_topic
from producers import samples
from support.brokers import selected_brokers
from support.indexes import index_rows
from support.processes import serving, token_for, wait_for
from support.regions import Region, make_region
from support.webhooks import configure, receiving, secret_file

pytestmark = pytest.mark.skipif(
    "kafka" not in selected_brokers(),
    reason="Apache Kafka only: Tansu has no authorizer, so it cannot enforce ACLs",
)

ROUTER_PASSWORD = secrets.token_urlsafe(16)
ADMIN_PASSWORD = secrets.token_urlsafe(16)


@dataclass
class Secured:
    cluster: KafkaCluster
    security: Security
    region: Region
    tmp: Path

    def mtls(self, who: str) -> dict[str, str]:
        certs.issue(self.security.tls_dir, who)
        return {"bootstrap.servers": self.cluster.bootstrap_for("SSL"), **self.security.client(who)}

    def scram(self, user: str, password: str) -> dict[str, str]:
        return {
            "bootstrap.servers": self.cluster.bootstrap_for("SASL_SSL"),
            **self.security.scram(user, password),
        }

    def settings_file(self, name: str, props: dict[str, str], **values: object) -> Path:
        """The region's settings file with ``props`` as its kafka: setting (and ``values``),
        for a stage whose test harness takes a settings file rather than an environment."""
        merged = yaml.safe_load(self.region.config_file.read_text()) | {
            **as_settings(props),
            **values,
        }
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(merged))
        return path

    def cli(self, props: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
        """A mutualaid command run with ``props`` as its kafka: setting."""
        return subprocess.run(
            [sys.executable, "-m", "cli", "--config", str(self.region.config_file), *argv],
            capture_output=True,
            text=True,
            timeout=90,
            env=stage_env(props),
        )


def as_settings(props: dict[str, str]) -> dict[str, object]:
    """librdkafka ``props`` as mutualaid settings: bootstrap_servers and the kafka: rest."""
    rest = {k: v for k, v in props.items() if k != "bootstrap.servers"}
    return {"bootstrap_servers": props["bootstrap.servers"], "kafka": rest}


def stage_env(props: dict[str, str]) -> dict[str, str]:
    import os

    settings = as_settings(props)
    return {
        **os.environ,
        "MUTUALAID_BOOTSTRAP_SERVERS": props["bootstrap.servers"],
        "MUTUALAID_KAFKA": json.dumps(settings["kafka"]),
    }


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tmp = tmp_path_factory.mktemp("secured")
    users = {ADMIN_PRINCIPAL: ADMIN_PASSWORD, "router": ROUTER_PASSWORD}
    security = Security.make(tmp / "tls", users)
    try:
        with KafkaCluster(nodes=1, root=tmp / "kafka", security=security) as cluster:
            # The region's settings are the operator's: the admin, by certificate.
            admin = {"bootstrap.servers": cluster.bootstrap_for("SSL"), **security.client("admin")}

            class Address:
                bootstrap_servers = admin["bootstrap.servers"]

            kafka = {k: v for k, v in admin.items() if k != "bootstrap.servers"}
            region = make_region(tmp, Address(), kafka=kafka)  # type: ignore[arg-type]
            yield Secured(cluster, security, region, tmp)
    except KafkaUnavailable as exc:
        pytest.skip(f"Apache Kafka cannot run here: {exc}")


@pytest.fixture(scope="module")
def applied(secured: Secured) -> Secured:
    """The ACLs `mutualaid acls --apply` derives, created by the real command as the admin."""
    done = secured.cli(secured.mtls(ADMIN_PRINCIPAL), "acls", "--apply")
    assert done.returncode == 0, done.stderr
    assert "applied" in done.stdout
    return secured


def refusal(
    config: dict[str, str], act: str, topic: str, group: str = "", timeout: float = 15.0
) -> KafkaError:
    """The error the broker answers ``act`` (read or write) on ``topic`` with."""
    errors: list[KafkaError] = []
    base = {**config, "error_cb": errors.append, "log_level": 0}
    if act == "write":
        failed: list[KafkaError] = []
        producer = Producer(base)
        producer.produce(topic, b"x", on_delivery=lambda e, m: failed.append(e) if e else None)
        producer.flush(timeout)
        assert failed or errors, f"writing {topic} was not refused"
        return (failed or errors)[0]
    consumer = Consumer({**base, "group.id": group})
    try:
        # Subscribed, not assigned: librdkafka reports a topic it may not read only then.
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is not None:
                return msg.error()
            if msg is not None:
                raise AssertionError(f"read a record of {topic}")
            if errors:
                return errors[0]
        raise AssertionError(f"reading {topic} was neither refused nor answered")
    finally:
        consumer.close()


def test_agency_b_cannot_read_a_shares_or_write_a_sources_but_reads_its_own(
    applied: Secured,
) -> None:
    region = applied.region
    a, b = region.county, region.neighbour  # A: shared with by agreement; B: another agency
    projector_b = applied.mtls(principal("projector", b))
    connector_b = applied.mtls(principal("connector", b))
    # Read in a consumer group B's projector may use: the topic itself is refused.
    own_group = f"mutualaid-projector-{b.lower()}-probe"
    read = refusal(projector_b, "read", share_topic(a, Kind.ALPR_READ), group=own_group)
    assert read.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, read
    for who in (projector_b, connector_b):
        wrote = refusal(who, "write", source_topic(a, Kind.ALPR_READ))
        assert wrote.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, wrote
    # B's own share topic: readable by B's projector (empty, so it reaches the end, unrefused).
    consumer = Consumer({**projector_b, "group.id": own_group, "enable.partition.eof": True})
    try:
        consumer.subscribe([share_topic(b, Kind.ALPR_READ)])
        msg = wait_for(lambda: consumer.poll(0.5), 20, "an answer from B's own share topic")
        assert msg.error() is not None and msg.error().code() == KafkaError._PARTITION_EOF, msg
    finally:
        consumer.close()
    # And B's connector writes its own sources.
    producer = Producer(connector_b)
    producer.produce(source_topic(b, Kind.CAD_INCIDENT), b"not avro: never routed")
    assert producer.flush(15) == 0


def test_a_scram_login_and_an_mtls_login_work_and_a_wrong_password_is_refused(
    secured: Secured,
) -> None:
    from confluent_kafka.admin import AdminClient

    for config in (
        secured.scram(ADMIN_PRINCIPAL, ADMIN_PASSWORD),
        secured.mtls(ADMIN_PRINCIPAL),
    ):
        topics = AdminClient(config).list_topics(timeout=15).topics
        assert source_topic(secured.region.local, Kind.ALPR_READ) in topics
    wrong = secured.scram("router", "not-" + ROUTER_PASSWORD)
    assert login_error(wrong).code() == KafkaError._AUTHENTICATION
    # A certificate the cluster's CA did not sign is refused at the handshake.
    other = secured.tmp / "other-ca"
    certs.ensure_ca(other, "someone else's CA")
    forged = certs.issue(other, ADMIN_PRINCIPAL)
    stranger = {
        **secured.mtls(ADMIN_PRINCIPAL),
        "ssl.certificate.location": str(forged.certificate),
        "ssl.key.location": str(forged.key),
    }
    assert login_error(stranger).code() in (KafkaError._SSL, KafkaError._TRANSPORT)


def login_error(config: dict[str, str], timeout: float = 15.0) -> KafkaError:
    """The error a client with ``config`` gets instead of an answer."""
    errors: list[KafkaError] = []
    client = Producer({**config, "error_cb": errors.append, "log_level": 0})
    with pytest.raises(KafkaException):
        client.list_topics(timeout=3)
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        client.poll(0.2)  # serves error_cb
    assert errors, "the login was not refused"
    return errors[0]


def test_a_read_flows_through_router_and_projector_each_with_only_its_own_acls(
    applied: Secured,
) -> None:
    region, tmp = applied.region, applied.tmp
    local, county = region.local, region.county
    export = tmp / "reads.csv"
    export.write_text(
        ",".join(samples.HEADER)
        + "\n"
        + "S-1,7SEC001,CA,2026-11-24T21:14:03-08:00,0.93,C1,Main,38.94,-119.98,N,Kia,Rio,\n"
    )
    base = [sys.executable, "-m", "cli", "--config", str(region.config_file)]
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    router = spawn(
        [*base, "router"],
        log=logs / "router.log",
        env=stage_env(applied.scram("router", ROUTER_PASSWORD)),  # SCRAM
    )
    projector = spawn(
        [*base, "project", "--agency", county],
        log=logs / "projector.log",
        env=stage_env(applied.mtls(principal("projector", county))),  # mTLS
    )
    try:
        published = applied.cli(
            applied.mtls(principal("connector", local)),
            "connect", "alpr", "--agency", local, "--source", str(export),
        )  # fmt: skip
        assert published.returncode == 0, published.stderr

        def indexed() -> list[tuple]:
            for proc, name in ((router, "router"), (projector, "projector")):
                assert proc.poll() is None, (logs / f"{name}.log").read_text()[-3000:]
            if not index_path(region.settings, county).exists():
                return []  # the projector has not opened its index yet
            query = "select source_ori, record_id, plate from records where deleted = 0"
            return index_rows(region.settings, county, query)

        rows = wait_for(indexed, 90, "the county's index to hold the routed read")
        assert rows == [(local, "C1/S-1", "7SEC001")]
    finally:
        stop(router, timeout=10)
        stop(projector, timeout=10)
    for name in ("router", "projector"):
        log = (logs / f"{name}.log").read_text()
        assert ROUTER_PASSWORD not in log
        assert "AUTHORIZATION_FAILED" not in log, log[-3000:]


def test_a_group_free_reader_works_with_topic_acls_alone(applied: Secured) -> None:
    """The console (and the matcher's hotlists, a connector after a crash) read whole topics
    without joining a group; their principals have no ACL on the group id librdkafka needs."""
    region = applied.region
    console = applied.mtls(principal("console", region.local))
    settings = region.settings.model_copy(
        update={"kafka": {k: v for k, v in console.items() if k != "bootstrap.servers"}}
    )
    follower = TopicFollower(settings, [alerts_topic(region.local)], lambda msg: None)
    try:
        wait_for(lambda: follower.poll() >= 0 and follower.caught_up.is_set(), 20, "caught up")
    finally:
        follower.close()


@dataclass
class Raised:
    """The alert the matcher raised under its own ACLs, as the admin read it back."""

    alert: dict
    matcher_log: Path


@pytest.fixture(scope="module")
def raised(applied: Secured) -> Raised:
    """The city's connector (mTLS) loads its hotlist and publishes a read of a listed plate in
    its jurisdiction; the matcher (mTLS, its own ACLs) alerts the city. The console and the
    webhooks process then serve that alert."""
    region, tmp = applied.region, applied.tmp
    city = region.local
    connector = applied.mtls(principal("connector", city))
    hotlist = tmp / "hotlist.csv"
    hotlist.write_text(
        "ncic_number,plate,state,plate_type,reason,entered,expires,vehicle_make,notes\n"
        "V1,7HOT001,CA,PC,stolen_vehicle,2026-11-01,,TOYT,taken overnight\n"
    )
    loaded = applied.cli(connector, "hotlist", "load", "--agency", city, str(hotlist))
    assert loaded.returncode == 0, loaded.stderr
    topic = alerts_topic(city)
    admin = Consumer({**applied.mtls(ADMIN_PRINCIPAL), "group.id": "test-alerts-reader"})
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    base = [sys.executable, "-m", "cli", "--config", str(region.config_file)]
    log = logs / "matcher.log"
    try:
        # Joined and assigned before the matcher starts, so the minute below is the matcher's.
        admin.subscribe([topic])
        wait_for(lambda: admin.poll(0.2) is None and admin.assignment(), 30, "an assignment")
        matcher = spawn([*base, "matcher"], log=log, env=stage_env(applied.mtls("matcher")))
        try:
            wait_for(lambda: "hotlists loaded: 1 entries" in log.read_text(), 60, "the hotlists")
            reads = tmp / "hot-reads.csv"
            reads.write_text(
                ",".join(samples.HEADER)
                + "\n"
                + "H-1,7HOT001,CA,2026-11-24T21:14:03-08:00,0.93,C1,Main,38.94,-119.98,N,Toyota,,\n"
            )
            published = applied.cli(
                connector, "connect", "alpr", "--agency", city, "--source", str(reads)
            )
            assert published.returncode == 0, published.stderr

            def alerted() -> Message | None:
                assert matcher.poll() is None, log.read_text()[-3000:]
                msg = admin.poll(0.5)
                return msg if msg is not None and msg.error() is None else None

            msg = wait_for(alerted, 60, "an alert for the city")
        finally:
            stop(matcher, timeout=10)
    finally:
        admin.close()
    alert = AvroDeserializer(SchemaStore(), HIT_ALERT)(msg.value(), SerializationContext(topic))
    return Raised(alert, log)


def test_the_matcher_alerts_with_only_its_own_acls(raised: Raised) -> None:
    assert (raised.alert["read"]["plate"], raised.alert["entry_id"]) == ("7HOT001", "V1")
    assert "AUTHORIZATION_FAILED" not in raised.matcher_log.read_text()


def session_cookie(url: str, user: str, token: str) -> str:
    """Sign in on a web page's login API; the session cookie it sets."""
    request = urllib.request.Request(
        f"{url}/login",
        data=json.dumps({"user": user, "token": token}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.headers["set-cookie"].split(";")[0]


def streamed_alert(url: str, cookie: str, alert_id: str, timeout: float = 20.0) -> dict:
    """The console's view of ``alert_id``, from its live stream (the snapshot, or an update)."""
    request = urllib.request.Request(f"{url}/events", headers={"Cookie": cookie})
    deadline = time.monotonic() + timeout
    with urllib.request.urlopen(request, timeout=timeout) as stream:
        while time.monotonic() < deadline:
            line = stream.readline().decode()
            if not line.startswith("data: "):
                continue
            data = json.loads(line.removeprefix("data: "))
            for view in data if isinstance(data, list) else [data]:
                if view.get("alert_id") == alert_id:
                    return view
    raise AssertionError(f"the console did not stream alert {alert_id} in {timeout:.0f}s")


def test_the_console_serves_the_matchers_alert_with_only_its_own_acls(
    applied: Secured, raised: Raised
) -> None:
    """`mutualaid console` as console-<city> (mTLS): a dispatcher signs in, the alert streams,
    the acknowledgement is written; forging an alert on the alerts topic is refused."""
    region, city = applied.region, applied.region.local
    alert_id = raised.alert["alert_id"]
    kim = token_for(region, "console-user", city, "dispatcher.kim")
    console = applied.mtls(principal("console", city))
    config = applied.settings_file("console", console, metrics_port=0)
    log = applied.tmp / "logs" / "console.log"
    with serving(config, ["console", "--agency", city], log) as url:
        cookie = session_cookie(url, "dispatcher.kim", kim)
        view = streamed_alert(url, cookie, alert_id)
        shown = (view["plate"], view["reason"], view["entry_id"])
        assert shown == ("7HOT001", "stolen_vehicle", "V1")
        ack = urllib.request.Request(
            f"{url}/alerts/{alert_id}/ack", method="POST", headers={"Cookie": cookie}
        )
        with urllib.request.urlopen(ack, timeout=15) as answer:  # 503 if the write were refused
            assert json.load(answer) == {"alert_id": alert_id, "user": "dispatcher.kim"}
    assert "AUTHORIZATION_FAILED" not in log.read_text(), log.read_text()[-3000:]
    forged = refusal(console, "write", alerts_topic(city))
    assert forged.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, forged


def test_the_webhooks_process_posts_the_matchers_alert_with_only_its_own_acls(
    applied: Secured, raised: Raised
) -> None:
    """`mutualaid webhooks` as webhooks-<city> (mTLS) reads the alerts in its own group and
    POSTs the alert, signed, to a receiver on loopback; another agency's alerts are refused."""
    region, city = applied.region, applied.region.local
    alert_id = raised.alert["alert_id"]
    webhooks = applied.mtls(principal("webhooks", city))
    tmp = applied.tmp / "webhooks"
    tmp.mkdir()
    log = applied.tmp / "logs" / "webhooks.log"
    with receiving() as receiver:
        endpoint = {"agency": city, "url": f"{receiver.url}/hits"}
        config = configure(
            region,
            tmp,
            [{**endpoint, "secret_file": secret_file(tmp, receiver)}],
            **as_settings(webhooks),
            metrics_port=0,
        )
        argv = [sys.executable, "-m", "cli", "--config", str(config), "webhooks", "--agency", city]
        sender = spawn(argv, log=log)
        try:

            def posted() -> list[dict]:
                assert sender.poll() is None, log.read_text()[-3000:]
                with receiver.lock:
                    return [r for r in receiver.requests if r["alert_id"] == alert_id]

            [request] = wait_for(posted, 30, "the alert POSTed to the receiver")
        finally:
            stop(sender, timeout=10)
    assert (request["verified"], request["status"]) == (True, 200)
    assert request["body"]["read"]["plate"] == "7HOT001"
    assert "AUTHORIZATION_FAILED" not in log.read_text(), log.read_text()[-3000:]
    # In its own group (the sender has stopped), but another agency's alerts topic: refused.
    group = f"mutualaid-webhooks-{city.lower()}"
    other = refusal(webhooks, "read", alerts_topic(region.county), group=group)
    assert other.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, other
