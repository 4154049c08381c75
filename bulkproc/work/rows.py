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
from ..errors import MaybeLanded, NotSent, Refused, StoreUnavailable, UpstreamError
from ..logs import in_batch_context
from ..states import EXISTING, RowStatus
from ..store import Row, Store
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
        self._clock = clock
        self._listings = Listings(client, clock)

    # -- many rows -------------------------------------------------------------------------

    def create(self, batch_id: str, rows: list[Row], deadline: float, started: threading.Event | None = None) -> None:
        """Create the rows concurrently and return when every one has an outcome (StoreUnavailable when
        one could not be written); `started` is set once no row waits for a slot any more.

        Slots are taken here, as many at a time as the limit allows, and only rows holding one go
        to the executor: a row waiting for the window keeps no seat from rows that could go now,
        and it reads `pending` meanwhile.
        """
        work = in_batch_context(batch_id, self._create_row)
        futures, waiting = [], list(rows)
        try:
            while waiting and not self.store.is_cancelling(batch_id):
                taken, wait_seconds = self.limiter.take(len(waiting))
                going, waiting = waiting[:taken], waiting[taken:]
                if going:
                    if not self.store.start_rows(batch_id, [r.row for r in going], self._clock()):
                        break  # its import was cancelled between the look and the slots
                    futures += [self._executor.submit(work, batch_id, row, deadline) for row in going]
                if waiting and time.monotonic() + wait_seconds >= deadline:
                    self.store.mark_rows_failed(batch_id, [r.row for r in waiting],
                                                f"Gave up: {DEADLINE_MESSAGE}; the row can be resumed.")
                    metrics.rows_failed.inc(len(waiting))
                    break
                if waiting and self._pause(batch_id, wait_seconds):
                    if self._stopping.is_set():
                        log.warning("shutting down: %d rows left pending; resume the batch to create them",
                                    len(waiting))
                        self.store.mark_rows_pending(batch_id, [r.row for r in waiting], STOPPED_ROW)
                    break
            if self.store.is_cancelling(batch_id):
                log.info("import cancelled: rows not started read cancelled; rows in flight finish")
                self.store.cancel_pending_rows(batch_id)
        finally:
            if started is not None:
                started.set()
            # Also when the store fails: whoever closes the batch must find no row still in flight.
            wait(futures)
            self._listings.forget(batch_id)
        lost = next((f.exception() for f in futures if f.exception() is not None), None)
        if lost is not None:
            raise lost  # StoreUnavailable: some row's state could not be written

    def _pause(self, batch_id: str, seconds: float) -> bool:
        """Wait `seconds` for the rate window, counting the wait; True when waiting should stop
        instead: shutting down, or the batch's import cancelled (from any process)."""
        started = time.monotonic()
        end = started + seconds
        try:
            while (left := end - time.monotonic()) > 0:
                if self._stopping.wait(min(left, CANCEL_POLL_SECONDS)) or self.store.is_cancelling(batch_id):
                    return True
            return False
        finally:
            metrics.rate_limit_wait.inc(time.monotonic() - started)

    def reconcile(self, batch_id: str, deadline: float) -> list[Row]:
        """On resume: record the rows that exist upstream and return the others, reset to pending.

        A creation sent just before its process died may still be on its way: the upstream shows a
        hospital only once its work is over. Rows whose last attempt may have reached the upstream
        are given time to land first; rows whose attempts never did are known to be absent and wait
        for nothing. [] when shutdown interrupts the wait (the batch stays resumable as it was).
        """
        rows = self.store.get_batch(batch_id).rows
        found, todo = match(rows, ours(batch_id, self.client.list_batch(batch_id, deadline)))
        settled_at = max((r.attempted_at + self.settle_seconds for r in todo if r.attempted_at is not None),
                         default=0.0)
        if settled_at > self._clock():
            log.info("waiting %.1f s for creations that may still be in flight", settled_at - self._clock())
            if self._stopping.wait(settled_at - self._clock()):
                return []
            found, todo = match(rows, ours(batch_id, self.client.list_batch(batch_id, deadline)))
        for row, hospital in found.items():
            if (row.status, row.hospital_id) != (RowStatus.CREATED, hospital.id):
                self._record_created(batch_id, row, hospital.id)
        if todo:
            self.store.mark_rows_pending(batch_id, [r.row for r in todo])
        log.info("resume: %d of %d rows exist upstream", len(found), len(rows))
        return todo

    def sweep(self, batch_id: str, deadline: float | None = None,
              listing: list[Hospital] | None = None) -> int | None:
        """Delete the batch's own hospitals upstream that no row owns (late duplicates), reading the
        batch unless `listing` is given; return how many went, or None when the listing holds a
        hospital of another batch: one that ignored its filter cannot tell what is ours."""
        owned = {r.hospital_id for r in self.store.get_batch(batch_id).rows if r.status in EXISTING}
        listing = self.client.list_batch(batch_id, deadline) if listing is None else listing
        if others := strangers(batch_id, listing):
            log.warning("the directory's listing of batch %s holds %d hospitals of other batches (ids %s): "
                        "it is not trusted, and nothing is deleted", batch_id, len(others),
                        ", ".join(str(h.id) for h in others[:10]))
            return None
        extra = [h for h in listing if h.id not in owned]
        removed = sum(self.client.delete_hospital(h.id, deadline) for h in extra)
        if extra:
            log.warning("duplicates_removed=%d: late duplicates of our own retries deleted (ids %s)",
                        removed, ", ".join(str(h.id) for h in extra))
            metrics.duplicates_removed.inc(removed)
        return removed

    # -- one row ---------------------------------------------------------------------------

    def _create_row(self, batch_id: str, row: Row, deadline: float) -> None:
        """Create one row upstream and record its outcome; a row's failure is data, never raised.

        Raises StoreUnavailable: then nothing more is sent for the row (each attempt is written
        first), and the batch, told by create(), closes it as failed for a resume to settle.
        """
        try:
            hospital = self.post(batch_id, row, deadline)
        except StoreUnavailable:
            raise
        except Refused as exc:
            log.warning("row %d refused: %s", row.row, exc)
            # A refusal is an answer: nothing was created, so a resume need not wait for it to land.
            self._record_failed(batch_id, row, str(exc), may_have_landed=False)
        except _Stopped:
            log.warning("row %d left pending: shutting down", row.row)
            self.store.mark_rows_pending(batch_id, [row.row], STOPPED_ROW)
        except UpstreamError as exc:
            log.warning("row %d failed: %s", row.row, exc)
            self._record_failed(batch_id, row, str(exc))
        except Exception as exc:  # the task boundary: nothing may escape a worker thread unrecorded
            log.exception("row %d failed unexpectedly", row.row)
            self._record_failed(batch_id, row, f"Unexpected error ({type(exc).__name__}); the row can be resumed.")
        else:
            self._record_created(batch_id, row, hospital.id)

    def _record_created(self, batch_id: str, row: Row, hospital_id: int) -> None:
        self.store.record_created(batch_id, row.row, hospital_id)
        metrics.hospitals_created.inc()

    def _record_failed(self, batch_id: str, row: Row, error: str, *, may_have_landed: bool = True) -> None:
        self.store.record_row_failed(batch_id, row.row, error, may_have_landed=may_have_landed)
        metrics.rows_failed.inc()

    def post(self, batch_id: str, row: Row, deadline: float | None = None) -> Hospital:
        """Post the row until it exists upstream, at most once; its first slot is already taken.

        Raises Refused or GaveUp.
        """
        attempts = self.client.attempts(f"creating row {row.row}", deadline)
        first = True
        while True:
            sent_at = self._clock()
            if not first:
                self.limiter.acquire(deadline)
                sent_at = self._clock()
                self.store.mark_rows_in_flight(batch_id, [row.row], sent_at)
            first = False
            try:
                return self.client.create_hospital(batch_id, row.name, row.address, row.phone)
            except NotSent as exc:
                self.store.mark_row_unsent(batch_id, row.row)
                if exc.unreachable:
                    self.limiter.give_back()  # no connection: the upstream never counted it
                # A shared limiter holds every creation back after a 429; without one, we wait here.
                attempts.wait_after(exc, hold=exc.rate_limited and not self.limiter.back_off())
            except MaybeLanded as exc:
                found = self._landed(batch_id, row, exc, sent_at, self._clock(), deadline)
                if found is not None:
                    log.info("row %d was created by an attempt whose answer was lost (%s)", row.row, exc)
                    return found
                attempts.wait_after(exc)

    def _landed(self, batch_id: str, row: Row, failure: MaybeLanded, sent_at: float, failed_at: float,
                deadline: float | None) -> Hospital | None:
        """The row's hospital if the failed attempt created it, read once it could have landed."""
        found = self._find(batch_id, row, self._read_at(batch_id, failed_at, READ_TICK, deadline))
        if found is not None or failure.answered:
            return found
        if sent_at + self.settle_seconds > self._clock():
            log.info("row %d: waiting %.1f s for a creation that may still land",
                     row.row, sent_at + self.settle_seconds - self._clock())
        tick = max(READ_TICK, self.settle_seconds / 20)
        return self._find(batch_id, row, self._read_at(batch_id, sent_at + self.settle_seconds, tick, deadline))

    def _read_at(self, batch_id: str, moment: float, tick: float, deadline: float | None) -> list[Hospital]:
        """The batch's listing as read at or after `moment`, rounded up to a multiple of `tick` so
        that rows failing together share one read; raises _Stopped when shutdown interrupts the wait."""
        moment = math.ceil(moment / tick) * tick
        if moment > self._clock() and self._stopping.wait(moment - self._clock()):
            raise _Stopped
        return self._listings.read_since(batch_id, moment, deadline)

    def _find(self, batch_id: str, row: Row, listing: list[Hospital]) -> Hospital | None:
        """This row's hospital in the listing: same name, address and phone, not claimed by another row."""
        claimed = {r.hospital_id for r in self.store.get_batch(batch_id).rows if r.row != row.row and r.hospital_id}
        return min((h for h in ours(batch_id, listing) if h.id not in claimed and matches(row, h)),
                   key=lambda h: h.id, default=None)


def unfinished(rows: list[Row]) -> list[int]:
    """The rows neither created, failed nor cancelled."""
    return [r.row for r in rows if r.status not in EXISTING | {RowStatus.FAILED, RowStatus.CANCELLED}]
