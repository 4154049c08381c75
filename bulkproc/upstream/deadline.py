"""A limit on each request's total time: requests' read timeout bounds each socket read, not the
answer, so an answer trickling in a byte at a time would otherwise never end.

One watchdog thread per client keeps the running requests' deadlines; when one passes, it shuts
the request's socket down, the blocked read returns at once, and the client reads it as a timeout.
Connections learn which request they serve from a thread-local set by the request's thread.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection

_current = threading.local()


class Cut:
    """One request's deadline and the connection it runs on; `fired` once its time ran out."""

    def __init__(self, deadline: float, lock: threading.Condition) -> None:
        self.deadline = deadline
        self.fired = False
        self._lock = lock
        self._connection: HTTPConnection | None = None

    def attach(self, connection: HTTPConnection) -> None:
        """Note the connection the request is sent on; shut it at once when the time already ran out."""
        with self._lock:
            self._connection = connection
            if self.fired:
                self._shut()

    def fire(self) -> None:
        """Shut the request's socket down (called with the watchdog's lock held)."""
        self.fired = True
        self._shut()

    def _shut(self) -> None:
        sock = getattr(self._connection, "sock", None)
        if sock is None:
            return  # still connecting: attach() after connect shuts it
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by its own thread


class Watchdog:
    """Cuts every request still running at its deadline, from one thread started on first use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Condition()
        self._running: set[Cut] = set()
        # When the thread wakes next by itself: a request ending later needs no wake-up call.
        self._wakes_at = math.inf
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextmanager
    def limit(self, seconds: float) -> Iterator[Cut]:
        """Run the block's request under a total limit of `seconds`; the Cut says whether it fired."""
        with self._lock:
            cut = Cut(self._clock() + seconds, self._lock)
            self._running.add(cut)
            self._start()
            # Waking the thread for every request cost a tenth of a busy process's time; nearly all
            # requests have the same limit, so their deadlines come after the one it waits for.
            if cut.deadline < self._wakes_at:
                self._wakes_at = cut.deadline
                self._lock.notify()
        _current.cut = cut
        try:
            yield cut
        finally:
            _current.cut = None
            # Under the lock: once out of the block, the connection (back in the pool) is never cut.
            with self._lock:
                self._running.discard(cut)

    def close(self) -> None:
        """Stop the watchdog thread."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            self._lock.notify()
        if thread is not None:
            thread.join()

    def _start(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._watch, name="bulkproc-request-deadlines", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        with self._lock:
            while not self._closed:
                now = self._clock()
                for cut in [c for c in self._running if c.deadline <= now and not c.fired]:
                    cut.fire()
                pending = [c.deadline for c in self._running if not c.fired]
                self._wakes_at = min(pending, default=math.inf)
                self._lock.wait(self._wakes_at - now if pending else None)


def _attach_current(connection: HTTPConnection) -> None:
    cut = getattr(_current, "cut", None)
    if cut is not None:
        cut.attach(connection)


class _Watched:
    """A connection that tells its request's Cut which socket to shut."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_current(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _attach_current(self)  # type: ignore[arg-type]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections (through a proxy too) can be cut by a Watchdog."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager
