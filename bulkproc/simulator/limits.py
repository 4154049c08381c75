"""The upstream's rate limits: a fixed window per client IP and endpoint, counted before the handler runs."""

from __future__ import annotations

import threading
from collections.abc import Callable

DOCUMENTED_LIMITS = {"create": 30, "health": 100, "other": 50}


def bucket(op: str) -> str:
    """Name the limit an operation counts against: create, health, or other."""
    return op if op in ("create", "health") else "other"


class RateLimits:
    """Fixed-window request counters; a limit of 0 or less lets everything through."""

    def __init__(self, create: int, health: int, other: int, window: float,
                 clock: Callable[[], float]) -> None:
        self.limits = {"create": create, "health": health, "other": other}
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str | None, str], tuple[float, int]] = {}

    def admit(self, client: str | None, op: str) -> bool:
        """Count a request of `op` from `client`; False when its window is already full."""
        limit = self.limits[bucket(op)]
        if limit <= 0:
            return True
        # Like slowapi's per-route decorators: each endpoint has its own counter per client IP.
        key = (client, op)
        with self._lock:
            now = self._clock()
            start, count = self._windows.get(key, (now, 0))
            if now - start >= self.window:
                start, count = now, 0
            if count >= limit:
                return False
            self._windows[key] = (start, count + 1)
            return True

    def refusal(self, op: str) -> str:
        """The upstream's 429 message for `op` (its documented limit when this one is off)."""
        name = bucket(op)
        limit = self.limits[name] if self.limits[name] > 0 else DOCUMENTED_LIMITS[name]
        period = "1 minute" if self.window == 60 else f"{self.window:g} seconds"
        return f"Rate limit exceeded: {limit} per {period}"

    def reset(self) -> None:
        """Forget every window."""
        with self._lock:
            self._windows.clear()
