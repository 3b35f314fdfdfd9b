"""The ``mutualaid`` command: the parser, assembled from one module per command family, and
the one place a :class:`MutualaidError` becomes an exit code.

The ``cli`` package is the composition root: the only place that reaches into producers/,
streams/ and consumers/ (the core, mutualaid/, imports none of them), and only inside the
command that needs them, so that starting one stage never imports the others.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from pathlib import Path

from cli import admin, records, sources, stack, stages
from mutualaid.errors import MutualaidError
from mutualaid.settings import load_settings

# In the order `mutualaid --help` lists them: the data flow, then administration.
FAMILIES = (stack, sources, stages, records, admin)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        result: int = args.handler(settings, args)
        return result
    except MutualaidError as exc:  # the one place an error becomes an exit code
        print(f"mutualaid: {exc.prefix}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Piped into `head`, which has read enough: exit quietly like any Unix tool. Not by
        # restoring SIGPIPE's default action, as this once did: that killed a long-running
        # stage, with nothing in its log, whenever a client of its HTTP servers (metrics, API,
        # console) hung up before the answer was written.
        if not _stdout_gone():
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit's flush
        return 128 + 13  # what a shell shows for a writer stopped by SIGPIPE


def _stdout_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError):  # no descriptor (replaced, closed)
        return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mutualaid",
        description="Share CAD, ALPR and RMS records between public-safety agencies under "
        "written sharing agreements.",
    )
    parser.add_argument("--config", type=Path, help="settings file (YAML); default: none")
    sub = parser.add_subparsers(required=True, metavar="command")
    for family in FAMILIES:
        family.register(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
