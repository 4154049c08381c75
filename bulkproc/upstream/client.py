"""The upstream Hospital Directory API: one method per endpoint, with timeouts, paced retries and typed errors.

Every failed exchange is sorted by what it tells us about the upstream's state (exceptions.py):
- NotSent (connection never established, 429): nothing happened upstream; send again.
- MaybeLanded (no answer, connection dropped after sending, 5xx): the call may have taken
  effect; for a creation, read the batch before posting again (rows.py decides).
- Refused (any other 4xx): final; the upstream's message says why.
Idempotent calls retry here; a creation is one POST, retried by its caller.
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

from .. import metrics
from ..errors import MaybeLanded, NotSent, Refused
from .failures import failure_kind, message, never_connected
from .retry import Attempts

log = logging.getLogger(__name__)

# Render puts a free instance to sleep after about 15 idle minutes; an answer more recent than
# this means it is awake, and no wake-up call is needed.
AWAKE_SECONDS = 600.0
# Render's edge answers these while the instance wakes or is overloaded. A 504 can come after the
# app did the work, so for creations they are "maybe landed": the batch is read before re-posting.
GATEWAY_STATUSES = frozenset({502, 503, 504})
ALREADY_ACTIVE = "already active"


@dataclass(frozen=True)
class Hospital:
    id: int
    name: str
    address: str
    phone: str | None
    active: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hospital:
        """A Hospital from the upstream's JSON."""
        return cls(data["id"], data["name"], data["address"], data.get("phone"), bool(data.get("active")))


