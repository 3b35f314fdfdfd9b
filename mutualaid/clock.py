"""The clock a stage reads "now" from: injected, so tests and benchmarks can set the time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

Clock = Callable[[], datetime]
