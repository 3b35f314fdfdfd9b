"""Files only this site's own account may read: indexes (decrypted partner data and the search
log), token hashes, stage logs. Created 0600 in directories made 0700, and put right when an
earlier version left them readable by group or others.

Modes are set on the paths themselves rather than through the umask, which is process-wide and
would change every other file the process writes.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """``path`` as a directory (with its missing parents) that only the owner can enter."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """``path`` as a file (created empty if missing) that only the owner can read or write.

    SQLite gives its -wal and -shm files the mode of the database file, so making the database
    file private first covers them too.
    """
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    if path.stat().st_mode & 0o777 != FILE_MODE:
        os.chmod(path, FILE_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` creating the file 0600 (an existing file is made 0600 too)."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd
