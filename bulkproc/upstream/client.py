"""The upstream Hospital Directory API: one method per endpoint, with timeouts, paced retries and typed errors.

Every failed exchange is sorted by what it tells us about the upstream's state (exceptions.py):
- NotSent (connection never established, 429): nothing happened upstream; send again.
- MaybeLanded (no answer, connection dropped after sending, 5xx): the call may have taken
  effect; for a creation, read the batch before posting again (rows.py decides).
- Refused (any other 4xx): final; the upstream's message says why.
An answer that is not the JSON its call expects is a failure of that call, never a success: a
MaybeLanded the application answered (for a creation: read the batch; for a read: try again).
Every request ends within connect + read timeout in total (deadline.py), however slowly it is
answered. Idempotent calls retry here; a creation is one POST, retried by its caller.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, TypeVar

import requests

from .. import metrics
from ..errors import GaveUp, MaybeLanded, NotSent, Refused
from .deadline import Watchdog, WatchedAdapter
from .failures import (
    Malformed,
    as_id,
    failure_kind,
    field,
    json_body,
    message,
    never_connected,
    not_connected_reason,
)
from .retry import Attempts

T = TypeVar("T")

log = logging.getLogger(__name__)

# Render puts a free instance to sleep after about 15 idle minutes; an answer more recent than
# this means it is awake, and no wake-up call is needed.
AWAKE_SECONDS = 600.0
# Render's edge answers these while the instance wakes or is overloaded. A 504 can come after the
# app did the work, so for creations they are "maybe landed": the batch is read before re-posting.
GATEWAY_STATUSES = frozenset({502, 503, 504})
ALREADY_ACTIVE = "already active"
DEADLINE_PASSED = "the batch's deadline passed before the directory answered"
# The calls paced under the upstream's limit on "every other endpoint" (GET / has its own).
PACED_OPERATIONS = frozenset({"list_batch", "list_hospitals", "activate", "delete_hospital", "delete_batch"})


class TotalTimeout(requests.Timeout):
    """The request's connect + read timeout ran out in total, however its bytes trickled in."""


class Pacer(Protocol):
    """A shared rate limiter for the paced calls (work.rate_limit.RateLimiter is one)."""

    def acquire(self, deadline: float | None = None) -> None:
        """Wait for a slot and take it; GaveUp if that would pass `deadline`."""

    def give_back(self) -> None:
        """Return a slot whose request never reached the upstream."""


@dataclass(frozen=True, slots=True)  # slots: a full directory holds 10,000 of them
class Hospital:
    id: int
    name: str
    address: str
    phone: str | None
    active: bool
    creation_batch_id: str | None

    @classmethod
    def from_json(cls, data: object) -> Hospital:
        """A Hospital from the upstream's JSON; raises Malformed when it is not one."""
        if not isinstance(data, dict):
            raise Malformed(f"a hospital is {type(data).__name__}, not an object")
        return cls(as_id(data.get("id")), field(data, "name", str), field(data, "address", str),
                   field({"phone": None, **data}, "phone", (str, type(None))),
                   field(data, "active", bool), same_batch_id(field(data, "creation_batch_id", (str, type(None)))))

    def of_batch(self, batch_id: str) -> bool:
        """Whether the hospital was created into this batch."""
        return self.creation_batch_id is not None and self.creation_batch_id == same_batch_id(batch_id)


class _Prepared(requests.PreparedRequest):
    """A prepared request whose URL, when it has no query, is checked and encoded once per URL:
    requests parses it anew for every request, a tenth of a creation's cost."""

    def prepare_url(self, url: str | bytes, params: Any) -> None:
        if params or not isinstance(url, str):
            super().prepare_url(url, params)
        else:
            self.url = _prepared_url(url)


@lru_cache(maxsize=4096)
def _prepared_url(url: str) -> str:
    """The URL as requests prepares it (InvalidURL and the like are raised, not kept)."""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return prepared.url


