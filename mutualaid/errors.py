"""The one base of every error mutualaid raises on purpose, and the exit code each one means.

A stage catches the errors it can handle (a dead letter, a retry); whatever reaches the command
line is reported by ``cli.main.main`` alone, which prints ``prefix`` and the message and
exits with ``exit_code`` -- so a script can tell "fix your configuration" from "try again later".
"""

from __future__ import annotations

from typing import ClassVar

EXIT_FAILURE = 1  # something it depends on failed or is not there (broker, index, a delivery)
EXIT_CONFIG = 2  # configuration, command line or input to fix before running it again
EXIT_REFUSED = 3  # refused by policy (a search without a reason); nothing was done


class MutualaidError(Exception):
    """Base of every mutualaid error; subclasses set the exit code the command line gives."""

    exit_code: ClassVar[int] = EXIT_FAILURE
    prefix: ClassVar[str] = ""  # what the command line prints before the message


class UsageError(MutualaidError):
    """Configuration, arguments or input that must be fixed; running again as is will fail."""

    exit_code = EXIT_CONFIG


class Refused(MutualaidError):
    """A request that policy refuses; nothing was done."""

    exit_code = EXIT_REFUSED
    prefix = "refused: "
