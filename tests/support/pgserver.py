"""A throwaway PostgreSQL server from the distribution's binaries, for the tests and benchmarks
of the PostgreSQL paths (SQL polling, the PostgreSQL index). Never for production data: it
trusts every local connection and is deleted when stopped.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mutualaid.broker import free_port


def postgres_bindir() -> Path | None:
    """The directory of pg_ctl and initdb: on PATH, or Debian's newest /usr/lib/postgresql."""
    found = shutil.which("pg_ctl") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)), None
    )
    return Path(os.path.realpath(found)).parent if found else None


@contextmanager
def throwaway_postgres(bindir: Path) -> Iterator[str]:
    """A server in a temporary directory, on a free port, trust auth, listening only on a Unix
    socket; yields its libpq URL (postgresql://postgres@/postgres?host=...&port=...).

    initdb refuses to run as root, so as root the server runs as the ``postgres`` user that the
    Debian package creates.
    """
    home = Path(tempfile.mkdtemp(prefix="mutualaid-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(home, "postgres", "postgres")
    port = free_port()
    data, log = home / "data", home / "server.log"

    def pg(*args: str) -> None:
        subprocess.run(as_user + list(args), check=True, capture_output=True, timeout=120)

    try:
        pg(
            str(bindir / "initdb"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-locale",
            "-E",
            "UTF8",
            "-D",
            str(data),
        )
        options = f"-p {port} -k {home} -c listen_addresses=''"
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
        try:
            yield f"postgresql://postgres@/postgres?host={home}&port={port}"
        finally:
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)
