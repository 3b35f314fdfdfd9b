"""Where a connector's items come from: a small protocol, and the file-based sources.

A source knows three things and nothing about Kafka: where to start given the last checkpoint,
how to iterate its items (each with the position *after* it, which is what a resumed read needs),
and how to describe itself in a dead letter. The runner does the rest (batching, waiting for
acknowledgements, checkpointing, dead letters), the same way for every source:

- ``LineFile``: a CSV or NDJSON export read line by line (position: byte offset + line).
- ``DocumentDirectory``: a drop directory, one JSON or XML document per file (position: the file
  names done, each with a fingerprint of its content).
- ``producers.sqlpoll.SqlPoller``: changed rows of a table (position: updated-at + primary key).
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from producers.checkpoint import DirectoryPosition, FilePosition, Position
from producers.contract import SourceItem

FOLLOW_POLL_SECONDS = 0.5


class Source(Protocol):
    """What the runner needs of a source."""

    @property
    def description(self) -> str:
        """Names the source in dead letters and checkpoints, e.g. the file's path."""
        ...

    def start(self, checkpoint: Position | None) -> Position:
        """Where to begin: the checkpoint if it belongs to this source, else the beginning."""
        ...

    def items(self, start: Position, follow: Callable[[], bool]) -> Iterator[SourceItem]:
        """Items from ``start``; while ``follow()`` is true, wait at the end for more."""
        ...


class LineFile:
    """A text export read line by line from a byte offset, header kept aside."""

    def __init__(self, path: Path, has_header: bool = True) -> None:
        self.path = path
        self.has_header = has_header
        with open(path, "rb") as f:
            head = f.read(4096)
        self.fingerprint = hashlib.sha256(head.split(b"\n", 1)[0] + head[:256]).hexdigest()[:16]
        first = head.split(b"\n", 1)[0] if has_header else b""
        self.header = first.rstrip(b"\r")
        self._body_start = len(first) + 1 if has_header else 0

    @property
    def description(self) -> str:
        return str(self.path)

    def start(self, checkpoint: Position | None) -> FilePosition:
        if isinstance(checkpoint, FilePosition) and checkpoint.fingerprint == self.fingerprint:
            return checkpoint
        return FilePosition(self.fingerprint, self._body_start, 1 if self.has_header else 0)

    def items(self, start: Position, follow: Callable[[], bool]) -> Iterator[SourceItem]:
        """Lines from ``start``; while ``follow()`` is true, wait at the end for more."""
        assert isinstance(start, FilePosition)
        with open(self.path, "rb") as f:
            f.seek(start.offset)
            line_no = start.line
            while True:
                raw = f.readline()
                if raw.endswith(b"\n") or (raw and not follow()):
                    line_no += 1
                    after = FilePosition(self.fingerprint, f.tell(), line_no)
                    if raw.strip():
                        yield SourceItem(raw.rstrip(b"\r\n"), line_no, after)
                    continue
                # End of file, or a line still being written: go back to its start and wait.
                f.seek(f.tell() - len(raw))
                if not follow():
                    return
                time.sleep(FOLLOW_POLL_SECONDS)


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class DocumentDirectory:
    """A drop directory: one document per file, read in file-name order.

    Writers must drop a document complete, by writing it under another name and renaming it
    into place: names starting with ``.`` or ending in ``.tmp`` or ``.part`` are never read.
    A file already published is read again only if its content changed. Names of files that
    have left the directory (archived by the operator) are dropped from the checkpoint.
    """

    IGNORED = (".tmp", ".part")

    def __init__(self, directory: Path, pattern: str = "*") -> None:
        self.directory = directory
        self.pattern = pattern

    @property
    def description(self) -> str:
        return str(self.directory / self.pattern)

    def _names(self) -> list[str]:
        return sorted(
            p.name
            for p in self.directory.iterdir()
            if p.is_file()
            and fnmatch.fnmatchcase(p.name, self.pattern)
            and not p.name.startswith(".")
            and not p.name.endswith(self.IGNORED)
        )

    def start(self, checkpoint: Position | None) -> DirectoryPosition:
        if not isinstance(checkpoint, DirectoryPosition):
            return DirectoryPosition()
        present = set(self._names())
        return DirectoryPosition(base={n: f for n, f in checkpoint.done.items() if n in present})

    def items(self, start: Position, follow: Callable[[], bool]) -> Iterator[SourceItem]:
        assert isinstance(start, DirectoryPosition)
        done = dict(start.done)
        added: list[tuple[str, str]] = []
        # (size, mtime) of each file as last fingerprinted: an unchanged file is not read again
        # on every poll, which matters when a followed directory holds thousands of documents.
        seen: dict[str, tuple[int, int]] = {}
        number = 0
        while True:
            found = False
            for name in self._names():
                path = self.directory / name
                try:
                    stat = path.stat()
                    if seen.get(name) == (stat.st_size, stat.st_mtime_ns) and name in done:
                        continue
                    raw = path.read_bytes()
                except FileNotFoundError:  # moved away between listing and reading
                    continue
                seen[name] = (stat.st_size, stat.st_mtime_ns)
                mark = fingerprint(raw)
                if done.get(name) == mark:
                    continue
                found = True
                done[name] = mark
                added.append((name, mark))
                number += 1
                after = DirectoryPosition(start.base, added, len(added))
                yield SourceItem(raw, number, after, where=f"file {name}")
            if found:
                continue
            if not follow():
                return
            time.sleep(FOLLOW_POLL_SECONDS)
