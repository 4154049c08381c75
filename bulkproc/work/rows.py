"""One row's life upstream: post it, sort a failure, reconcile before posting again, settle, sweep.

A creation is not idempotent upstream, so what a failed POST means decides what happens next:
- never sent (no connection, 429): nothing can land; post again at once (after the back-off).
- refused (4xx): the row fails with the directory's reason; nothing can land.
- maybe landed (no answer, a dropped connection, 5xx): read the batch and take the row's
  hospital if it is there. When the application did not answer, its creation may still be under
  way: read again once it could have landed (SETTLE_FACTOR), and post again only if it did not.
A creation slower even than that lands beside our second one: before activation, and once more
after it, the batch is swept of hospitals no row owns (only we write into our batch ids). Rows are
paired, and hospitals deleted, only among hospitals of the batch's own id, and a listing holding
any of another batch is not trusted for deleting at all.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from .. import metrics
from ..errors import (
    MaybeLanded,
    NotSent,
    Refused,
    RunLost,
    StoreUnavailable,
    UpstreamError,
)
from ..logs import in_batch_context
from ..states import EXISTING, RowStatus
from ..store import Row, Run, Store
from ..upstream.client import DirectoryClient, Hospital
from .rate_limit import DEADLINE_MESSAGE, Limiter
from .reconcile import Listings, match, matches, ours, strangers

log = logging.getLogger(__name__)

# How often a batch waiting for the rate window looks whether its import was cancelled elsewhere.
CANCEL_POLL_SECONDS = 0.25
# A creation that has not answered within the read timeout may still land. We give it this many
# read timeouts (plus the connect timeout it may have spent reaching the upstream) from when it
# was sent before reading the batch and posting again: a creation is 5 s and the read timeout
# already covers a cold start, so this is far past anything the upstream was seen to do. Slower
# ones are the sweep's, and one landing after the last sweep is the residual risk (README).
SETTLE_FACTOR = 3
# Reads of a batch are made on this grid (seconds), so a burst of failures costs one read.
READ_TICK = 0.1
# A row sent within this share of the settle wait (at most a second) after its slot's write keeps
# that moment as `attempted_at`: the wait it sets is short by a hundredth at worst, and each row
# spares a write. One that waited longer for a thread is written again as it goes out.
SENT_AT_ONCE_SHARE, SENT_AT_ONCE_MAX = 0.01, 1.0
STOPPED_ROW = "The service stopped before this row was created; resume the batch to create it."


class _Stopped(Exception):
    """The service is shutting down while a row waits; it stays pending."""


class RowCreator:
    """Creates rows upstream at most once each; the only taker of create-rate slots."""

    def __init__(self, store: Store, client: DirectoryClient, limiter: Limiter, executor: ThreadPoolExecutor, *,
                 stopping: threading.Event, settle_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.client, self.limiter = store, client, limiter
        self._executor, self._stopping = executor, stopping
        # How long after it was sent a creation may still land upstream.
        self.settle_seconds = settle_seconds
        self._sent_at_once = min(SENT_AT_ONCE_MAX, settle_seconds * SENT_AT_ONCE_SHARE)
        self._clock = clock
        self._listings = Listings(client, clock)
        # Batches waiting for earlier creations to settle (an import starts its next batch meanwhile).
        self._settling: set[str] = set()

    # -- many rows -------------------------------------------------------------------------

    def create(self, run: Run, rows: list[Row], deadline: float, underway: threading.Event | None = None) -> None:
        """Create the rows concurrently and return when every one has an outcome (StoreUnavailable when
        one could not be written, RunLost when the run lost the batch); `underway` is set once no row
        waits for a slot any more.

        Slots are taken here, as many at a time as the limit allows, and only rows holding one go
        to the executor: a row waiting for the window keeps no seat from rows that could go now,
        and it reads `pending` meanwhile.
        """
        batch_id = run.id
        work = in_batch_context(batch_id, metrics.in_flight(self._create_row))
        futures, waiting = [], list(rows)
        try:
            while waiting and not self.store.is_cancelling(batch_id):
                run.check()
                taken, wait_seconds = self.limiter.take(len(waiting))
                going, waiting = waiting[:taken], waiting[taken:]
                if going:
                    slot_at = self._clock()
                    allowed = self.store.start_rows(run, [r.row for r in going], slot_at)
                    run.holds(allowed is not None)
                    if not allowed:
                        break  # its import was cancelled between the look and the slots
                    futures += [self._executor.submit(work, run, row, deadline, slot_at) for row in going]
                if waiting and time.monotonic() + wait_seconds >= deadline:
                    run.holds(self.store.mark_rows_failed(run, [r.row for r in waiting],
                                                          f"Gave up: {DEADLINE_MESSAGE}; the row can be resumed."))
                    metrics.rows_failed.inc(len(waiting))
                    break
                if waiting and self._pause(run, wait_seconds):
                    if self._stopping.is_set():
                        log.warning("shutting down: %d rows left pending; resume the batch to create them",
                                    len(waiting))
                        run.holds(self.store.mark_rows_pending(run, [r.row for r in waiting], STOPPED_ROW))
                    break
            if self.store.is_cancelling(batch_id):
                log.info("import cancelled: rows not started read cancelled; rows in flight finish")
                run.holds(self.store.cancel_pending_rows(run))
        finally:
            if underway is not None:
                underway.set()
            # Also when the store fails: whoever closes the batch must find no row still in flight.
            wait(futures)
            self._listings.forget(batch_id)
        lost = next((f.exception() for f in futures if f.exception() is not None), None)
        if lost is not None:
            raise lost  # StoreUnavailable or RunLost: some row's state could not be written

    def _pause(self, run: Run, seconds: float) -> bool:
        """Wait `seconds` for the rate window, counting the wait; True when waiting should stop
        instead: shutting down, or the batch's import cancelled (from any process)."""
        started = time.monotonic()
        end = started + seconds
        try:
            while (left := end - time.monotonic()) > 0:
                if run.wait(min(left, CANCEL_POLL_SECONDS)) or self.store.is_cancelling(run.id):
                    return True
            return False
        finally:
            metrics.rate_limit_wait.inc(time.monotonic() - started)

    def settle(self, run: Run, rows: list[Row], *, what: str) -> bool | None:
        """Wait until the creations of `rows` that may still be in flight could have landed: None when
        none may, True once waited, False when shutdown interrupts the wait (RunLost when the run
        loses the batch meanwhile)."""
        settled_at = max((r.attempted_at + self.settle_seconds for r in rows if r.attempted_at is not None),
                         default=0.0)
        if settled_at <= self._clock():
            return None
        log.info("waiting %.1f s %s, for creations that may still be in flight", settled_at - self._clock(), what)
        self._settling.add(run.id)
        try:
            return not run.wait(settled_at - self._clock())
        finally:
            self._settling.discard(run.id)

    def is_settling(self, batch_id: str) -> bool:
        """Whether the batch is waiting here for earlier creations to settle (no row waits for a slot)."""
        return batch_id in self._settling

    def reconcile(self, run: Run, deadline: float) -> list[Row]:
        """On resume: record the rows that exist upstream and return the others, reset to pending.

        A creation sent just before its process died may still be on its way: the upstream shows a
        hospital only once its work is over. Rows whose last attempt may have reached the upstream
        are given time to land first; rows whose attempts never did are known to be absent and wait
        for nothing. [] when shutdown interrupts the wait (the batch stays resumable as it was).
        """
        batch_id = run.id
        rows = self.store.get_batch(batch_id).rows
        found, todo = match(rows, ours(batch_id, self.client.list_batch(batch_id, deadline)))
        settled = self.settle(run, todo, what="before resuming")
        if settled is False:
            return []
        if settled:
            found, todo = match(rows, ours(batch_id, self.client.list_batch(batch_id, deadline)))
        for row, hospital in found.items():
            if (row.status, row.hospital_id) != (RowStatus.CREATED, hospital.id):
                self._record_created(run, row, hospital.id)
        if todo:
            run.holds(self.store.mark_rows_pending(run, [r.row for r in todo]))
        log.info("resume: %d of %d rows exist upstream", len(found), len(rows))
        return todo

    def sweep(self, run: Run, deadline: float | None = None, listing: list[Hospital] | None = None) -> int | None:
        """Delete the batch's own hospitals upstream that no row owns (late duplicates), reading the
        batch unless `listing` is given; return how many went, or None when the listing holds a
        hospital of another batch: one that ignored its filter cannot tell what is ours."""
        batch_id = run.id
        owned = {r.hospital_id for r in self.store.get_batch(batch_id).rows if r.status in EXISTING}
        listing = self.client.list_batch(batch_id, deadline) if listing is None else listing
        if others := strangers(batch_id, listing):
            log.warning("the directory's listing of batch %s holds %d hospitals of other batches (ids %s): "
                        "it is not trusted, and nothing is deleted", batch_id, len(others),
                        ", ".join(str(h.id) for h in others[:10]))
            return None
        extra = [h for h in listing if h.id not in owned]
        if extra:  # nothing is deleted by a run that lost the batch: the rows are another run's now
            run.holds(self.store.holds(run))
        removed = sum(self.client.delete_hospital(h.id, deadline) for h in extra)
        if extra:
            log.warning("duplicates_removed=%d: late duplicates of our own retries deleted (ids %s)",
                        removed, ", ".join(str(h.id) for h in extra))
            metrics.duplicates_removed.inc(removed)
        return removed

    # -- one row ---------------------------------------------------------------------------

    def _create_row(self, run: Run, row: Row, deadline: float, slot_at: float | None = None) -> None:
        """Create one row upstream and record its outcome; a row's failure is data, never raised.

        Raises StoreUnavailable: then nothing more is sent for the row (each attempt is written
        first), and the batch, told by create(), closes it as failed for a resume to settle; and
        RunLost: the run lost the batch, so nothing more is sent or written.
        """
        try:
            hospital = self.post(run, row, deadline, slot_at)
        except (StoreUnavailable, RunLost):
            raise
        except Refused as exc:
            log.warning("row %d refused: %s", row.row, exc)
            # A refusal is an answer: nothing was created, so a resume need not wait for it to land.
            self._record_failed(run, row, str(exc), may_have_landed=False)
        except _Stopped:
            self._leave_pending(run, row)
        except UpstreamError as exc:
            if self._stopping.is_set():  # a wait cut short by the shutdown, not the directory's failure
                self._leave_pending(run, row)
                return
            log.warning("row %d failed: %s", row.row, exc)
            self._record_failed(run, row, str(exc))
        except Exception as exc:  # the task boundary: nothing may escape a worker thread unrecorded
            log.exception("row %d failed unexpectedly", row.row)
            self._record_failed(run, row, f"Unexpected error ({type(exc).__name__}); the row can be resumed.")
        else:
            self._record_created(run, row, hospital.id)

    def _leave_pending(self, run: Run, row: Row) -> None:
        log.warning("row %d left pending: shutting down", row.row)
        run.holds(self.store.mark_rows_pending(run, [row.row], STOPPED_ROW))

    def _record_created(self, run: Run, row: Row, hospital_id: int) -> None:
        run.holds(self.store.record_created(run, row.row, hospital_id))
        metrics.hospitals_created.inc()

    def _record_failed(self, run: Run, row: Row, error: str, *, may_have_landed: bool = True) -> None:
        run.holds(self.store.record_row_failed(run, row.row, error, may_have_landed=may_have_landed))
        metrics.rows_failed.inc()

    def post(self, run: Run, row: Row, deadline: float | None = None, slot_at: float | None = None) -> Hospital:
        """Post the row until it exists upstream, at most once; its first slot is already taken
        (written in flight at `slot_at`, when given).

        Each attempt is written (with the moment it goes out) before it is sent, which also proves
        the run still owns the batch. Raises Refused, GaveUp, _Stopped or RunLost.
        """
        batch_id = run.id
        attempts = self.client.attempts(f"creating row {row.row}", deadline)
        first = True
        while True:
            if self._stopping.is_set():
                raise _Stopped
            run.check()
            if not first:
                self.limiter.acquire(deadline)
            sent_at = self._clock()
            if not first or slot_at is None or sent_at - slot_at > self._sent_at_once:
                run.holds(self.store.mark_rows_in_flight(run, [row.row], sent_at))
            first = False
            try:
                return self.client.create_hospital(batch_id, row.name, row.address, row.phone, deadline)
            except NotSent as exc:
                run.holds(self.store.mark_row_unsent(run, row.row))
                if exc.unreachable:
                    self.limiter.give_back()  # no connection: the upstream never counted it
                # A shared limiter holds every creation back after a 429; without one, we wait here.
                attempts.wait_after(exc, hold=exc.rate_limited and not self.limiter.back_off())
            except MaybeLanded as exc:
                found = self._landed(run, row, exc, sent_at, self._clock(), deadline)
                if found is not None:
                    log.info("row %d was created by an attempt whose answer was lost (%s)", row.row, exc)
                    return found
                attempts.wait_after(exc)

    def _landed(self, run: Run, row: Row, failure: MaybeLanded, sent_at: float, failed_at: float,
                deadline: float | None) -> Hospital | None:
        """The row's hospital if the failed attempt created it, read once it could have landed."""
        found = self._find(run.id, row, self._read_at(run, failed_at, READ_TICK, deadline))
        if found is not None or failure.answered:
            return found
        if sent_at + self.settle_seconds > self._clock():
            log.info("row %d: waiting %.1f s for a creation that may still land",
                     row.row, sent_at + self.settle_seconds - self._clock())
        tick = max(READ_TICK, self.settle_seconds / 20)
        return self._find(run.id, row, self._read_at(run, sent_at + self.settle_seconds, tick, deadline))

    def _read_at(self, run: Run, moment: float, tick: float, deadline: float | None) -> list[Hospital]:
        """The batch's listing as read at or after `moment`, rounded up to a multiple of `tick` so
        that rows failing together share one read; raises _Stopped when shutdown interrupts the wait."""
        moment = math.ceil(moment / tick) * tick
        if moment > self._clock() and run.wait(moment - self._clock()):
            raise _Stopped
        return self._listings.read_since(run.id, moment, deadline)

    def _find(self, batch_id: str, row: Row, listing: list[Hospital]) -> Hospital | None:
        """This row's hospital in the listing: same name, address and phone, not claimed by another row."""
        claimed = {r.hospital_id for r in self.store.get_batch(batch_id).rows if r.row != row.row and r.hospital_id}
        return min((h for h in ours(batch_id, listing) if h.id not in claimed and matches(row, h)),
                   key=lambda h: h.id, default=None)


def unfinished(rows: list[Row]) -> list[int]:
    """The rows neither created, failed nor cancelled."""
    return [r.row for r in rows if r.status not in EXISTING | {RowStatus.FAILED, RowStatus.CANCELLED}]
