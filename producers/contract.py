"""What a connector's adapter deals in: the items it is given, the events it returns, and how
it refuses an item. A leaf module, so that adapters depend on it and not on the Kafka runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mutualaid.errors import MutualaidError, UsageError
from mutualaid.topics import Kind

if TYPE_CHECKING:  # for the annotation only: the contract imports no other producers module
    from producers.checkpoint import Position


@dataclass(frozen=True)
class SourceItem:
    """One raw item and the position just after it (where a resumed read starts).

    ``raw`` is what a dead letter keeps; ``line`` the line (or document) number; ``where`` says
    where the item is in its source when a line number does not ("file 0001.json"); ``record``
    is an already-structured item (a database row) that the adapter reads instead of ``raw``.
    """

    raw: bytes
    line: int
    after: Position | None  # None for items pushed to us (HTTP): nothing to resume from
    where: str | None = None
    record: Any = None

    @property
    def position(self) -> str:
        return self.where or f"line {self.line}"


class Rejected(UsageError):
    """An item the adapter cannot turn into an event; it goes to dlq.producers."""

    def __init__(self, error_type: str, reason: str) -> None:
        self.error_type = error_type
        self.reason = reason
        super().__init__(f"{error_type}: {reason}")


class Skipped(MutualaidError):
    """A valid item that holds no record (a NIBRS zero report): no event, no dead letter."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Adapter(Protocol):
    kind: Kind
    source_system: str

    def to_event(self, item: SourceItem) -> dict:
        """The event for this item, or raise Rejected (or Skipped)."""
        ...


@runtime_checkable
class StatefulAdapter(Protocol):
    """An adapter whose mapping depends on what it mapped before; the state is plain JSON."""

    def state(self) -> dict[str, Any]:
        """A snapshot of the state now (not shared with later changes)."""
        ...

    def restore(self, state: dict[str, Any] | None) -> None:
        """Start over from a snapshot (None: from nothing, as for a new checkpoint)."""
        ...
