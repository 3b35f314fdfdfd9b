"""What several command families share: the registry and policy, an agency's ORI, a stop
event for long-running stages, and ISO 8601 times as arguments."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime

from mutualaid.settings import Settings


def agency(settings: Settings, ori: str) -> str:
    """The ORI of an agency in the registry, or UnknownAgency (main reports it)."""
    from mutualaid.agencies import load_registry

    return load_registry(settings.agencies_file).get(ori).ori


def registry_and_policy(settings: Settings):
    from mutualaid.agencies import load_registry
    from mutualaid.policy import load_policy_from

    registry = load_registry(settings.agencies_file)
    return registry, load_policy_from(settings, registry)


def configure_logging(settings: Settings) -> None:
    """Warnings and errors to stderr, with time, level and logger (a stage's log is its
    stderr); ``log_level: info`` adds what a stage is doing (partitions assigned, batches
    indexed), for someone finding out why a record has not arrived."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("mutualaid").setLevel(settings.log_level.upper())  # not the libraries'


def stop_event() -> threading.Event:
    """Set on SIGTERM or Ctrl-C, so loops finish their batch and commit before exiting."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def when(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=UTC)
