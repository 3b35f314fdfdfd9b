"""Checkpoints: how far a connector has read a source, stored as data the connector owns.

A checkpoint is written only after the broker acknowledged every event before it, and written
atomically (temp file, fsync, rename), so a crash at any instant leaves either the old or the new
position, never a torn one. Resuming from an old position republishes a few events with the same
record ids and versions, which every downstream stage treats as a no-op.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class FilePosition:
    """A byte offset into a source file, the line number there, and the file it belongs to.

    ``fingerprint`` identifies the file by its first bytes, so a file replaced under the same
    name is read from the start rather than from an offset that means nothing in it.
    """

    fingerprint: str
    offset: int
    line: int


class CheckpointStore:
    """One JSON file per connector under ``<data_dir>/checkpoints/``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def load(self, name: str) -> FilePosition | None:
        try:
            data = json.loads(self.path(name).read_text())
        except FileNotFoundError:
            return None
        return FilePosition(**data["position"])

    def save(self, name: str, position: FilePosition, source: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(name)
        tmp = target.with_suffix(".tmp")
        record = {
            "source": source,
            "position": asdict(position),
            "saved_at": datetime.now(UTC).isoformat(),
        }
        with open(tmp, "w") as out:
            json.dump(record, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
