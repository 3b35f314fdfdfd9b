"""Claims: which running process acts as what on this host, so that two never do at once.

A claim is an exclusive ``flock`` on a file, held until the process ends; the kernel releases it
however the process ends (a SIGKILL, a crash), so a claim never outlives its process and a
restart can take it at once. The file stays, holding the last claimant's pid, for whoever is
refused to name. Used for an audit writer's instance (``mutualaid.auditlog``) and a connector's
checkpoint (``producers.runner``): two processes acting as one would fork an audit chain, or
publish every record twice.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mutualaid.private import open_private, private_dir

# The files this process holds locked, open until it exits.
_held: dict[Path, int] = {}


def claim(path: Path) -> bool:
    """Claim ``path`` for this process; False if another process holds it. A process that
    holds it already (a stage built again in one process, as tests do) holds it still."""
    if path in _held:
        return True
    private_dir(path.parent)
    fd = open_private(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[path] = fd
    return True


def claimant(path: Path) -> str:
    """The pid of the process that claimed ``path`` last ("?" if it cannot be read)."""
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"
