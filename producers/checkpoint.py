"""Checkpoints: how far a connector has read a source, stored as data the connector owns.

A checkpoint is written only after the broker acknowledged every event before it, and written
atomically (temp file, fsync, rename), so a crash at any instant leaves either the old or the new
position, never a torn one. With the position it keeps ``topic_offsets``: per partition of the
connector's topic, the offset after its last acknowledged event. Events produced after the
checkpoint can only sit at or after those offsets, which is where a restart looks for them
(``producers.runner``), so that nothing is published twice.

Each kind of source has its own position type, stored Debezium-style as plain JSON with a
``type`` tag, so an operator can read (and, if they must, edit) where a connector stands:

    {"source": "/exports/alpr.csv", "type": "file",
     "position": {"fingerprint": "9c1e...", "offset": 81234, "line": 1001},
     "topic_offsets": {"0": 2511, "1": 2498, "2": 2530, "3": 2461}, "saved_at": "..."}
    {"source": "/drop/cad", "type": "directory",
     "position": {"done": {"0001.json": "5d0a...", "0002.json": "e31f..."}}, ...}
    {"source": "sqlite:///rms.db table reports", "type": "watermark",
     "position": {"updated_at": "2026-11-24T21:14:03.120000", "last_id": 42}, ...}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True)
class FilePosition:
    """A byte offset into a source file, the line number there, and the file it belongs to.

    ``fingerprint`` identifies the file by its first bytes, so a file replaced under the same
    name is read from the start rather than from an offset that means nothing in it.
    """

    type: ClassVar[str] = "file"
    fingerprint: str
    offset: int
    line: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FilePosition:
        return cls(str(data["fingerprint"]), int(data["offset"]), int(data["line"]))


@dataclass(frozen=True)
class DirectoryPosition:
    """The documents of a drop directory already published: file name -> content fingerprint.

    A name whose content changed (a new export written under an old name) is read again. The
    entries are ``base`` (from the checkpoint) plus the first ``count`` of ``added``, a list the
    source only appends to, so a position per document costs nothing to make.
    """

    type: ClassVar[str] = "directory"
    base: Mapping[str, str] = field(default_factory=dict)
    added: list[tuple[str, str]] = field(default_factory=list)
    count: int = 0

    @property
    def done(self) -> dict[str, str]:
        return {**self.base, **dict(self.added[: self.count])}

    def to_json(self) -> dict[str, Any]:
        return {"done": dict(sorted(self.done.items()))}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DirectoryPosition:
        return cls(base={str(k): str(v) for k, v in data["done"].items()})


@dataclass(frozen=True)
class WatermarkPosition:
    """The last row published by a SQL poller: its updated-at value and primary key.

    The next poll asks for rows strictly after ``(updated_at, last_id)`` in that order, so rows
    sharing one timestamp are neither skipped nor read twice.
    """

    type: ClassVar[str] = "watermark"
    updated_at: str | None  # ISO 8601 as the database returned it (naive or with an offset)
    last_id: int | str | None

    def to_json(self) -> dict[str, Any]:
        return {"updated_at": self.updated_at, "last_id": self.last_id}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WatermarkPosition:
        return cls(data.get("updated_at"), data.get("last_id"))


Position = FilePosition | DirectoryPosition | WatermarkPosition
POSITION_TYPES: dict[str, type[FilePosition | DirectoryPosition | WatermarkPosition]] = {
    t.type: t for t in (FilePosition, DirectoryPosition, WatermarkPosition)
}


class CheckpointStore:
    """One JSON file per connector under ``<data_dir>/checkpoints/``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def load(self, name: str) -> Position | None:
        try:
            data = json.loads(self.path(name).read_text())
        except FileNotFoundError:
            return None
        # Checkpoints written before positions were typed are file positions.
        return POSITION_TYPES[data.get("type", "file")].from_json(data["position"])

    def topic_offsets(self, name: str) -> dict[int, int] | None:
        """Per partition, the offset after which this connector's unconfirmed events can be."""
        try:
            data = json.loads(self.path(name).read_text())
        except FileNotFoundError:
            return None
        marks = data.get("topic_offsets")
        return None if marks is None else {int(p): o for p, o in marks.items()}

    def adapter_state(self, name: str) -> dict[str, Any] | None:
        """What a stateful adapter kept with the checkpoint (``producers.runner``), if any."""
        try:
            data = json.loads(self.path(name).read_text())
        except FileNotFoundError:
            return None
        return data.get("adapter_state")

    def save(
        self,
        name: str,
        position: Position,
        source: str,
        topic_offsets: Mapping[int, int],
        adapter_state: Mapping[str, Any] | None = None,
    ) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(name)
        tmp = target.with_suffix(".tmp")
        record = {
            "source": source,
            "type": position.type,
            "position": position.to_json(),
            "topic_offsets": {str(p): o for p, o in sorted(topic_offsets.items())},
            "saved_at": datetime.now(UTC).isoformat(),
        }
        if adapter_state is not None:
            record["adapter_state"] = adapter_state
        with open(tmp, "w") as out:
            json.dump(record, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
