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
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .. import metrics
from ..contract import BatchDocument, BatchSummary, ImportDocument
from ..errors import BatchConflict, BatchNotFound, RunLost, StoreUnavailable, UpstreamError, UpstreamUnavailable
from ..files.rules import HospitalRow
from ..logs import in_batch_context, log_finished
from ..states import ACTIVATABLE, EXISTING, FINAL, IN_BATCH, RESUMABLE, BatchStatus, RowStatus
from ..store import Batch, Row, Run, Store
from ..store.leases import new_token
from ..upstream.client import DirectoryClient
from .documents import batch_document, reported_status, summary_document
from .heartbeat import Heartbeat
from .rate_limit import Limiter, NoLimiter
from .reconcile import in_directory, match, ours
from .rows import RowCreator, unfinished

log = logging.getLogger(__name__)

STOPPED_BATCH = "The service stopped before the batch finished; resume it to create the rows left pending."
WAITING = "Waiting for the directory, unreachable for {seconds:.0f} s; the batch goes on when it is back."
LEFT_OUT = ("Not in the directory when the batch was finished without its failed rows; fix it in "
            "failed.csv and upload it again.")
NOTHING_UPSTREAM = ("Batch {batch_id} has no row created in the directory, so there is nothing to activate: "
                    "resume it to create its rows, or roll it back.")
STORE_FAILED = ("The job store failed while the batch was processed; resume it to learn from the directory "
                "which rows exist and to create the others.")