class DirectoryClient:
    """The upstream's endpoints, each with connect/read timeouts; idempotent ones retried on purpose."""

    def __init__(self, base_url: str, *, connect_timeout: float = 5.0, read_timeout: float = 90.0,
                 max_attempts: int = 5, pool_size: int = 20, backoff: float = 0.5, backoff_cap: float = 30.0,
                 rate_limit_pause: float = 60.0, outage_grace: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts, self.outage_grace = max_attempts, outage_grace
        self.backoff, self.backoff_cap, self.rate_limit_pause = backoff, backoff_cap, rate_limit_pause
        self.sleep, self.clock, self.jitter = sleep, clock, jitter
        self._pool_size = pool_size
        self._last_answer: float | None = None
        self._unreachable_since: float | None = None
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
    def tries(self) -> str:
        """`max_attempts` in words, for error messages."""
        return "1 attempt" if self.max_attempts == 1 else f"{self.max_attempts} attempts"

    def close(self) -> None:
        """Close every thread's connections."""
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def unreachable_for(self) -> float | None:
        """Seconds since the directory became unreachable (no connection, 502/503/504), or None when it answers."""
        since = self._unreachable_since
        return None if since is None else self.clock() - since

    def attempts(self, what: str, deadline: float | None = None) -> Attempts:
        """A fresh pacing of tries for one call (`what` names it in errors)."""
        return Attempts(self, what, deadline)

    def _send(self, operation: str, method: str, path: str, *, timeout: tuple[float, float] | None = None,
              **kwargs: Any) -> requests.Response:
        """One HTTP exchange, with failures sorted into NotSent and MaybeLanded (and logged);
        `operation` names it in /metrics."""
        try:
            response = self._exchange(operation, method, path, timeout=timeout, **kwargs)
        except (NotSent, MaybeLanded) as exc:
            log.warning("%s %s: %s", method, path, exc)
            if not exc.unreachable:
                self._unreachable_since = None  # it answered, if only to refuse
            elif self._unreachable_since is None:
                self._unreachable_since = self.clock()
            raise
        self._unreachable_since = None
        return response

    def _exchange(self, operation: str, method: str, path: str, *, timeout: tuple[float, float] | None = None,
                  **kwargs: Any) -> requests.Response:
        try:
            response = self._request(operation, method, path, timeout=timeout or self.timeout, **kwargs)
        except requests.ConnectionError as exc:
            if never_connected(exc):
                raise NotSent(f"could not connect to the directory ({type(exc).__name__})",
                              unreachable=True) from exc
            raise MaybeLanded(f"the connection to the directory broke ({type(exc).__name__})") from exc
        except (requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise MaybeLanded(f"the directory did not answer in time ({type(exc).__name__})") from exc
        if response.status_code < 500:
            self._last_answer = self.clock()
        if response.status_code == 429:
            raise NotSent("the directory's rate limit was hit (429)", rate_limited=True)
        if response.status_code >= 500:
            # Only a gateway timeout leaves the application possibly still at work: anything else
            # came from the application when it finished, or from an edge that could not reach it.
            raise MaybeLanded(f"the directory answered {response.status_code}",
                              unreachable=response.status_code in GATEWAY_STATUSES,
                              answered=response.status_code != 504)
        return response

    def _request(self, operation: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The request itself, counted and timed under `operation` whatever its outcome."""
        started, code = self.clock(), "error"
        try:
            response = self._session.request(method, self.base_url + path, allow_redirects=False, **kwargs)
            code = str(response.status_code)
            return response
        except requests.RequestException as exc:
            code = failure_kind(exc)
            raise
        finally:
            metrics.observe_upstream(operation, code, self.clock() - started)

    def _retrying(self, what: str, call: Callable[[], requests.Response],
                  deadline: float | None = None) -> requests.Response:
        """Run an idempotent call until it answers below 500, pacing the tries."""
        attempts = self.attempts(what, deadline)
        while True:
            try:
                return call()
            except (NotSent, MaybeLanded) as exc:
                attempts.wait_after(exc)

    # -- endpoints -----------------------------------------------------------------------

    def wake(self, timeout: float) -> None:
        """Call `GET /` with a long read timeout, so a sleeping instance is up before the fan-out;
        nothing to do when the directory answered within the last AWAKE_SECONDS."""
        if self._last_answer is not None and self.clock() - self._last_answer < AWAKE_SECONDS:
            return
        self._retrying("waking the directory",
                       lambda: self._send("wake", "GET", "/", timeout=(self.timeout[0], timeout)))

    def list_batch(self, batch_id: str, deadline: float | None = None) -> list[Hospital]:
        """Every hospital upstream with this batch id (none when the upstream says 404)."""
        response = self._retrying(f"reading batch {batch_id}",
                                  lambda: self._send("list_batch", "GET", f"/hospitals/batch/{batch_id}"), deadline)
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise Refused(response.status_code, message(response))
        return [Hospital.from_json(h) for h in response.json()]

    def create_hospital(self, batch_id: str, name: str, address: str, phone: str | None) -> Hospital:
        """POST one hospital into the batch, once; raises NotSent, MaybeLanded or Refused."""
        body = {"name": name, "address": address, "phone": phone, "creation_batch_id": batch_id}
        response = self._send("create", "POST", "/hospitals/", json=body)
        if response.status_code == 200:
            return Hospital.from_json(response.json())
        raise Refused(response.status_code, message(response))

    def activate_batch(self, batch_id: str, deadline: float | None = None) -> None:
        """Activate every hospital of the batch; an earlier attempt that in fact succeeded counts.

        Raises Refused when the upstream will not activate it, GaveUp when it cannot be reached.
        """
        attempts = self.attempts("activation", deadline)
        while True:
            try:
                response = self._send("activate", "PATCH", f"/hospitals/batch/{batch_id}/activate")
            except NotSent as exc:
                attempts.wait_after(exc)
                continue
            except MaybeLanded as exc:
                failure: NotSent | MaybeLanded = exc
            else:
                if response.status_code == 200:
                    return
                if response.status_code != 400 or ALREADY_ACTIVE not in message(response):
                    raise Refused(response.status_code, message(response))
                failure = MaybeLanded(message(response))
            # Activation is one-shot: only the batch itself can tell whether a lost answer, or a
            # "400 already active", means our own earlier attempt did the job.
            listing = self.list_batch(batch_id, deadline)
            if listing and all(h.active for h in listing):
                return
            if any(h.active for h in listing):
                raise Refused(400, "part of the batch is active and the rest can never be activated")
            attempts.wait_after(failure)

    def delete_hospital(self, hospital_id: int, deadline: float | None = None) -> bool:
        """Delete one hospital upstream; False when it was already gone (404)."""
        response = self._retrying(
            f"deleting hospital {hospital_id}",
            lambda: self._send("delete_hospital", "DELETE", f"/hospitals/{hospital_id}"), deadline)
        if response.status_code == 404:
            return False
        if response.status_code not in (200, 204):
            raise Refused(response.status_code, message(response))
        return True

    def delete_batch(self, batch_id: str, deadline: float | None = None) -> int:
        """Delete every hospital of the batch upstream; return how many went (0 when none were left)."""
        response = self._retrying(
            f"deleting batch {batch_id}",
            lambda: self._send("delete_batch", "DELETE", f"/hospitals/batch/{batch_id}"), deadline)
        if response.status_code == 404:
            return 0
        if response.status_code != 200:
            raise Refused(response.status_code, message(response))
        return int(response.json().get("deleted_count", 0))
