"""Apache Kafka itself, in KRaft mode, from the jars that ``deploy/kafka/pom.xml`` pins.

For the tests that must run on the production broker (one node, or a three-node cluster with
replication) and for ``mutualaid up --broker kafka``. Every node is a combined broker and
controller: three such nodes are a quorum that survives losing any one of them, with a third
fewer JVMs than separate controllers would need on a two-core machine. Data lives under a
directory that ``stop()`` deletes unless the caller owns it. With ``security=Security.make(...)``
a node is secured as in production (mTLS and SCRAM listeners, the StandardAuthorizer), and
``server_properties()`` is what docker-compose.yml is checked against.

    python -m mutualaid.kafkaserver install   # fetch the jars with Maven (once; cached)
    python -m mutualaid.kafkaserver run       # one node on a free port, until Ctrl-C
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from mutualaid import certs
from mutualaid.broker import free_port, port_is_free
from mutualaid.errors import MutualaidError
from mutualaid.processes import spawn, stop_all

POM = Path(__file__).resolve().parents[1] / "deploy" / "kafka" / "pom.xml"
COMPLETE = ".complete"  # written last: a cache without it is an interrupted install
DEFAULT_HEAP_MB = 384


class KafkaUnavailable(MutualaidError):
    """Apache Kafka cannot run here (no Java, no jars and no Maven to fetch them); the message
    says what to install. Tests skip on it."""


class KafkaServerError(MutualaidError):
    """A node failed to format or start; the message ends with the last lines of its log."""


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version the pom pins (its kafka.version property)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    found = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    version = (found.text or "").strip() if found is not None else ""
    if not version:
        raise KafkaUnavailable(f"{pom} has no <kafka.version> property")
    return version


def cache_root() -> Path:
    """$MUTUALAID_CACHE_DIR, else $XDG_CACHE_HOME/mutualaid, else ~/.cache/mutualaid."""
    if os.environ.get("MUTUALAID_CACHE_DIR"):
        return Path(os.environ["MUTUALAID_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mutualaid"


def jars_dir(version: str | None = None) -> Path:
    return cache_root() / f"kafka-{version or kafka_version()}"


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found or not os.access(found, os.X_OK):
        raise KafkaUnavailable(
            "Apache Kafka needs Java 17 or newer: no `java` on PATH (apt-get install "
            "openjdk-17-jre-headless)"
        )
    return found


def install(version: str | None = None, *, quiet: bool = True) -> Path:
    """The directory of the Kafka jars, fetched with Maven the first time. Once complete it is
    never fetched again, so later runs need no network."""
    version = version or kafka_version()
    target = jars_dir(version)
    if (target / COMPLETE).exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailable(
            f"Apache Kafka {version} is not in {target} and there is no `mvn` to fetch it "
            "(apt-get install maven, then: python -m mutualaid.kafkaserver install)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Fetch next to the target and rename, so a half-finished copy is never taken for one.
    partial = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    argv = [mvn, "-B", "-f", str(POM), "dependency:copy-dependencies"]
    argv += [f"-DoutputDirectory={partial}", f"-Dkafka.version={version}"]
    if quiet:
        argv.insert(1, "-q")
    try:
        done = subprocess.run(argv, capture_output=quiet, text=True, timeout=900)
        if done.returncode != 0:
            tail = "\n".join((done.stdout or "").splitlines()[-15:])
            raise KafkaUnavailable(f"Maven could not fetch Apache Kafka {version}:\n{tail}")
        (partial / COMPLETE).write_text(version + "\n")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, never starting
    with "-" (which command lines take for an option; Kafka's own ids avoid it the same way)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


# Settings every node gets, and why. Callers' broker_config overrides them.
def _cluster_defaults(nodes: int) -> dict[str, str]:
    copies = str(min(3, nodes))
    in_sync = str(min(2, nodes))
    return {
        # The internal topics must fit the cluster: a single node cannot hold three copies.
        "offsets.topic.replication.factor": copies,
        "transaction.state.log.replication.factor": copies,
        "transaction.state.log.min.isr": in_sync,
        "share.coordinator.state.topic.replication.factor": copies,
        "share.coordinator.state.topic.min.isr": in_sync,
        # A write with acks=all needs two copies on a three-node cluster, as in production.
        "min.insync.replicas": in_sync,
        # 50 offsets partitions (the default) take seconds to create on a first group join
        # on two cores; 8 are plenty for one machine.
        "offsets.topic.num.partitions": "8",
        # A first consumer group join otherwise waits 3 s for more members.
        "group.initial.rebalance.delay.ms": "0",
        # The log cleaner (compacted hotlists) takes a 128 MiB key buffer on the heap by
        # default: half a small heap, which then spent a minute in full GCs and fenced the
        # broker. 16 MiB dedupes ~700,000 keys per pass, plenty for one machine's hotlists.
        "log.cleaner.dedupe.buffer.size": str(16 * 2**20),
    }


SCRAM = "SCRAM-SHA-512"
# A secured cluster's listeners: SSL (mTLS, client certificates required) first, which the
# brokers also replicate over with their own certificate, then SASL_SSL (SCRAM logins).
SECURE_LISTENERS = {"SSL": "SSL", "SASL_SSL": "SASL_SSL"}
BROKER_PRINCIPAL = "broker"  # the brokers' own certificate; a super user as Kafka needs
ADMIN_PRINCIPAL = "admin"


def security_properties(
    tls_dir: Path, super_users: Sequence[str] = (ADMIN_PRINCIPAL,)
) -> dict[str, str]:
    """What a secured node adds to its server.properties (``tls_dir`` as ``mutualaid.certs``
    fills it). docker-compose.yml carries the same keys (tests/test_compose.py checks it)."""
    supers = [BROKER_PRINCIPAL, *super_users]
    return {
        # Default deny: a principal may do only what an ACL allows (super users: anything).
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(f"User:{u}" for u in supers),
        # PEM files straight from mutualaid.certs, no keytool or PKCS12 step.
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls_dir / f"{BROKER_PRINCIPAL}.keystore.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls_dir / "ca.pem"),
        # A client certificate's CN is its principal: CN=router is User:router.
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
        "listener.name.ssl.ssl.client.auth": "required",
        "listener.name.controller.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": SCRAM,
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": SCRAM,
        # No credentials here: SCRAM users live in the cluster metadata (format --add-scram,
        # or AdminClient.alter_user_scram_credentials).
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
    }


def docker_name(key: str) -> str:
    """The environment variable the apache/kafka image turns into server property ``key``
    (``_`` is ``___``, ``-`` is ``__``, ``.`` is ``_``)."""
    return "KAFKA_" + key.replace("_", "___").replace("-", "__").replace(".", "_").upper()


@dataclass(frozen=True)
class Security:
    """A secured cluster: mTLS and SCRAM listeners, the StandardAuthorizer, TLS between nodes.

    ``tls_dir`` holds the CA and the broker and admin certificates (``make`` issues them);
    ``scram_users`` are created when storage is formatted."""

    tls_dir: Path
    scram_users: Mapping[str, str] = field(default_factory=dict)
    super_users: tuple[str, ...] = (ADMIN_PRINCIPAL,)

    @classmethod
    def make(
        cls, tls_dir: Path, scram_users: Mapping[str, str], host: str = "127.0.0.1"
    ) -> Security:
        certs.ensure_ca(tls_dir)
        certs.issue(tls_dir, BROKER_PRINCIPAL, (host, "localhost"))
        certs.issue(tls_dir, ADMIN_PRINCIPAL)
        return cls(tls_dir, dict(scram_users))

    def client(self, principal: str) -> dict[str, str]:
        """librdkafka settings to log in as ``principal`` with its certificate (mTLS)."""
        return certs.client_properties(self.tls_dir, principal)

    def scram(self, user: str, password: str) -> dict[str, str]:
        """librdkafka settings to log in as ``user`` with SCRAM over TLS."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM,
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": str(self.tls_dir / "ca.pem"),
        }


