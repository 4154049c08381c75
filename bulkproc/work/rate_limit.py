"""The rate limiters (creations, and the upstream's other calls), shared through the job store by
every thread, worker and instance."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from .. import metrics
from ..errors import GaveUp
from ..store import Store

log = logging.getLogger(__name__)

# The upstream starts its window when a request arrives, a little after we took the slot; a
# slightly longer window on our side keeps the two from disagreeing at the edge.
WINDOW_MARGIN = 1.02
EDGE_SECONDS = 0.05
DEADLINE_MESSAGE = "the batch's deadline passed while waiting for the create-rate limit"
READ_DEADLINE_MESSAGE = "the batch's deadline passed while waiting for the read-rate limit"
STOPPING_MESSAGE = "the service stopped while waiting for the create-rate limit"


class Limiter(Protocol):
    """What the row creator needs from a create-rate limiter; it alone takes slots."""

    def take(self, wanted: int) -> tuple[int, float]:
        """Take up to `wanted` slots at once, without waiting; return (taken, seconds until the next frees)."""

    def acquire(self, deadline: float | None = None) -> None:
        """Wait until a slot is free and take it; GaveUp if that would pass `deadline`."""

    def back_off(self) -> bool:
        """After a 429, hold creations back; return whether the limiter does the waiting."""

    def give_back(self) -> None:
        """Return a slot whose request never reached the upstream (no connection)."""


class NoLimiter:
    """The limiter to use when creations are not rate-limited on our side."""

    def take(self, wanted: int) -> tuple[int, float]:
        """Every slot asked for, at once."""
        return wanted, 0.0

    def acquire(self, deadline: float | None = None) -> None:
        """Nothing to wait for."""
        return None

    def back_off(self) -> bool:
        """Nobody holds creations back: the caller waits itself."""
        return False

    def give_back(self) -> None:
        """No slots, nothing to return."""
        return None


class RateLimiter:
    """At most `limit` requests of `kind` ("create", or "read": the upstream's other calls) in any
    `window` seconds, across everything sharing the store."""

    def __init__(self, store: Store, limit: int, window: float, *, kind: str = "create",
                 sleep: Callable[[float], bool | None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] | None = None) -> None:
        self.store, self.limit, self.window, self.kind = store, limit, window, kind
        self._span = window * WINDOW_MARGIN + EDGE_SECONDS
        # `sleep` may return True when cut short by a shutdown (Event.wait); `clock` measures waits here;
        # the back-off is dated on the store's clock, shared by every instance.
        self._sleep, self._clock, self._wall_clock = sleep, clock, wall_clock or store.now

    def take(self, wanted: int) -> tuple[int, float]:
        """Take up to `wanted` slots at once, without waiting; return (taken, seconds until the next frees)."""
        return self.store.take_slots(self.kind, self.limit, self._span, wanted)

    def acquire(self, deadline: float | None = None) -> None:
        """Wait until a slot is free and take it; GaveUp if that would pass `deadline`."""
        while True:
            taken, wait = self.take(1)
            if taken:
                return
            if deadline is not None and self._clock() + wait >= deadline:
                raise GaveUp(DEADLINE_MESSAGE if self.kind == "create" else READ_DEADLINE_MESSAGE)
            stopped = self._sleep(wait)
            if self.kind == "create":
                metrics.rate_limit_wait.inc(wait)
            if stopped:  # a stop-aware sleep (Event.wait) cut short: the service is stopping
                raise GaveUp(STOPPING_MESSAGE)

    def back_off(self) -> bool:
        """After a 429 (someone else spent our quota), hold every creation until the window has reset."""
        log.warning("the directory answered 429; holding all creations for %.1f s", self._span)
        self.store.block_creates(self._wall_clock() + self._span)
        return True

    def give_back(self) -> None:
        """Return a slot whose request never reached the upstream, so that retries through an
        outage do not use up the window the rows need once it is over."""
        self.store.return_slot(self.kind)
