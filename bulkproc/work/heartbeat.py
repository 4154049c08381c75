"""The process's one heartbeat: every lease it holds renewed in one transaction, and runs told when they lost.

A batch or an import is held from the moment it is accepted or taken over until its run ends,
queued work included, so `interrupted` means only that the process stopped. Renewal is by this
process and by the tokens of its runs: a process paused past its leases, once it wakes, renews
nothing another run took over, and each run of it learns so and stops.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..errors import RunLost, StoreUnavailable
from ..logs import in_work_context
from ..store import Run, Store

log = logging.getLogger(__name__)

# Leases are renewed at least this often (seconds), and at least three times a lease.
MAX_INTERVAL = 2.0
# After a renewal the store refused, the next try comes this much sooner than a beat: two
# refusals in a row then still leave most of the lease, not none of it.
RETRY_FRACTION = 0.25


class Heartbeat:
    """Renews the leases of every run this process holds, until closed; survives store errors."""

    def __init__(self, store: Store, owner: str, lease_seconds: float, *,
                 stopping: threading.Event | None = None, start: bool = True,
                 wait: Callable[[float], bool] | None = None) -> None:
        self.store, self.owner, self.lease_seconds = store, owner, lease_seconds
        self.interval = min(MAX_INTERVAL, lease_seconds / 3)
        self.retry_interval = self.interval * RETRY_FRACTION
        self._stopping = stopping or threading.Event()
        self._runs: dict[tuple[str, str], Run] = {}
        # Called after each renewal the run survived (a batch shows that it waits for the directory).
        self._on_beat: dict[Run, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._wait = wait or self._closed.wait
        self._thread = threading.Thread(target=self.run, name="bulkproc-heartbeat", daemon=True)
        if start:
            self._thread.start()

    def hold(self, run: Run, on_beat: Callable[[], None] | None = None) -> Run:
        """Renew `run`'s work from now on (an older run of the same work here is stale: it stops)."""
        with self._lock:
            older = self._runs.get((run.kind, run.id))
            self._runs[(run.kind, run.id)] = run
            if on_beat is not None:
                self._on_beat[run] = on_beat
        if older is not None and older is not run and older.token != run.token:
            older.lose()
        if self._stopping.is_set():
            run.halt.set()
        return run

    def let_go(self, run: Run) -> None:
        """Stop renewing `run`'s work (its run ended)."""
        with self._lock:
            if self._runs.get((run.kind, run.id)) is run:
                del self._runs[(run.kind, run.id)]
            self._on_beat.pop(run, None)

    def find(self, kind: str, work_id: str) -> Run | None:
        """The run this process holds for the work, if any."""
        with self._lock:
            return self._runs.get((kind, work_id))

    def stop_runs(self) -> None:
        """The service is stopping: wake every run's waits, and those of runs held later."""
        self._stopping.set()
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.halt.set()

    def beat(self) -> None:
        """Renew every held lease once, and stop the runs whose work another run owns now."""
        with self._lock:
            runs = list(self._runs.values())
        if not runs:
            return
        lost = self.store.renew_leases(self.owner, self.lease_seconds, runs)
        for run in lost:
            self.let_go(run)
            run.lose()
            in_work_context(run.kind, run.id, log.error)("lost the %s: another run owns it; this run stops", run.kind)
        with self._lock:
            hooks = [(run, hook) for run, hook in self._on_beat.items() if run not in lost]
        for run, hook in hooks:
            try:
                hook()
            except RunLost:
                pass  # the run learns it at its next write

    def close(self) -> None:
        """Stop renewing (after the runs have ended)."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join()

    def run(self) -> None:
        """Beat until closed: every interval, and sooner again after a renewal that failed."""
        delay = self.interval
        while not self._wait(delay):
            delay = self.interval if self._renew() else self.retry_interval

    def _renew(self) -> bool:
        """One beat, its failure logged (the heartbeat must outlive anything one renewal meets)."""
        try:
            self.beat()
            return True
        except StoreUnavailable as exc:
            log.warning("could not renew the leases: the job store is unavailable (%s); trying again in %.2f s",
                        exc.reason, self.retry_interval)
        except Exception:
            log.exception("could not renew the leases; trying again in %.2f s", self.retry_interval)
        return False
