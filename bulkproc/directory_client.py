"""The upstream Hospital Directory API: one method per endpoint, with timeouts, retries and typed errors.

Every failure is sorted by what it tells us about the upstream's state:
- not sent (connection never established, 429): nothing happened upstream; send again.
- maybe landed (read timeout, connection dropped after sending, 5xx): the call may have taken
  effect; for a creation, read the batch before posting again.
- refused (any other 4xx): final; the upstream's message says why.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, NameResolutionError

log = logging.getLogger(__name__)

# Render puts a free instance to sleep after about 15 idle minutes; an answer more recent than
# this means it is awake, and no wake-up call is needed.
AWAKE_SECONDS = 600.0
# Render's edge answers these while the instance wakes or is overloaded. A 504 can come after the
# app did the work, so for creations they are "maybe landed": we read the batch before re-posting.
GATEWAY_STATUSES = frozenset({502, 503, 504})
ALREADY_ACTIVE = "already active"


class UpstreamError(Exception):
    """The upstream could not do what was asked; `str()` is a sentence for the row's `error`."""


class Refused(UpstreamError):
    """The upstream answered a final 4xx."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"The directory refused it ({status}): {message}")
        self.status = status
        self.message = message


class GaveUp(UpstreamError):
    """Every attempt failed in a retryable way, or the deadline passed."""


class _NotSent(Exception):
    """The request never reached the upstream's handler; sending it again is safe."""

    def __init__(self, reason: str, rate_limited: bool = False) -> None:
        super().__init__(reason)
        self.rate_limited = rate_limited


class _MaybeLanded(Exception):
    """The request may have taken effect upstream."""


@dataclass(frozen=True)
class Hospital:
    id: int
    name: str
    address: str
    phone: str | None
    active: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hospital:
        return cls(data["id"], data["name"], data["address"], data.get("phone"), bool(data.get("active")))


class NoLimiter:
    """The limiter to use when creations are not rate-limited on our side."""

    def take(self, wanted: int) -> tuple[int, float]:
        return wanted, 0.0

    def acquire(self, deadline: float | None = None) -> None:
        return None

    def back_off(self) -> bool:
        return False  # nobody holds creations back: the client waits itself


def _never_connected(exc: requests.ConnectionError) -> bool:
    """True when the connection was never established, so the request cannot have been seen."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError, NameResolutionError))


def _message(response: requests.Response) -> str:
    """The upstream's own words from an error body, whatever its shape."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    detail = body.get("detail", body.get("error")) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                         for d in detail if isinstance(d, dict)) or str(detail)
    return str(detail)


