"""Orchestration: start a batch, have its rows created, activate, resume, roll back.

Every state change goes through the Store before the next upstream call, so any process can
report on a batch, and a batch whose process died can be finished by another.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from .. import metrics
from ..errors import BatchConflict, BatchNotFound, StoreUnavailable, UpstreamError, UpstreamUnavailable
from ..files.rules import HospitalRow
from ..logs import in_batch_context
from ..states import EXISTING, FINAL, RESUMABLE, BatchStatus, RowStatus
from ..store import Batch, Row, Store
from ..upstream.client import DirectoryClient
from .documents import batch_document, reported_status, summary_document
from .rate_limit import Limiter, NoLimiter
from .rows import RowCreator, unfinished

log = logging.getLogger(__name__)

STOPPED_BATCH = "The service stopped before the batch finished; resume it to create the rows left pending."
WAITING = "Waiting for the directory, unreachable for {seconds:.0f} s; the batch goes on when it is back."
STORE_FAILED = ("The job store failed while the batch was processed; resume it to learn from the directory "
                "which rows exist and to create the others.")


class Jobs:
    """Runs batches: one process-wide executor for row creations, shared by every upload."""

    def __init__(self, store: Store, client: DirectoryClient, *, limiter: Limiter | None = None,
                 concurrency: int = 20, lease_seconds: float = 10.0, batch_deadline: float = 900.0,
                 wake_timeout: float = 90.0, settle_seconds: float = 90.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.store, self.client = store, client
        # Set by close(): batches waiting for the rate window stop waiting and leave rows pending.
        self._stopping = threading.Event()
        # What runs batches on top of this (imports) stops first, once the waits are cut short.
        self._also_close: list[Callable[[], None]] = []
        self.lease_seconds, self.batch_deadline, self.wake_timeout = lease_seconds, batch_deadline, wake_timeout
        # Leases, run times and settle waits are compared across instances: the store's clock, by default.
        self._clock = clock or store.now
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._rows = ThreadPoolExecutor(concurrency, thread_name_prefix="bulkproc-row")
        # Batches wait on their rows, so they must not take seats in the rows' pool.
        self._batches = ThreadPoolExecutor(32, thread_name_prefix="bulkproc-batch")
        self.rows = RowCreator(store, client, limiter or NoLimiter(), self._rows, stopping=self._stopping,
                               settle_seconds=settle_seconds, clock=self._clock)

    def close(self) -> None:
        """Stop waiting for rate windows, let requests in flight finish, release threads and connections."""
        self._stopping.set()
        for close in self._also_close:
            close()
        self._batches.shutdown(wait=True)
        self._rows.shutdown(wait=True)
        self.client.close()

    def close_with(self, close: Callable[[], None]) -> None:
        """Call `close` from close(), after waits are cut short and before the batch threads are joined."""
        self._also_close.append(close)

    @property
    def stopping(self) -> bool:
        """Whether close() has begun."""
        return self._stopping.is_set()

    # -- reading -------------------------------------------------------------------------

    def load(self, batch_id: str) -> Batch:
        """The batch; raises BatchNotFound, or StoreUnavailable naming the batch."""
        try:
            batch = self.store.get_batch(batch_id) if is_uuid(batch_id) else None
        except StoreUnavailable as exc:
            raise exc.about(batch_id) from exc
        if batch is None:
            raise BatchNotFound(batch_id)
        return batch

    def document(self, batch_id: str) -> dict[str, Any]:
        """The batch's status document now; raises BatchNotFound."""
        batch = self.load(batch_id)
        return batch_document(batch, batch.read_at)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """Summaries of the newest `limit` batches, newest first."""
        return [summary_document(b, b.read_at) for b in self.store.recent(limit)]

    def watch(self, batch_id: str, quiet_after: float) -> Iterator[dict[str, Any] | None]:
        """The batch's document now and after each change, whichever process makes it, or None
        when `quiet_after` seconds pass without one; ends after the first final document."""
        return follow(lambda: self.store.version(batch_id), lambda: self.document(batch_id),
                      lambda seen, timeout: self.store.wait_for_change(batch_id, seen, timeout),
                      FINAL, quiet_after)

    def wait_until_final(self, batch_id: str) -> None:
        """Block until the batch reaches a final state, whichever process is running it."""
        for _ in self.watch(batch_id, self.lease_seconds):
            pass

    # -- starting and running ------------------------------------------------------------

    def start(self, rows: Iterable[HospitalRow], *, idempotency_key: str | None = None,
              file_sha256: str | None = None) -> tuple[str, bool]:
        """Record a new batch owned by this process; (id, True), or an earlier upload's (id, False)."""
        return self.store.insert_batch(str(uuid.uuid4()), rows, owner=self.owner, lease_until=self._lease_end(),
                                       idempotency_key=idempotency_key, file_sha256=file_sha256)

    def run(self, batch_id: str) -> None:
        """Process a batch this process holds the lease of, in the calling thread."""
        in_batch_context(batch_id, self._process)(batch_id, False)

    def run_in_background(self, batch_id: str, resuming: bool = False,
                          started: threading.Event | None = None) -> Future:
        """Process (or resume) a batch this process holds the lease of, on the batch executor;
        `started` is set once no row of it waits for a limiter slot any more."""
        return self._batches.submit(in_batch_context(batch_id, self._process), batch_id, resuming, started)

    def take_over(self, batch_id: str) -> bool:
        """Take the lease of a resumable batch for this process; False when it is not done or
        not resumable (BatchConflict when it is being processed or rolled back)."""
        batch = self.load(batch_id)
        status = reported_status(batch, batch.read_at)
        if status == BatchStatus.COMPLETED:
            return False
        if status not in RESUMABLE:
            raise BatchConflict(f"Batch {batch_id} is {status}; only a partially_failed, failed, "
                                "interrupted or cancelled batch can be resumed.")
        if not self.store.take_lease(batch_id, self.owner, self._lease_end(), RESUMABLE - {BatchStatus.INTERRUPTED}):
            raise BatchConflict(f"Batch {batch_id} is already being resumed.")
        return True

    def resume(self, batch_id: str) -> None:
        """Finish a batch this process has taken over, in the calling thread."""
        in_batch_context(batch_id, self._process)(batch_id, True)

    def _lease_end(self) -> float:
        return self._clock() + self.lease_seconds

    def _process(self, batch_id: str, resuming: bool, started: threading.Event | None = None) -> None:
        """Run the batch; when the store fails, stop sending, close the batch once the store is back,
        and raise StoreUnavailable naming it."""
        error = "Processing was stopped before it finished; the batch can be resumed."
        try:
            self.store.start_run(batch_id, self._clock())
            log.info("processing (%s)", "resume" if resuming else "new")
            with self._leased(batch_id):
                error = self._work(batch_id, resuming, started)
            self._end_run(batch_id, error)
        except StoreUnavailable as exc:
            log.error("the job store failed (%s): nothing more is sent, and the batch is closed, resumable, "
                      "as soon as the store answers again", exc.reason)
            self._close_later(batch_id)
            raise exc.about(batch_id) from exc
        except BaseException:
            self._end_run(batch_id, error)
            raise

    def _end_run(self, batch_id: str, error: str | None, *, fail_unfinished: bool = False) -> None:
        if fail_unfinished:
            self._fail_unfinished(batch_id, error)
        outcome = _outcome(self.store.get_batch(batch_id))
        self.store.finish_run(batch_id, outcome, error, self._clock())
        metrics.batches_finished.labels(outcome).inc()
        log.info("finished: %s", outcome)

    def _close_later(self, batch_id: str) -> None:
        """Once the store answers again, fail the rows a store failure left open and end the run, so that
        no row reads in_progress and a resume can finish the batch; unless another process took it over."""
        def close() -> None:
            pause = 0.05
            while not self._stopping.wait(pause):
                try:
                    if self.store.renew_lease(batch_id, self.owner, self._lease_end()):
                        self._end_run(batch_id, STORE_FAILED, fail_unfinished=True)
                    else:
                        log.warning("another process took the batch over while the job store was failing")
                    return
                except StoreUnavailable:
                    pause = min(pause * 2, 2.0)

        if not self._stopping.is_set():
            self._batches.submit(in_batch_context(batch_id, close))

    def _work(self, batch_id: str, resuming: bool, started: threading.Event | None = None) -> str | None:
        """Create what is missing and activate; return the batch-level error, if any."""
        deadline = time.monotonic() + self.batch_deadline
        try:
            todo = self._rows_to_create(batch_id, resuming, deadline)
            if todo:
                self.client.wake(self.wake_timeout)
                self.rows.create(batch_id, todo, deadline, started)
            if self._stopping.is_set() and not all(r.status in EXISTING
                                                   for r in self.store.get_batch(batch_id).rows):
                return STOPPED_BATCH
            return self._finish(batch_id, deadline)
        except StoreUnavailable:
            raise
        except UpstreamError as exc:
            error = f"The directory could not be reached: {exc}"
        except Exception:
            log.exception("processing stopped by an unexpected error")
            error = "Processing stopped by an unexpected error; the batch can be resumed."
        self._fail_unfinished(batch_id, error)
        return error

    def _fail_unfinished(self, batch_id: str, error: str | None) -> None:
        """Mark the rows neither created nor failed yet `failed` with `error`."""
        left = unfinished(self.store.get_batch(batch_id).rows)
        if left:
            self.store.mark_rows_failed(batch_id, left, error)
            metrics.rows_failed.inc(len(left))

    def _rows_to_create(self, batch_id: str, resuming: bool, deadline: float) -> list[Row]:
        """The rows still to create; on resume, first learn from the upstream which rows exist."""
        if resuming:
            return self.rows.reconcile(batch_id, deadline)
        return [r for r in self.store.get_batch(batch_id).rows if r.status not in EXISTING]

    @contextmanager
    def _leased(self, batch_id: str) -> Iterator[None]:
        """Renew this process's lease on the batch every third of its length while the block runs,
        so that a wake-up call or a slow activation cannot make a live batch read `interrupted`.

        Each renewal also banks the run's time so far, so a kill loses at most one renewal's worth,
        and says in the batch's `error` when the directory is being waited for.
        """
        done = threading.Event()

        def keep() -> None:
            waiting = False
            while not done.wait(self.lease_seconds / 3):
                try:
                    if not self.store.renew_lease(batch_id, self.owner, self._lease_end(), self._clock()):
                        log.error("lost the lease: another process took the batch over")
                        return
                    waiting = self._show_outage(batch_id, waiting)
                except StoreUnavailable as exc:
                    log.warning("could not renew the lease: the job store is unavailable (%s)", exc.reason)

        keeper = threading.Thread(target=in_batch_context(batch_id, keep), name=f"lease-{batch_id[:8]}",
                                  daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()

    def _show_outage(self, batch_id: str, shown: bool) -> bool:
        """Say in the batch's error that the directory is being waited for, or clear it once it
        answers again; return whether it is shown now."""
        seconds = self.client.unreachable_for()
        if seconds is not None:
            self.store.set_error(batch_id, WAITING.format(seconds=seconds))
            return True
        if shown:
            self.store.set_error(batch_id, None)
        return False

    def _finish(self, batch_id: str, deadline: float) -> str | None:
        """Activate the batch when every row exists, with no hospital upstream that no row owns,
        and check once more after; return the batch-level error, if any."""
        batch = self.store.get_batch(batch_id)
        if not all(r.status in EXISTING for r in batch.rows):
            return None
        trusted = self.rows.sweep(batch_id, deadline) is not None
        self.store.set_status(batch_id, BatchStatus.ACTIVATING)
        try:
            # It counts only when the listing shows every row's hospital active.
            listing = self.client.activate_batch(batch_id, [r.hospital_id for r in batch.rows if r.hospital_id],
                                                 deadline)
        except UpstreamError as exc:
            log.error("activation failed: %s", exc)
            return f"Every row exists but the batch could not be activated: {exc}"
        self.store.mark_activated(batch_id)
        # A creation slower than our wait for it may land between the sweep and the activation:
        # the listing that showed the batch active shows it too (unless the upstream's listings
        # were found untrustworthy: then nothing is deleted, and it was said once).
        try:
            if trusted:
                self.rows.sweep(batch_id, deadline, listing)
        except UpstreamError as exc:
            log.error("the batch is active, but could not be checked for late duplicates: %s", exc)
        return None

    # -- rolling back --------------------------------------------------------------------

    def roll_back(self, batch_id: str) -> None:
        """Delete the batch's hospitals upstream and mark it rolled_back (BatchConflict while it runs)."""
        self.load(batch_id)  # BatchNotFound before anything else
        if not self.store.take_lease(batch_id, self.owner, self._lease_end(), FINAL - {BatchStatus.INTERRUPTED}):
            raise BatchConflict(f"Batch {batch_id} is being processed; it cannot be rolled back now.")
        in_batch_context(batch_id, self._roll_back)(batch_id)

    def _roll_back(self, batch_id: str) -> None:
        try:
            with self._leased(batch_id):
                deleted = self.client.delete_batch(batch_id)
        except UpstreamError as exc:
            self.store.release_lease(batch_id, _outcome(self.store.get_batch(batch_id)))
            raise UpstreamUnavailable(f"The directory could not delete the batch: {exc}") from exc
        self.store.mark_rolled_back(batch_id)
        metrics.batches_finished.labels(BatchStatus.ROLLED_BACK).inc()
        log.info("rolled back: %d hospitals deleted upstream", deleted)


def _outcome(batch: Batch) -> str:
    if batch.activated:
        return BatchStatus.COMPLETED
    if any(r.status == RowStatus.CANCELLED for r in batch.rows):
        return BatchStatus.CANCELLED
    if any(r.status in EXISTING for r in batch.rows):
        return BatchStatus.PARTIALLY_FAILED
    return BatchStatus.FAILED


def is_uuid(text: str) -> bool:
    """Whether `text` is a UUID in its canonical form (any case): the only ids we hand out."""
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def follow(version: Callable[[], int | None], document: Callable[[], dict[str, Any]],
           wait_for_change: Callable[[int | None, float], object], final: Collection[str],
           quiet_after: float) -> Iterator[dict[str, Any] | None]:
    """A document now and after each change of its `version`, whichever process makes it, or None
    when `quiet_after` seconds pass without one; ends after the first document whose status is final."""
    while True:
        seen = version()  # read before the document, so that no change falls between the two
        current = document()
        yield current
        if current["status"] in final:
            return
        started = time.monotonic()
        wait_for_change(seen, quiet_after)
        if time.monotonic() - started >= quiet_after:
            yield None
