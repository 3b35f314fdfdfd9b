"""Failed logins, counted per user and per address, and the refusals they earn.

Past ``max_failures`` failed logins within ``window_seconds``, a user name (or an address) is
refused at once, even with the right token, until the oldest of those failures is older than
the window: guessing tokens gets a handful of tries per window, not thousands per second. The
per-address bound stops one client trying many user names; the per-user bound stops many
clients trying one. Only failures count, and a success clears its user's (not its address's)
failures, so logging in with one's own account cannot reset the count of an address.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

# Bounds the memory an attacker can fill with made-up user names: the keys seen longest ago
# are forgotten first.
MAX_TRACKED = 10_000


@dataclass(frozen=True)
class Limits:
    per_user: int
    per_address: int
    window_seconds: float


class LoginThrottle:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, user: str, address: str) -> int | None:
        """Seconds until this user may try again from this address; None if they may now."""
        with self._lock:
            now = self._clock()
            waits = [
                self._wait(("user", user), self.limits.per_user, now),
                self._wait(("address", address), self.limits.per_address, now),
            ]
        longest = max((w for w in waits if w is not None), default=None)
        return None if longest is None else max(1, math.ceil(longest))

    def failed(self, user: str, address: str) -> None:
        with self._lock:
            now = self._clock()
            for key in (("user", user), ("address", address)):
                times = self._failures.pop(key, None) or deque()
                times.append(now)
                self._failures[key] = times  # now the most recently seen
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(("user", user), None)

    def _wait(self, key: tuple[str, str], limit: int, now: float) -> float | None:
        times = self._failures.get(key)
        if not times:
            return None
        while times and times[0] <= now - self.limits.window_seconds:
            times.popleft()
        if len(times) < limit:
            return None
        # Free again once enough of the failures have aged out of the window.
        return times[len(times) - limit] + self.limits.window_seconds - now