def _settings_for(base_url: str) -> tuple[dict[str, str], Any, dict[str, Any]]:
    """The headers, netrc credentials and environment settings (proxies, CA bundle) of every request
    to `base_url`, as requests reads them for each request: read once, since they depend only on
    the environment and the host, and reading them was a third of each creation's cost."""
    session = requests.Session()
    try:
        headers = {**session.headers, "User-Agent": "bulkproc/0.1"}
        environment = session.merge_environment_settings(base_url, {}, None, None, None)
        return headers, requests.utils.get_netrc_auth(base_url), environment
    finally:
        session.close()


def same_batch_id(text: str | None) -> str | None:
    """A batch id in one spelling (a UUID's canonical form), so that ids compare by value."""
    if text is None:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


def _hospitals(response: requests.Response) -> list[Hospital]:
    """The hospitals of a 200 listing; raises Malformed."""
    body = json_body(response)
    if not isinstance(body, list):
        raise Malformed(f"a listing is {type(body).__name__}, not a list")
    return [Hospital.from_json(h) for h in body]


class DirectoryClient:
    """The upstream's endpoints, each with connect/read timeouts; idempotent ones retried on purpose."""

    def __init__(self, base_url: str, *, connect_timeout: float = 5.0, read_timeout: float = 90.0,
                 max_attempts: int = 5, pool_size: int = 20, backoff: float = 0.5, backoff_cap: float = 30.0,
                 rate_limit_pause: float = 60.0, outage_grace: float = 0.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random, pacer: Pacer | None = None) -> None:
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
        self._watchdog = Watchdog()
        self.pacer = pacer
        self._headers, self._auth, self._environment = _settings_for(self.base_url)

    # -- plumbing ------------------------------------------------------------------------

    @property
    def _session(self) -> requests.Session:
        # One Session per thread: requests does not promise a Session is thread-safe.
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # read once for the client (_settings_for), not on every request
            adapter = WatchedAdapter(pool_connections=1, pool_maxsize=self._pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    @property
    def tries(self) -> str:
        """`max_attempts` in words, for error messages."""
        return "1 attempt" if self.max_attempts == 1 else f"{self.max_attempts} attempts"

    def close(self) -> None:
        """Close every thread's connections and stop the request deadlines' watchdog."""
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._watchdog.close()

    def unreachable_for(self) -> float | None:
        """Seconds since the directory became unreachable (no connection, 502/503/504), or None when it answers."""
        since = self._unreachable_since
        return None if since is None else self.clock() - since

    def attempts(self, what: str, deadline: float | None = None) -> Attempts:
        """A fresh pacing of tries for one call (`what` names it in errors)."""
        return Attempts(self, what, deadline)

    def _send(self, operation: str, method: str, path: str, *, timeout: tuple[float, float] | None = None,
              deadline: float | None = None, **kwargs: Any) -> requests.Response:
        """One HTTP exchange, paced when it is a paced call and ended by `deadline` at the latest
        (GaveUp when it has passed), with failures sorted into NotSent and MaybeLanded (and logged);
        `operation` names it in /metrics."""
        paced = self.pacer is not None and operation in PACED_OPERATIONS
        if paced:
            self.pacer.acquire(deadline)  # type: ignore[union-attr]
        if deadline is not None and self.clock() >= deadline:
            raise GaveUp(DEADLINE_PASSED)
        try:
            response = self._exchange(operation, method, path, timeout=timeout, deadline=deadline, **kwargs)
        except (NotSent, MaybeLanded) as exc:
            log.warning("%s %s: %s", method, path, exc)
            if paced and exc.unreachable and isinstance(exc, NotSent):
                self.pacer.give_back()  # type: ignore[union-attr]  # never reached it: not counted there
            if not exc.unreachable:
                self._unreachable_since = None  # it answered, if only to refuse
            elif self._unreachable_since is None:
                self._unreachable_since = self.clock()
            raise
        self._unreachable_since = None
        return response

    def _call(self, operation: str, method: str, path: str, read: Callable[[requests.Response], T], *,
              deadline: float | None = None, **kwargs: Any) -> T:
        """One exchange and its answer as `read` makes it out; an answer `read` finds Malformed is
        MaybeLanded, one the application gave (it finished whatever it did)."""
        response = self._send(operation, method, path, deadline=deadline, **kwargs)
        try:
            return read(response)
        except Malformed as exc:
            log.warning("%s %s: the answer is not what the directory sends: %s", method, path, exc)
            raise MaybeLanded(f"the directory's answer was not the JSON it sends ({exc})", answered=True) from None

    def _exchange(self, operation: str, method: str, path: str, *, timeout: tuple[float, float] | None = None,
                  deadline: float | None = None, **kwargs: Any) -> requests.Response:
        timeout = timeout or self.timeout
        total = sum(timeout) if deadline is None else min(sum(timeout), deadline - self.clock())
        try:
            response = self._request(operation, method, path, timeout=timeout, total=total, **kwargs)
        except requests.ConnectionError as exc:
            if never_connected(exc):
                raise NotSent(not_connected_reason(exc), unreachable=True) from exc
            raise MaybeLanded(f"the connection to the directory broke ({type(exc).__name__})") from exc
        except (requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            why = str(exc) if isinstance(exc, TotalTimeout) else type(exc).__name__
            raise MaybeLanded(f"the directory did not answer in time ({why})") from exc
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

    def _request(self, operation: str, method: str, path: str, *, timeout: tuple[float, float], total: float,
                 **kwargs: Any) -> requests.Response:
        """The request itself, ended within `total` seconds however slowly it is answered, and
        counted and timed under `operation` whatever its outcome."""
        started, code = self.clock(), "error"
        try:
            with self._watchdog.limit(total) as cut:
                try:
                    session = self._session
                    prepared = _Prepared()
                    prepared.prepare(method=method, url=self.base_url + path, headers=self._headers,
                                     cookies=session.cookies, auth=self._auth, **kwargs)
                    response = session.send(prepared, allow_redirects=False, timeout=timeout, **self._environment)
                except requests.RequestException as exc:
                    if cut.fired:
                        raise TotalTimeout(f"no whole answer within {total:.3g} s") from exc
                    raise
                if cut.fired:
                    # Cut inside the headers, http.client takes the end of the socket for their end.
                    raise TotalTimeout(f"no whole answer within {total:.3g} s")
            code = str(response.status_code)
            return response
        except requests.RequestException as exc:
            code = failure_kind(exc)
            raise
        finally:
            metrics.observe_upstream(operation, code, self.clock() - started)

    def _retrying(self, what: str, call: Callable[[], T], deadline: float | None = None) -> T:
        """Run an idempotent call until it gives an answer, pacing the tries."""
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
        """Every hospital the upstream lists for this batch id (none when it says 404), as it lists
        them: callers decide what a hospital of another batch in it means."""
        return self._retrying(f"reading batch {batch_id}", lambda: self._call(
            "list_batch", "GET", f"/hospitals/batch/{batch_id}", _listing, deadline=deadline), deadline)

    def list_hospitals(self, deadline: float | None = None) -> list[Hospital]:
        """Every hospital in the directory (`GET /hospitals/`, up to 10,000), each checked: an answer
        that is not a list of hospitals is a failed try (retried, then GaveUp), never an empty directory."""
        return self._retrying("reading the directory", lambda: self._call(
            "list_hospitals", "GET", "/hospitals/", _directory, deadline=deadline), deadline)

    def create_hospital(self, batch_id: str, name: str, address: str, phone: str | None,
                        deadline: float | None = None) -> Hospital:
        """POST one hospital into the batch, once, cut off at `deadline`; raises NotSent,
        MaybeLanded, Refused, or GaveUp when the deadline has passed."""
        body = {"name": name, "address": address, "phone": phone, "creation_batch_id": batch_id}
        return self._call("create", "POST", "/hospitals/", lambda r: _created(r, batch_id), json=body,
                          deadline=deadline)

    def activate_batch(self, batch_id: str, hospital_ids: Collection[int],
                       deadline: float | None = None) -> list[Hospital]:
        """Activate the batch, and return the listing that shows each of `hospital_ids` active.

        Whatever the answer (200, a lost one, "400 already active"), only the listing decides:
        every hospital active is success, some is Refused (the rest can never be activated),
        none is a try that did nothing. Raises Refused, or GaveUp when tries run out.
        """
        attempts = self.attempts("activation", deadline)
        while True:
            try:
                self._call("activate", "PATCH", f"/hospitals/batch/{batch_id}/activate", _activation,
                           deadline=deadline)
                failure: NotSent | MaybeLanded = MaybeLanded("the directory answered 200 but did not "
                                                             "activate the batch", answered=True)
            except NotSent as exc:
                attempts.wait_after(exc)
                continue
            except MaybeLanded as exc:
                failure = exc
            except Refused as exc:
                if exc.status != 400 or ALREADY_ACTIVE not in exc.message:
                    raise
                failure = MaybeLanded(exc.message, answered=True)
            listing = self.list_batch(batch_id, deadline)
            if _all_active(listing, batch_id, hospital_ids):
                return listing
            if any(h.active for h in listing if h.of_batch(batch_id)):
                raise Refused(400, "part of the batch is active and the rest can never be activated")
            attempts.wait_after(failure)

    def delete_hospital(self, hospital_id: int, deadline: float | None = None) -> bool:
        """Delete one hospital upstream; False when it was already gone (404)."""
        return self._retrying(f"deleting hospital {hospital_id}", lambda: self._call(
            "delete_hospital", "DELETE", f"/hospitals/{hospital_id}", _deleted, deadline=deadline), deadline)

    def delete_batch(self, batch_id: str, deadline: float | None = None) -> int:
        """Delete every hospital of the batch upstream; return how many went (0 when none were left)."""
        return self._retrying(f"deleting batch {batch_id}", lambda: self._call(
            "delete_batch", "DELETE", f"/hospitals/batch/{batch_id}", _batch_deleted, deadline=deadline), deadline)


# -- reading answers: each returns what its call promises, or raises Refused or Malformed ----


def _listing(response: requests.Response) -> list[Hospital]:
    if response.status_code == 404:
        return []
    if response.status_code != 200:
        raise Refused(response.status_code, message(response))
    return _hospitals(response)


def _directory(response: requests.Response) -> list[Hospital]:
    """The whole directory's hospitals, each made a Hospital as soon as it is parsed: 10,000 of them
    as JSON objects at once would take several times the memory of the answer itself."""
    if response.status_code != 200:
        raise Refused(response.status_code, message(response))
    try:
        body = json.loads(response.content, object_hook=Hospital.from_json)
    except Malformed:
        raise
    except ValueError:  # not JSON at all (Malformed is a ValueError too)
        raise Malformed(f"HTTP {response.status_code} with a body that is not JSON") from None
    if not isinstance(body, list) or not all(isinstance(h, Hospital) for h in body):
        raise Malformed("the directory's listing is not a list of hospitals")
    return body


def _created(response: requests.Response, batch_id: str) -> Hospital:
    if response.status_code != 200:
        raise Refused(response.status_code, message(response))
    hospital = Hospital.from_json(json_body(response))
    if not hospital.of_batch(batch_id):
        raise Malformed(f"the hospital created is in batch {hospital.creation_batch_id!r}, not this one")
    return hospital


def _activation(response: requests.Response) -> bool:
    """True for a 200 that says how many it activated; a 200 that does not is Malformed."""
    if response.status_code != 200:
        raise Refused(response.status_code, message(response))
    body = json_body(response)
    if not isinstance(body, dict) or "error" in body:
        raise Malformed(f"a 200 that says {message(response)!r}")
    field(body, "activated_count", int)
    return True


def _deleted(response: requests.Response) -> bool:
    if response.status_code == 404:
        return False
    if response.status_code not in (200, 204):
        raise Refused(response.status_code, message(response))
    return True


def _batch_deleted(response: requests.Response) -> int:
    if response.status_code == 404:
        return 0
    if response.status_code != 200:
        raise Refused(response.status_code, message(response))
    body = json_body(response)
    if not isinstance(body, dict):
        raise Malformed(f"a deletion's answer is {type(body).__name__}, not an object")
    return int(field(body, "deleted_count", int))


def _all_active(listing: list[Hospital], batch_id: str, hospital_ids: Collection[int]) -> bool:
    """Whether the listing holds each of the hospitals, of this batch, active."""
    active = {h.id for h in listing if h.of_batch(batch_id) and h.active}
    return bool(hospital_ids) and set(hospital_ids) <= active