class Jobs:
    """Runs batches: one process-wide executor for row creations, shared by every upload."""

    def __init__(self, store: Store, client: DirectoryClient, *, limiter: Limiter | None = None,
                 concurrency: int = 20, lease_seconds: float = 10.0, batch_deadline: float = 900.0,
                 wake_timeout: float = 90.0, settle_seconds: float = 90.0,
                 clock: Callable[[], float] | None = None, stopping: threading.Event | None = None,
                 heartbeat: Heartbeat | None = None) -> None:
        self.store, self.client = store, client
        # Set by close(): batches waiting for the rate window stop waiting and leave rows pending.
        self._stopping = stopping or threading.Event()
        # What runs batches on top of this (imports) stops first, once the waits are cut short.
        self._also_close: list[Callable[[], None]] = []
        self.lease_seconds, self.batch_deadline, self.wake_timeout = lease_seconds, batch_deadline, wake_timeout
        # Leases, run times and settle waits are compared across instances: the store's clock, by default.
        self._clock = clock or store.now
        self.heartbeat = heartbeat or Heartbeat(store, process_id(), lease_seconds, stopping=self._stopping)
        # The process id its heartbeat renews by (runs are told apart by their tokens).
        self.owner = self.heartbeat.owner
        self._rows = ThreadPoolExecutor(concurrency, thread_name_prefix="bulkproc-row")
        # Batches wait on their rows, so they must not take seats in the rows' pool.
        self._batches = ThreadPoolExecutor(32, thread_name_prefix="bulkproc-batch")
        self.rows = RowCreator(store, client, limiter or NoLimiter(), self._rows, stopping=self._stopping,
                               settle_seconds=settle_seconds, clock=self._clock)
        # The runs whose batch says it waits for the directory.
        self._outage_shown: set[Run] = set()

    def close(self) -> None:
        """Stop waiting for rate windows, let requests in flight finish, release threads and connections;
        runs still queued close at once, resumable. The heartbeat renews until every run has ended."""
        self._stopping.set()
        self.heartbeat.stop_runs()
        for close in self._also_close:
            close()
        self._batches.shutdown(wait=True)
        self._rows.shutdown(wait=True)
        self.heartbeat.close()
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

    def document(self, batch_id: str) -> BatchDocument:
        """The batch's status document now; raises BatchNotFound."""
        batch = self.load(batch_id)
        return batch_document(batch, batch.read_at)

    def recent(self, limit: int, standalone: bool = False) -> list[BatchSummary]:
        """Summaries of the newest `limit` batches, newest first (with `standalone`, none of an import's)."""
        return [summary_document(b, b.read_at) for b in self.store.recent(limit, standalone)]

    def watch(self, batch_id: str, quiet_after: float) -> Iterator[BatchDocument | None]:
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
              file_sha256: str | None = None, already_there: dict[int, int] | None = None) -> tuple[str, bool]:
        """Record a new batch owned by a new run of this process, its rows in `already_there` (row ->
        hospital id) read already_in_directory; (id, True), or an earlier upload's (id, False)."""
        run = Run(str(uuid.uuid4()), new_token())
        batch_id, new = self.store.insert_batch(run.id, rows, owner=self.owner, lease_until=self._lease_end(),
                                                token=run.token, idempotency_key=idempotency_key,
                                                file_sha256=file_sha256)
        if new:  # its lease, written with it, lasts until the heartbeat's next renewal
            self.heartbeat.hold(run)
            if already_there:
                run.holds(self.store.record_in_directory(run, already_there))
        return batch_id, new

    def seen(self, idempotency_key: str | None) -> bool:
        """Whether an earlier upload used this Idempotency-Key (its repeat reads nothing upstream)."""
        return idempotency_key is not None and self.store.find_by_idempotency_key(idempotency_key) is not None

    def find_in_directory(self, rows: Iterable[HospitalRow]) -> dict[int, int]:
        """Read the directory once and return the rows an active hospital there already holds (row ->
        hospital id); UpstreamUnavailable when it cannot be read, so that nothing is created."""
        try:
            directory = self.client.list_hospitals()
        except UpstreamError as exc:
            raise UpstreamUnavailable("The directory could not be read to find the hospitals it already has, "
                                      f"so nothing was created: {exc}") from exc
        return in_directory(rows, directory)

    def run(self, batch_id: str) -> None:
        """Process a batch this process has accepted or taken over, in the calling thread."""
        in_batch_context(batch_id, self._process)(self._held(batch_id), False)

    def run_in_background(self, batch_id: str, resuming: bool = False, run: Run | None = None,
                          underway: threading.Event | None = None, leaving_failed: bool = False) -> Future:
        """Process (or resume, or finish without its failed rows) a batch this process holds (as `run`,
        or as held here), on the batch executor; `underway` is set once no row of it waits for a
        limiter slot any more."""
        return self._batches.submit(in_batch_context(batch_id, self._process), run or self._held(batch_id),
                                    resuming, underway, leaving_failed)

    def take_over(self, batch_id: str) -> bool:
        """Take a resumable batch for a new run of this process; False when it is done
        (BatchConflict when it is not resumable: being processed or rolled back)."""
        batch = self.load(batch_id)
        status = reported_status(batch, batch.read_at)
        if status == BatchStatus.COMPLETED:
            return False
        if status not in RESUMABLE:
            raise BatchConflict(f"Batch {batch_id} is {status}; only a partially_failed, failed, "
                                "interrupted or cancelled batch can be resumed.")
        if self._take(batch_id, RESUMABLE - {BatchStatus.INTERRUPTED}) is None:
            raise BatchConflict(f"Batch {batch_id} is already being resumed.")
        return True

    def resume(self, batch_id: str) -> None:
        """Finish a batch this process has taken over, in the calling thread."""
        in_batch_context(batch_id, self._process)(self._held(batch_id), True)

    # -- finishing without the failed rows -------------------------------------------------

    def take_for_activation(self, batch_id: str) -> bool:
        """Take a batch to finish without its failed rows, for a new run of this process; False when it
        is completed (nothing to do); BatchConflict when it is running, final, or has nothing upstream."""
        batch = self.load(batch_id)
        status = reported_status(batch, batch.read_at)
        if status == BatchStatus.COMPLETED:
            return False
        if status not in ACTIVATABLE:
            raise BatchConflict(f"Batch {batch_id} is {status}; only a partially_failed, interrupted or "
                                "cancelled batch can be finished without its failed rows."
                                + (" Resume it or roll it back." if status == BatchStatus.FAILED else ""))
        # A row exists in the batch upstream only if it was created, or sent and perhaps landed.
        if not any(r.status in IN_BATCH or r.attempted_at is not None for r in batch.rows):
            raise BatchConflict(NOTHING_UPSTREAM.format(batch_id=batch_id))
        if self._take(batch_id, ACTIVATABLE - {BatchStatus.INTERRUPTED}) is None:
            raise BatchConflict(f"Batch {batch_id} is being resumed or finished by another request.")
        return True

    def activate(self, batch_id: str) -> None:
        """Finish a batch this process has taken for activation, in the calling thread; BatchConflict
        when it turned out that none of its rows exists upstream (it then reads failed)."""
        in_batch_context(batch_id, self._process)(self._held(batch_id), True, None, True)
        if self.store.get_batch(batch_id).status == BatchStatus.FAILED:
            raise BatchConflict(NOTHING_UPSTREAM.format(batch_id=batch_id))

    def _finish_without_failed(self, run: Run, deadline: float) -> str | None:
        """Learn which rows exist upstream (waiting for creations that may still land), leave the
        others out, and activate the batch with those that exist; the batch-level error, if any."""
        if self._learn_existing(run, deadline) is False:
            return STOPPED_BATCH
        batch = self.store.get_batch(run.id)
        if not any(r.status in IN_BATCH for r in batch.rows):
            return NOTHING_UPSTREAM.format(batch_id=run.id)
        log.info("finishing without the failed rows: %d of %d rows exist upstream",
                 sum(r.status in EXISTING for r in batch.rows), len(batch.rows))
        return self._activate(run, batch, deadline)

    def _learn_existing(self, run: Run, deadline: float) -> bool:
        """Record the rows that exist upstream; rows that do not keep their failure (or fail, left out);
        False when shutdown interrupts the wait for creations still in flight."""
        rows = self.store.get_batch(run.id).rows
        found, absent = match(rows, ours(run.id, self.client.list_batch(run.id, deadline)))
        settled = self.rows.settle(run, absent, what="before activating")
        if settled is False:
            return False
        if settled:
            found, absent = match(rows, ours(run.id, self.client.list_batch(run.id, deadline)))
        for row, hospital in found.items():
            if (row.status, row.hospital_id) != (RowStatus.CREATED, hospital.id):
                run.holds(self.store.record_created(run, row.row, hospital.id))
                metrics.hospitals_created.inc()
        left = [r.row for r in absent if r.status not in (RowStatus.FAILED, RowStatus.CANCELLED)]
        if left:
            run.holds(self.store.mark_rows_failed(run, left, LEFT_OUT))
            metrics.rows_failed.inc(len(left))
        return True

    def _take(self, batch_id: str, from_statuses: Collection[str]) -> Run | None:
        """Take the batch for a new run held by this process; None when it cannot be taken."""
        run = Run(batch_id, new_token())
        if not self.store.take_lease(batch_id, self.owner, self._lease_end(), from_statuses, run.token):
            return None
        return self.heartbeat.hold(run)

    def _held(self, batch_id: str) -> Run:
        """The run this process holds for the batch; one already lost when there is none."""
        run = self.heartbeat.find("batch", batch_id)
        if run is None:
            run = Run(batch_id, "")
            run.lose()
        return run

    def _lease_end(self) -> float:
        return self._clock() + self.lease_seconds

    def _process(self, run: Run, resuming: bool, underway: threading.Event | None = None,
                 leaving_failed: bool = False) -> None:
        """Run the batch as `run`; when the store fails, stop sending, close the batch once the store
        is back, and raise StoreUnavailable naming it; when the run lost the batch, stop at once."""
        self.heartbeat.hold(run, in_batch_context(run.id, lambda: self._show_outage(run)))
        closing = False
        try:
            self._run_once(run, resuming, underway, leaving_failed)
        except RunLost:
            log.warning("this run no longer owns the batch (taken over, rolled back or cancelled): "
                        "it stops here and writes nothing more")
        except StoreUnavailable as exc:
            log.error("the job store failed (%s): nothing more is sent, and the batch is closed, resumable, "
                      "as soon as the store answers again", exc.reason)
            closing = self._close_later(run)
            raise exc.about(run.id) from exc
        finally:
            if not closing:
                self.heartbeat.let_go(run)

    def _run_once(self, run: Run, resuming: bool, underway: threading.Event | None = None,
                  leaving_failed: bool = False) -> None:
        if self._stopping.is_set():
            # Still queued at shutdown: it never starts, and reads as a batch stopped gracefully does.
            log.info("not started: the service is stopping; resume the batch to create its rows")
            self._end_run(run, STOPPED_BATCH)
            return
        run.holds(self.store.start_run(run, self._clock()))
        log.info("processing (%s)", "activate" if leaving_failed else "resume" if resuming else "new")
        error = "Processing was stopped before it finished; the batch can be resumed."
        try:
            error = self._work(run, resuming, underway, leaving_failed)
        except (RunLost, StoreUnavailable):
            raise
        except BaseException:
            self._end_run(run, error)
            raise
        self._end_run(run, error)

    def _end_run(self, run: Run, error: str | None, *, fail_unfinished: bool = False) -> None:
        if fail_unfinished:
            self._fail_unfinished(run, error)
        batch, now = self.store.get_batch(run.id), self._clock()
        outcome = _outcome(batch)
        run.holds(self.store.finish_run(run, outcome, error, now))
        metrics.batches_finished.labels(outcome).inc()
        rows, seconds = Counter(r.status for r in batch.rows), now - (batch.run_started_at or now)
        log_finished(log, "batch", outcome, rows, seconds)

    def once_the_store_answers(self, write: Callable[[], object], first_pause: float = 0.05) -> bool:
        """Call `write` until the store lets it through, backing off up to 2 s between tries; False
        when the service stops first (RunLost and other errors of `write` propagate)."""
        pause = first_pause
        while not self._stopping.wait(pause):
            try:
                write()
                return True
            except StoreUnavailable:
                pause = min(pause * 2, 2.0)
        return False

    def _close_later(self, run: Run) -> bool:
        """Once the store answers again, fail the rows a store failure left open and end the run, so that
        no row reads in_progress and a resume can finish the batch; unless another run took it over.
        Whether a closer was started (it lets go of the run when done)."""
        def close() -> None:
            try:
                self.once_the_store_answers(lambda: self._end_run(run, STORE_FAILED, fail_unfinished=True))
            except RunLost:
                log.warning("another run took the batch over while the job store was failing")
            finally:
                self.heartbeat.let_go(run)

        if self._stopping.is_set():
            return False
        try:
            self._batches.submit(in_batch_context(run.id, close))
        except RuntimeError:  # the executor is shut down: the service is stopping
            return False
        return True

    def _work(self, run: Run, resuming: bool, underway: threading.Event | None = None,
              leaving_failed: bool = False) -> str | None:
        """Create what is missing (none when `leaving_failed`) and activate; the batch-level error, if any."""
        deadline = time.monotonic() + self.batch_deadline
        try:
            if leaving_failed:
                return self._finish_without_failed(run, deadline)
            todo = self._rows_to_create(run, resuming, deadline)
            if todo:
                run.check()
                self.client.wake(self.wake_timeout)
                self.rows.create(run, todo, deadline, underway)
            if self._stopping.is_set() and not all(r.status in EXISTING
                                                   for r in self.store.get_batch(run.id).rows):
                return STOPPED_BATCH
            return self._finish(run, deadline)
        except (RunLost, StoreUnavailable):
            raise
        except UpstreamError as exc:
            error = f"The directory could not be reached: {exc}"
        except Exception:
            log.exception("processing stopped by an unexpected error")
            error = "Processing stopped by an unexpected error; the batch can be resumed."
        self._fail_unfinished(run, error)
        return error

    def _fail_unfinished(self, run: Run, error: str | None) -> None:
        """Mark the rows neither created nor failed yet `failed` with `error`."""
        left = unfinished(self.store.get_batch(run.id).rows)
        if left:
            run.holds(self.store.mark_rows_failed(run, left, error))
            metrics.rows_failed.inc(len(left))

    def _rows_to_create(self, run: Run, resuming: bool, deadline: float) -> list[Row]:
        """The rows still to create; on resume, first learn from the upstream which rows exist."""
        if resuming:
            return self.rows.reconcile(run, deadline)
        return [r for r in self.store.get_batch(run.id).rows if r.status not in EXISTING]

    def _show_outage(self, run: Run) -> None:
        """Say in the batch's error that the directory is being waited for, or clear that once it
        answers again (called by the heartbeat after each renewal)."""
        seconds = self.client.unreachable_for()
        if seconds is not None:
            run.holds(self.store.set_error(run, WAITING.format(seconds=seconds)))
            self._outage_shown.add(run)
        elif run in self._outage_shown:
            self._outage_shown.discard(run)
            run.holds(self.store.set_error(run, None))

    def _finish(self, run: Run, deadline: float) -> str | None:
        """Activate the batch when every row exists, with no hospital upstream that no row owns,
        and check once more after; return the batch-level error, if any."""
        batch = self.store.get_batch(run.id)
        if not all(r.status in EXISTING for r in batch.rows):
            return None
        return self._activate(run, batch, deadline)

    def _activate(self, run: Run, batch: Batch, deadline: float) -> str | None:
        """Activate the batch with its created rows, with no hospital upstream that no row owns, and
        check once more after; return the batch-level error, if any."""
        created = [r for r in batch.rows if r.status in IN_BATCH]
        if not created:
            log.info("every row is already in the directory: nothing to create or activate")
            return None
        trusted = self.rows.sweep(run, deadline) is not None
        run.holds(self.store.set_status(run, BatchStatus.ACTIVATING))
        try:
            # It counts only when the listing shows every created row's hospital active.
            listing = self.client.activate_batch(run.id, [r.hospital_id for r in created if r.hospital_id],
                                                 deadline)
        except UpstreamError as exc:
            log.error("activation failed: %s", exc)
            return f"The rows that exist could not be activated: {exc}"
        run.holds(self.store.mark_rows_activated(run, [r.row for r in created]))
        # A creation slower than our wait for it may land between the sweep and the activation:
        # the listing that showed the batch active shows it too (unless the upstream's listings
        # were found untrustworthy: then nothing is deleted, and it was said once).
        try:
            if trusted:
                self.rows.sweep(run, deadline, listing)
        except UpstreamError as exc:
            log.error("the batch is active, but could not be checked for late duplicates: %s", exc)
        return None

    # -- rolling back --------------------------------------------------------------------

    def roll_back(self, batch_id: str) -> None:
        """Delete the batch's hospitals upstream and mark it rolled_back, once creations that may still
        land have had time to (BatchConflict while it runs); again for a rolled_back batch, which stays so."""
        batch = self.load(batch_id)  # BatchNotFound before anything else
        if batch.status == BatchStatus.ROLLED_BACK:
            in_batch_context(batch_id, self._delete_again)(batch_id)
            return
        run = self._take(batch_id, FINAL - {BatchStatus.INTERRUPTED, BatchStatus.ROLLED_BACK})
        if run is None:
            if self.store.get_batch(batch_id).status == BatchStatus.ROLLED_BACK:
                return in_batch_context(batch_id, self._delete_again)(batch_id)
            raise BatchConflict(f"Batch {batch_id} is being processed; it cannot be rolled back now.")
        try:
            in_batch_context(batch_id, self._roll_back)(run)
        except RunLost:
            raise BatchConflict(f"Batch {batch_id} was taken over while it was rolled back; "
                                "read it and try again.") from None
        finally:
            self.heartbeat.let_go(run)

    def _roll_back(self, run: Run) -> None:
        try:
            if self.rows.settle(run, self._may_land(run), what="before deleting") is False:
                raise UpstreamError("the service is stopping; send the DELETE again")
            run.holds(self.store.holds(run))
            deleted = self.client.delete_batch(run.id)
        except UpstreamError as exc:
            run.holds(self.store.release_lease(run, _outcome(self.store.get_batch(run.id))))
            raise UpstreamUnavailable(f"The directory could not delete the batch: {exc}") from exc
        keep = RowStatus.ALREADY_IN_DIRECTORY  # their hospitals are not the batch's: never deleted
        run.holds(self.store.mark_rows_rolled_back(
            run, [r.row for r in self.store.get_batch(run.id).rows if r.status != keep]))
        metrics.batches_finished.labels(BatchStatus.ROLLED_BACK).inc()
        log.info("rolled back: %d hospitals deleted upstream", deleted)

    def _may_land(self, run: Run) -> list[Row]:
        """The rows not known to exist whose last creation may still land (a dead run's, in flight)."""
        return [r for r in self.store.get_batch(run.id).rows if r.status not in EXISTING]

    def _delete_again(self, batch_id: str) -> None:
        """A rolled_back batch asked to roll back again: delete whatever landed since; it stays rolled_back."""
        try:
            deleted = self.client.delete_batch(batch_id)
        except UpstreamError as exc:
            log.warning("rolled back already; deleting its hospitals again failed (%s): it stays rolled_back, "
                        "and a later DELETE tries again", exc)
            return
        log.info("rolled back already: %d hospitals deleted upstream again", deleted)