class DirectoryClient:
    """The upstream's endpoints, each with connect/read timeouts and deliberate retries."""

    def __init__(self, base_url: str, *, connect_timeout: float = 5.0, read_timeout: float = 90.0,
                 max_attempts: int = 5, pool_size: int = 20, backoff: float = 0.5, backoff_cap: float = 30.0,
                 rate_limit_pause: float = 60.0, limiter: Any = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, jitter: Callable[[], float] = random.random) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max_attempts
        self.limiter = limiter or NoLimiter()
        self._backoff, self._backoff_cap, self._rate_limit_pause = backoff, backoff_cap, rate_limit_pause
        self._sleep, self._clock, self._jitter = sleep, clock, jitter
        self._pool_size = pool_size
        self._last_answer: float | None = None
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    # -- plumbing ------------------------------------------------------------------------

    @property
    def _session(self) -> requests.Session:
        # One Session per thread: requests does not promise a Session is thread-safe.
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self._pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = "bulkproc/0.1"
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    @property
    def _tries(self) -> str:
        return "1 attempt" if self.max_attempts == 1 else f"{self.max_attempts} attempts"

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def _send(self, method: str, path: str, *, timeout: tuple[float, float] | None = None,
              **kwargs: Any) -> requests.Response:
        """One HTTP exchange, with transport failures sorted into _NotSent and _MaybeLanded."""
        try:
            response = self._session.request(method, self.base_url + path, timeout=timeout or self.timeout,
                                             allow_redirects=False, **kwargs)
        except requests.ConnectionError as exc:
            if _never_connected(exc):
                raise _NotSent(f"could not connect to the directory ({type(exc).__name__})") from exc
            raise _MaybeLanded(f"the connection to the directory broke ({type(exc).__name__})") from exc
        except (requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _MaybeLanded(f"the directory did not answer in time ({type(exc).__name__})") from exc
        if response.status_code < 500:
            self._last_answer = self._clock()
        if response.status_code == 429:
            raise _NotSent("the directory's rate limit was hit (429)", rate_limited=True)
        if response.status_code >= 500:
            raise _MaybeLanded(f"the directory answered {response.status_code}")
        return response

    def _pause(self, attempt: int, deadline: float | None, rate_limited: bool = False) -> None:
        """Exponential back-off with full jitter; GaveUp when it would pass the deadline.

        After a 429 the wait is at least half the upstream's window: it sends no Retry-After, and
        a shorter wait would only spend the remaining attempts inside the same window.
        """
        delay = self._jitter() * min(self._backoff_cap, self._backoff * 2 ** attempt)
        if rate_limited:
            delay = max(delay, self._rate_limit_pause * (1 + self._jitter()) / 2)
        if deadline is not None and self._clock() + delay >= deadline:
            raise GaveUp("the batch's deadline passed before the directory answered")
        self._sleep(delay)

    def _retrying(self, what: str, call: Callable[[], requests.Response],
                  deadline: float | None = None) -> requests.Response:
        """Run an idempotent call until it answers below 500, backing off between attempts."""
        last, rate_limited = "", False
        for attempt in range(self.max_attempts):
            if attempt:
                self._pause(attempt - 1, deadline, rate_limited)
            try:
                return call()
            except (_NotSent, _MaybeLanded) as exc:
                last, rate_limited = str(exc), getattr(exc, "rate_limited", False)
                log.warning("%s: attempt %d of %d failed: %s", what, attempt + 1, self.max_attempts, last)
        raise GaveUp(f"{what} failed {self._tries}; last: {last}")

    # -- endpoints -----------------------------------------------------------------------

    def wake(self, timeout: float) -> None:
        """Call `GET /` with a long read timeout, so a sleeping instance is up before the fan-out;
        nothing to do when the directory answered within the last AWAKE_SECONDS."""
        if self._last_answer is not None and self._clock() - self._last_answer < AWAKE_SECONDS:
            return
        self._retrying("waking the directory",
                       lambda: self._send("GET", "/", timeout=(self.timeout[0], timeout)))

    def list_batch(self, batch_id: str, deadline: float | None = None) -> list[Hospital]:
        """Every hospital upstream with this batch id (none when the upstream says 404)."""
        response = self._retrying(f"reading batch {batch_id}",
                                  lambda: self._send("GET", f"/hospitals/batch/{batch_id}"), deadline)
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise Refused(response.status_code, _message(response))
        return [Hospital.from_json(h) for h in response.json()]

    def create_hospital(self, batch_id: str, name: str, address: str, phone: str | None, *,
                        find_existing: Callable[[list[Hospital]], Hospital | None],
                        before_post: Callable[[], None] = lambda: None,
                        deadline: float | None = None, slot_taken: bool = False) -> Hospital:
        """Create one hospital in the batch, at most once, and return it.

        `find_existing(listing)` picks this row's hospital from the batch's listing; it is asked
        after any failure that may have created it, before posting again. Every POST first takes
        a limiter slot, then runs `before_post`; with `slot_taken` the caller has done both for
        the first one. Raises Refused or GaveUp.
        """
        body = {"name": name, "address": address, "phone": phone, "creation_batch_id": batch_id}
        last, rate_limited = "", False
        for attempt in range(self.max_attempts):
            if attempt:
                self._pause(attempt - 1, deadline, rate_limited)
            if attempt or not slot_taken:
                self.limiter.acquire(deadline)
                before_post()
            try:
                return self._post_hospital(body)
            except _NotSent as exc:
                last = str(exc)
                # A shared limiter holds every creation back after a 429; without one, we wait here.
                rate_limited = exc.rate_limited and not self.limiter.back_off()
            except _MaybeLanded as exc:
                rate_limited = False
                last = str(exc)
                found = find_existing(self.list_batch(batch_id, deadline))
                if found is not None:
                    log.info("batch %s: %r was created by an attempt whose answer was lost (%s)",
                             batch_id, name, last)
                    return found
            log.warning("batch %s: creating %r, attempt %d of %d: %s",
                        batch_id, name, attempt + 1, self.max_attempts, last)
        raise GaveUp(f"gave up after {self._tries}; last: {last}")

    def _post_hospital(self, body: dict[str, Any]) -> Hospital:
        response = self._send("POST", "/hospitals/", json=body)
        if response.status_code == 200:
            return Hospital.from_json(response.json())
        raise Refused(response.status_code, _message(response))

    def activate_batch(self, batch_id: str, deadline: float | None = None) -> None:
        """Activate every hospital of the batch; an earlier attempt that in fact succeeded counts.

        Raises Refused when the upstream will not activate it, GaveUp when it cannot be reached.
        """
        last, rate_limited = "", False
        for attempt in range(self.max_attempts):
            if attempt:
                self._pause(attempt - 1, deadline, rate_limited)
            try:
                response = self._send("PATCH", f"/hospitals/batch/{batch_id}/activate")
            except _NotSent as exc:
                last, rate_limited = str(exc), exc.rate_limited
                continue
            except _MaybeLanded as exc:
                last, rate_limited = str(exc), False
            else:
                if response.status_code == 200:
                    return
                if response.status_code != 400 or ALREADY_ACTIVE not in _message(response):
                    raise Refused(response.status_code, _message(response))
                last = _message(response)
            # Activation is one-shot: only the batch itself can tell whether a lost answer, or a
            # "400 already active", means our own earlier attempt did the job.
            listing = self.list_batch(batch_id, deadline)
            if listing and all(h.active for h in listing):
                return
            if any(h.active for h in listing):
                raise Refused(400, "part of the batch is active and the rest can never be activated")
        raise GaveUp(f"activation gave up after {self._tries}; last: {last}")

    def delete_batch(self, batch_id: str, deadline: float | None = None) -> int:
        """Delete every hospital of the batch upstream; return how many went (0 when none were left)."""
        response = self._retrying(f"deleting batch {batch_id}",
                                  lambda: self._send("DELETE", f"/hospitals/batch/{batch_id}"), deadline)
        if response.status_code == 404:
            return 0
        if response.status_code != 200:
            raise Refused(response.status_code, _message(response))
        return int(response.json().get("deleted_count", 0))
