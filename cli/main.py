"""The ``mutualaid`` command: the parser, assembled from one module per command family, and
the one place a :class:`MutualaidError` becomes an exit code.

The ``cli`` package is the composition root: the only place that reaches into producers/,
streams/ and consumers/ (the core, mutualaid/, imports none of them), and only inside the
command that needs them, so that starting one stage never imports the others.
"""

from __future__ import annotations

import argparse
import signal
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
    # Piped into `head`, exit quietly like any Unix tool.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        settings = load_settings(args.config)
        result: int = args.handler(settings, args)
        return result
    except MutualaidError as exc:  # the one place an error becomes an exit code
        print(f"mutualaid: {exc.prefix}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


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