def process_id() -> str:
    """This process's name in leases: host, pid, and a nonce for a pid reused after a restart."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _outcome(batch: Batch) -> str:
    every_row_exists = all(r.status in EXISTING for r in batch.rows)
    if batch.activated:
        return BatchStatus.COMPLETED if every_row_exists else BatchStatus.PARTIALLY_ACTIVATED
    if all(r.status == RowStatus.ALREADY_IN_DIRECTORY for r in batch.rows):
        return BatchStatus.COMPLETED  # nothing to create, nothing to activate
    if any(r.status == RowStatus.CANCELLED for r in batch.rows):
        return BatchStatus.CANCELLED
    if any(r.status in EXISTING for r in batch.rows):
        return BatchStatus.PARTIALLY_FAILED
    return BatchStatus.FAILED


# A batch's or an import's document: what follow() yields.
Followed = TypeVar("Followed", BatchDocument, ImportDocument)


def is_uuid(text: str) -> bool:
    """Whether `text` is a UUID in its canonical form (any case): the only ids we hand out."""
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def follow(version: Callable[[], int | None], document: Callable[[], Followed],
           wait_for_change: Callable[[int | None, float], object], final: Collection[str],
           quiet_after: float) -> Iterator[Followed | None]:
    """A document now and after each change of its `version`, whichever process makes it, or None
    when `quiet_after` seconds pass without one; ends after the first document whose status is final."""
    while True:
        seen = version()  # read before the document, so that no change falls between the two
        current = document()
        yield current
        if current.status in final:
            return
        started = time.monotonic()
        wait_for_change(seen, quiet_after)
        if time.monotonic() - started >= quiet_after:
            yield None