_LOG4J = """\
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
# Every request and state change at INFO is megabytes per test run.
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


@dataclass
class Node:
    node_id: int
    ports: dict[str, int]  # listener name -> port
    controller_port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of the node's JVM (0 if it is not running)."""
        if not self.running():
            return 0
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


@dataclass
class KafkaCluster:
    """``nodes`` KRaft nodes (broker and controller each) on loopback ports below the ephemeral
    range. Use as a context manager, or start()/stop().

    ``listeners`` maps a listener name to its security protocol; the first is the one
    ``bootstrap_servers`` names and brokers replicate over. ``port`` pins the first listener's
    port on a single node (``mutualaid up``); otherwise ports are chosen free.
    """

    nodes: int = 1
    listeners: Mapping[str, str] = field(default_factory=lambda: {"PLAINTEXT": "PLAINTEXT"})
    broker_config: Mapping[str, str] = field(default_factory=dict)
    heap_mb: int = DEFAULT_HEAP_MB
    root: Path | None = None  # kept after stop() if given; a temporary directory otherwise
    port: int | None = None
    host: str = "127.0.0.1"
    security: Security | None = None
    started_in: float = 0.0  # seconds from start() to every node answering
    _nodes: list[Node] = field(default_factory=list, init=False)
    _own_root: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.security is not None and dict(self.listeners) == {"PLAINTEXT": "PLAINTEXT"}:
            self.listeners = dict(SECURE_LISTENERS)

    def client_config(self) -> dict[str, str | int | float | bool]:
        """How this module's own clients (readiness, warm-up, admin) connect: as the admin,
        by certificate, on a secured cluster."""
        config: dict[str, str | int | float | bool] = {"bootstrap.servers": self.bootstrap_servers}
        if self.security is not None:
            config |= self.security.client(ADMIN_PRINCIPAL)
        return config

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap_for(next(iter(self.listeners)))

    def bootstrap_for(self, listener: str) -> str:
        return ",".join(f"{self.host}:{n.ports[listener]}" for n in self._nodes)

    @property
    def members(self) -> list[Node]:
        return list(self._nodes)

    def node(self, node_id: int) -> Node:
        return next(n for n in self._nodes if n.node_id == node_id)

    @property
    def _root(self) -> Path:
        """The cluster's directory, which start() sets first."""
        if self.root is None:
            raise KafkaServerError("the cluster has no directory: start() it first")
        return self.root

    def start(self, timeout: float = 120.0) -> KafkaCluster:
        java = java_binary()
        jars = install()
        began = time.monotonic()
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="mutualaid-kafka-"))
            self._own_root = True
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "log4j2.properties").write_text(_LOG4J)
        self._nodes = self._plan()
        try:
            self._format(java, jars, timeout)
            for node in self._nodes:
                self._launch(java, jars, node)
            self._await_ready(began + timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def _plan(self) -> list[Node]:
        names = list(self.listeners)
        if "CONTROLLER" in names:
            raise ValueError("CONTROLLER is the controllers' own listener; name yours otherwise")
        nodes = []
        for node_id in range(1, self.nodes + 1):
            if self.port is not None and self.nodes == 1:
                if not port_is_free(self.host, self.port):
                    raise KafkaServerError(
                        f"port {self.port} on {self.host} is already in use: another broker "
                        "(or an earlier `mutualaid up`) is running. Stop it, or choose another "
                        "port with MUTUALAID_BROKER_PORT"
                    )
                ports = {names[0]: self.port}
                rest = free_port(self.host, span=len(names))
                ports |= {name: rest + i for i, name in enumerate(names[1:])}
                controller = rest + len(names) - 1
            else:
                base = free_port(self.host, span=len(names) + 1)
                ports = {name: base + i for i, name in enumerate(names)}
                controller = base + len(names)
            directory = self._root / f"node-{node_id}"
            (directory / "data").mkdir(parents=True, exist_ok=True)
            nodes.append(Node(node_id, ports, controller, directory))
        return nodes

    def _properties(self, node: Node) -> dict[str, str]:
        voters = ",".join(f"{n.node_id}@{self.host}:{n.controller_port}" for n in self._nodes)
        listeners = [f"{name}://{self.host}:{port}" for name, port in node.ports.items()]
        controller = "PLAINTEXT" if self.security is None else "SSL"
        protocols = {**self.listeners, "CONTROLLER": controller}
        secured = (
            {}
            if self.security is None
            else security_properties(self.security.tls_dir, self.security.super_users)
        )
        return {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": ",".join([*listeners, f"CONTROLLER://{self.host}:{node.controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": next(iter(self.listeners)),
            "log.dirs": str(node.directory / "data"),
            **_cluster_defaults(self.nodes),
            **secured,
            **self.broker_config,
        }

    def server_properties(self, node_id: int = 1) -> dict[str, str]:
        """The server.properties a node gets (planned without starting anything if need be):
        what docker-compose.yml is checked against."""
        if not self._nodes:
            if self.root is None:
                raise ValueError("give the cluster a root directory to plan its nodes in")
            self._nodes = self._plan()
        return self._properties(self.node(node_id))

    def _write_properties(self, node: Node) -> Path:
        path = node.directory / "server.properties"
        lines = [f"{key}={value}" for key, value in self._properties(node).items()]
        path.write_text("\n".join(lines) + "\n")
        return path

    def _jvm(self, java: str, jars: Path, heap_mb: int, *flags: str) -> list[str]:
        return [
            java,
            f"-Xms{heap_mb}m",
            f"-Xmx{heap_mb}m",
            *flags,
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._root / 'log4j2.properties'}",
            "-cp",
            str(jars / "*"),  # the JVM expands the wildcard itself
        ]

    def _format(self, java: str, jars: Path, timeout: float) -> None:
        """kafka-storage format for every node at once (a JVM each: about 2 s of CPU)."""
        cid = cluster_id()
        # The format tool runs for seconds: the quick JIT tier and a small serial heap start
        # fastest.
        jvm = self._jvm(java, jars, 128, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
        procs = []
        for node in self._nodes:
            argv = [*jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={cid}"]
            argv += ["-c", str(self._write_properties(node))]
            for user, password in (self.security.scram_users if self.security else {}).items():
                # (On this command line for the seconds format runs: test clusters only;
                # production adds users with the AdminClient.)
                argv += ["--add-scram", f"{SCRAM}=[name={user},password={password}]"]
            procs.append(spawn(argv, log=node.directory / "format.log"))
        deadline = time.monotonic() + timeout
        for node, proc in zip(self._nodes, procs, strict=True):
            try:
                code = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop_all(procs, timeout=1)
                raise KafkaServerError(
                    f"formatting node {node.node_id} took over {timeout:.0f}s"
                ) from None
            if code != 0:
                raise KafkaServerError(
                    f"kafka-storage format failed for node {node.node_id} (exit {code}):\n"
                    + _tail(node.directory / "format.log")
                )

    def _launch(self, java: str, jars: Path, node: Node) -> None:
        # Kafka's own start script's collector settings: short pauses on a small heap.
        argv = self._jvm(java, jars, self.heap_mb, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20")
        node.proc = spawn(
            [*argv, "kafka.Kafka", str(node.directory / "server.properties")],
            log=node.log,
            # A JVM whose parent died may hang in its shutdown hooks; nothing here needs them.
            parent_death_signal=signal.SIGKILL,
        )

    def _await_ready(self, deadline: float) -> None:
        """Every node answers metadata on its first listener and sees the whole cluster."""
        first = next(iter(self.listeners))
        if self.listeners[first] != "PLAINTEXT" and self.security is None:
            # Secured by the caller's own settings: it checks with its own credentials.
            self._await_ports(deadline)
            return
        for node in self._nodes:
            address = f"{self.host}:{node.ports[first]}"
            # Silent: librdkafka logs every refused connection while the node starts.
            config = self.client_config() | {"bootstrap.servers": address, "log_level": 0}
            probe = AdminClient(config)
            while True:
                self._check_alive()
                try:
                    if len(probe.list_topics(timeout=1.0).brokers) == self.nodes:
                        break
                except KafkaException:
                    pass
                if time.monotonic() >= deadline:
                    raise KafkaServerError(
                        f"node {node.node_id} did not answer at {address} in time:\n"
                        + _tail(node.log)
                    )
                time.sleep(0.2)

    def _await_ports(self, deadline: float) -> None:
        while any(port_is_free(self.host, p) for n in self._nodes for p in n.ports.values()):
            self._check_alive()
            if time.monotonic() >= deadline:
                raise KafkaServerError("the nodes did not open their listeners in time")
            time.sleep(0.2)

    def _check_alive(self) -> None:
        for node in self._nodes:
            if node.proc is not None and node.proc.poll() is not None:
                raise KafkaServerError(
                    f"node {node.node_id} exited with code {node.proc.returncode}:\n"
                    + _tail(node.log)
                )

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no controlled shutdown, no flush, as a crash or power loss."""
        node = self.node(node_id)
        assert node.proc is not None, f"node {node_id} is not running"
        os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait()

    def restart(self, node_id: int, timeout: float = 90.0) -> None:
        """Start a stopped or killed node again on its ports, with its data."""
        node = self.node(node_id)
        if node.running():
            raise KafkaServerError(f"node {node_id} is still running")
        self._launch(java_binary(), install(), node)
        self._await_ready(time.monotonic() + timeout)

    def warm_up(self, timeout: float = 60.0) -> None:
        """Produce and fetch one record. On a fresh JVM the first produce takes seconds (7 s
        seen on two busy cores) while the broker loads and compiles that path: pay it here,
        not inside a test's deadline or a benchmark's clock."""
        admin = self.admin()
        for future in admin.create_topics([NewTopic("warm-up", 1, 1)]).values():
            with contextlib.suppress(KafkaException):  # already there
                future.result(timeout)
        producer = Producer(self.client_config())
        producer.produce("warm-up", b"x")
        if producer.flush(timeout):
            raise KafkaServerError(f"a first record was not acknowledged in {timeout:.0f}s")
        consumer = Consumer({**self.client_config(), "group.id": "warm-up"})
        try:
            consumer.assign([TopicPartition("warm-up", 0, OFFSET_BEGINNING)])
            deadline = time.monotonic() + timeout
            while consumer.poll(0.5) is None:
                if time.monotonic() >= deadline:
                    raise KafkaServerError(f"a first record was not fetched in {timeout:.0f}s")
        finally:
            consumer.close()

    def admin(self) -> AdminClient:
        return AdminClient(self.client_config())

    def memory(self) -> dict[int, int]:
        """Resident bytes per running node."""
        return {n.node_id: n.rss_bytes() for n in self._nodes if n.running()}

    def running(self) -> bool:
        return bool(self._nodes) and all(n.running() for n in self._nodes)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every node (a controlled shutdown), SIGKILL those still up at the deadline,
        then delete the data unless the caller gave the directory."""
        stop_all([n.proc for n in self._nodes if n.proc is not None], timeout=timeout)
        for node in self._nodes:
            node.proc = None
        if self._own_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
            self._own_root = False

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mutualaid.kafkaserver", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="fetch the pinned Kafka jars with Maven (once)")
    run = sub.add_parser("run", help="run Kafka nodes until Ctrl-C")
    run.add_argument("--nodes", type=int, default=1)
    run.add_argument("--port", type=int, help="first listener's port (single node)")
    args = parser.parse_args(argv)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # taken by sigwait below
    try:
        if args.command == "install":
            first = not (jars_dir() / COMPLETE).exists()
            if first:
                print(f"installing Apache Kafka {kafka_version()} with Maven ...", file=sys.stderr)
            print(install())
            return 0
        with KafkaCluster(nodes=args.nodes, port=args.port) as cluster:
            memory = ", ".join(f"{b / 2**20:.0f} MiB" for b in cluster.memory().values())
            print(
                f"Apache Kafka {kafka_version()} at {cluster.bootstrap_servers}: "
                f"{args.nodes} node(s) up in {cluster.started_in:.1f}s, resident {memory}; "
                "Ctrl-C stops it",
                flush=True,
            )
            signal.sigwait(stop_signals)
        return 0
    except (KafkaUnavailable, KafkaServerError) as exc:
        print(f"kafkaserver: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
