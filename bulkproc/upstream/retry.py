"""The pacing of one call's tries: back-off with jitter, 429s waited out, outages waited out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import GaveUp, MaybeLanded, NotSent, UpstreamError

if TYPE_CHECKING:
    from .client import DirectoryClient

# While the directory is unreachable it is tried again at least this often, so a batch goes on
# within seconds of its return.
OUTAGE_RETRY_SECONDS = 5.0



class Attempts:
    """The pacing of one call's tries: back-off with full jitter, at most `max_attempts` ordinary
    failures, 429s waited out until the deadline, and an unreachable directory waited out for the
    outage grace; raises GaveUp."""

    def __init__(self, client: DirectoryClient, what: str, deadline: float | None) -> None:
        self._client, self.what, self.deadline = client, what, deadline
        self.failures = 0
        self._outage_since: float | None = None
        self._outage_tries = 0
        self._rate_limited = 0

    def wait_after(self, failure: NotSent | MaybeLanded, *, hold: bool | None = None) -> None:
        """Pause before the next try after `failure`; GaveUp when no try is left.

        `hold` (default: the failure was a 429) makes the pause at least half the upstream's rate
        window: it sends no Retry-After, and a shorter wait would only spend the remaining tries
        inside the same window.
        """
        client = self._client
        if getattr(failure, "unreachable", False) and client.outage_grace > 0:
            tries, cap = self._outage(failure), OUTAGE_RETRY_SECONDS
        elif getattr(failure, "rate_limited", False):
            # A 429 was not processed: it spends no attempt, and only the deadline ends the wait.
            self._outage_since = None
            self._rate_limited += 1
            tries, cap = self._rate_limited, client.backoff_cap
        else:
            self._outage_since = None
            self.failures += 1
            if self.failures >= client.max_attempts:
                raise GaveUp(f"{self.what}: gave up after {client.tries}; last: {failure}")
            tries, cap = self.failures, client.backoff_cap
        delay = client.jitter() * min(cap, client.backoff * 2 ** (tries - 1))
        if getattr(failure, "rate_limited", False) if hold is None else hold:
            delay = max(delay, client.rate_limit_pause * (1 + client.jitter()) / 2)
        if self.deadline is not None and client.clock() + delay >= self.deadline:
            raise GaveUp("the batch's deadline passed before the directory answered")
        if client.sleep(delay):  # a stop-aware sleep (Event.wait) cut short: the service is stopping
            raise GaveUp(f"{self.what}: the service stopped while waiting to try again; last: {failure}")

    def _outage(self, failure: UpstreamError) -> int:
        now = self._client.clock()
        if self._outage_since is None:
            self._outage_since = now
        if now - self._outage_since >= self._client.outage_grace:
            raise GaveUp(f"{self.what}: the directory stayed unreachable for "
                         f"{now - self._outage_since:.0f} s; last: {failure}")
        self._outage_tries += 1
        return self._outage_tries

