"""Child processes that die with their parent.

``mutualaid up`` runs the broker and every stage as children. If the supervisor is killed
outright (SIGKILL, OOM), Linux's parent-death signal still takes the children down, so a demo
never leaves an orphan broker holding its port.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mutualaid.private import open_private

PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:  # pragma: no cover
    # Runs in the child between fork and exec.
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def spawn(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    parent_death_signal: signal.Signals = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start argv in its own process group, output to ``log`` (or inherited); it gets
    ``parent_death_signal`` if this process dies first."""
    # Owner only: stage logs name users, searches' reasons and login failures.
    out = os.fdopen(open_private(log, os.O_WRONLY | os.O_APPEND), "ab") if log is not None else None
    try:
        return subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            preexec_fn=functools.partial(_die_with_parent, parent_death_signal),
            start_new_session=True,
        )
    finally:
        if out is not None:
            out.close()


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM the child's group, wait up to ``timeout``, then SIGKILL it. Returns the exit code.

    The deadline matters: a process stuck starting (a broker that does not answer) can sit
    past its SIGTERM.
    """
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
    return proc.wait()


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM every child's group at once, then SIGKILL those still running at the deadline:
    children that shut down together (a cluster's nodes) take one timeout, not one each."""
    for proc in procs:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
