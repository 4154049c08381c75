"""Orchestration: start a batch, create its rows on the shared executor, activate, resume, roll back.

Every state change goes through the Store before the next upstream call, so any process can
report on a batch, and a batch whose process died can be finished by another.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from .csv_input import HospitalRow
from .directory_client import DirectoryClient, Hospital, Refused, UpstreamError
from .errors import BatchConflict, BatchNotFound, UpstreamUnavailable
from .rate_limit import DEADLINE_MESSAGE
from .states import EXISTING, FINAL, RESUMABLE, RUNNING, BatchStatus, RowStatus
from .store import Batch, Row, Store

log = logging.getLogger(__name__)

# How often a batch waiting for the rate window looks whether its import was cancelled elsewhere.
CANCEL_POLL_SECONDS = 0.25

# The batch id of the work at hand, for every log line (see logs.py).
current_batch: contextvars.ContextVar[str] = contextvars.ContextVar("current_batch", default="-")


def batch_document(batch: Batch, now: float, *, timestamps: bool = True) -> dict[str, Any]:
    """The contract's status document for a batch as it stands at `now` (wall-clock seconds)."""
    status = reported_status(batch, now)
    elapsed = batch.elapsed
    if batch.run_started_at is not None and status in RUNNING:
        elapsed += max(0.0, now - batch.run_started_at)
    document: dict[str, Any] = {
        "batch_id": batch.id,
        "status": status,
        "total_hospitals": batch.total,
        "processed_hospitals": sum(batch.row_counts.get(s, 0) for s in EXISTING),
        "failed_hospitals": batch.row_counts.get(RowStatus.FAILED, 0),
        "processing_time_seconds": round(elapsed, 3),
        "batch_activated": batch.activated,
        "error": batch.error,
        "hospitals": [row_document(r) for r in batch.rows],
    }
    if timestamps:
        document["created_at"] = _iso(batch.created_at)
        document["updated_at"] = _iso(batch.updated_at)
    return document


def summary_document(batch: Batch, now: float) -> dict[str, Any]:
    """The listing's view of a batch: its document without rows."""
    document = batch_document(batch, now)
    del document["hospitals"]
    return document


def row_document(row: Row) -> dict[str, Any]:
    return {"row": row.row, "hospital_id": row.hospital_id, "name": row.name,
            "status": row.status, "error": row.error}


def reported_status(batch: Batch, now: float) -> str:
    """The batch's status, reading `interrupted` when its owner stopped renewing the lease."""
    if batch.status in RUNNING and (batch.lease_expires or 0) < now:
        return BatchStatus.INTERRUPTED
    return batch.status


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}Z"


def _matches(row: Row, hospital: Hospital) -> bool:
    return (hospital.name, hospital.address, hospital.phone or None) == (row.name, row.address, row.phone or None)


def _match(rows: list[Row], listing: list[Hospital]) -> tuple[dict[Row, Hospital], list[Row]]:
    """Pair rows with the batch's hospitals upstream, each hospital to one row; (pairs, unmatched rows)."""
    found: dict[Row, Hospital] = {}
    for row in rows:
        hospital = next((h for h in listing if h not in found.values() and _matches(row, h)), None)
        if hospital is not None:
            found[row] = hospital
    return found, [r for r in rows if r not in found]


def _in_batch_context(batch_id: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap `fn` so that it runs, in any thread, with the batch id in the logging context."""
    def run(*args: Any) -> Any:
        token = current_batch.set(batch_id)
        try:
            return fn(*args)
        finally:
            current_batch.reset(token)
    return run


class Jobs:
    """Runs batches: one process-wide executor for row creations, shared by every upload."""

    def __init__(self, store: Store, client: DirectoryClient, *, concurrency: int = 20,
                 lease_seconds: float = 10.0, batch_deadline: float = 900.0, wake_timeout: float = 90.0,
                 settle_seconds: float = 90.0, clock: Callable[[], float] = time.time) -> None:
        self.store, self.client = store, client
        # Set by close(): batches waiting for the rate window stop waiting and leave rows pending.
        self._stopping = threading.Event()
        # What runs batches on top of this (imports) stops first, once the waits are cut short.
        self._also_close: list[Callable[[], None]] = []
        self.lease_seconds, self.batch_deadline, self.wake_timeout = lease_seconds, batch_deadline, wake_timeout
        # How long a creation may take to land upstream: a resume waits this long after a row's
        # last attempt before posting it again.
        self.settle_seconds = settle_seconds
        self._clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._rows = ThreadPoolExecutor(concurrency, thread_name_prefix="bulkproc-row")
        # Batches wait on their rows, so they must not take seats in the rows' pool.
        self._batches = ThreadPoolExecutor(32, thread_name_prefix="bulkproc-batch")

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
        return self._stopping.is_set()

    # -- reading -------------------------------------------------------------------------

    def load(self, batch_id: str) -> Batch:
        """The batch, or BatchNotFound."""
        batch = self.store.load(batch_id) if _is_uuid(batch_id) else None
        if batch is None:
            raise BatchNotFound(batch_id)
        return batch

    def document(self, batch_id: str, *, timestamps: bool = True) -> dict[str, Any]:
        return batch_document(self.load(batch_id), self._clock(), timestamps=timestamps)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        now = self._clock()
        return [summary_document(b, now) for b in self.store.recent(limit)]

    def is_final(self, document: dict[str, Any]) -> bool:
        return document["status"] in FINAL

    def watch(self, batch_id: str, quiet_after: float) -> Iterator[dict[str, Any] | None]:
        """The batch's document now and after each change, whichever process makes it, or None
        when `quiet_after` seconds pass without one; ends after the first final document."""
        version = -1
        while True:
            document = self.document(batch_id)
            yield document
            if self.is_final(document):
                return
            started = time.monotonic()
            version = self.store.wait_for_change(batch_id, version, quiet_after)
            if time.monotonic() - started >= quiet_after:
                yield None

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
        _in_batch_context(batch_id, self._process)(batch_id, False)

    def run_in_background(self, batch_id: str, resuming: bool = False) -> Future:
        return self._batches.submit(_in_batch_context(batch_id, self._process), batch_id, resuming)

    def take_over(self, batch_id: str) -> bool:
        """Take the lease of a resumable batch for this process; False when it is not done or
        not resumable (BatchConflict when it is being processed or rolled back)."""
        batch = self.load(batch_id)
        status = reported_status(batch, self._clock())
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
        _in_batch_context(batch_id, self._process)(batch_id, True)

    def _lease_end(self) -> float:
        return self._clock() + self.lease_seconds

    def _process(self, batch_id: str, resuming: bool) -> None:
        started = self._clock()
        self.store.update_batch(batch_id, status=BatchStatus.PROCESSING, run_started_at=started, error=None)
        log.info("processing (%s)", "resume" if resuming else "new")
        error = "Processing was stopped before it finished; the batch can be resumed."
        try:
            with self._leased(batch_id):
                error = self._work(batch_id, resuming)
        finally:
            batch = self.store.load(batch_id)
            outcome = self._outcome(batch)
            self.store.update_batch(batch_id, status=outcome, error=error,
                                    elapsed=batch.elapsed + self._clock() - started, run_started_at=None,
                                    lease_owner=None, lease_expires=None)
            log.info("finished: %s", outcome)

    def _work(self, batch_id: str, resuming: bool) -> str | None:
        """Create what is missing and activate; return the batch-level error, if any."""
        deadline = time.monotonic() + self.batch_deadline
        try:
            todo = self._rows_to_create(batch_id, resuming, deadline)
            if todo:
                self.client.wake(self.wake_timeout)
                self._create_rows(batch_id, todo, deadline)
            return self._finish(batch_id, deadline)
        except UpstreamError as exc:
            error = f"The directory could not be reached: {exc}"
        except Exception:
            log.exception("processing stopped by an unexpected error")
            error = "Processing stopped by an unexpected error; the batch can be resumed."
        self._fail_unfinished(batch_id, error)
        return error

    def _rows_to_create(self, batch_id: str, resuming: bool, deadline: float) -> list[Row]:
        """The rows still to create; on resume, first learn from the upstream which rows exist."""
        batch = self.store.load(batch_id)
        if not resuming:
            return [r for r in batch.rows if r.status not in EXISTING]
        found, todo = _match(batch.rows, self.client.list_batch(batch_id, deadline))
        # A creation sent just before its process died may still be on its way: the upstream
        # shows a hospital only once its 5 s are over. Give it the read timeout to land.
        settled_at = max((r.attempted_at or 0.0 for r in todo), default=0.0) + self.settle_seconds
        if settled_at > self._clock():
            log.info("waiting %.1f s for creations that may still be in flight", settled_at - self._clock())
            if self._stopping.wait(settled_at - self._clock()):
                return []  # shutting down: the batch stays resumable as it was
            found, todo = _match(batch.rows, self.client.list_batch(batch_id, deadline))
        for row, hospital in found.items():
            if (row.status, row.hospital_id) != (RowStatus.CREATED, hospital.id):
                self.store.update_row(batch_id, row.row, status=RowStatus.CREATED, hospital_id=hospital.id, error=None)
        if todo:
            self.store.update_rows(batch_id, [r.row for r in todo], status=RowStatus.PENDING, hospital_id=None,
                                   error=None)
        log.info("resume: %d of %d rows exist upstream", len(found), len(batch.rows))
        return todo

    def _create_rows(self, batch_id: str, rows: list[Row], deadline: float) -> None:
        """Create the rows concurrently and return when every one has an outcome.

        Rate-limiter slots are taken here, as many at a time as the limit allows, and only rows
        holding one go to the executor: a row waiting for the window keeps no seat from rows that
        could go now, and it reads `pending` meanwhile.
        """
        work = _in_batch_context(batch_id, self._create_row)
        futures, waiting = [], list(rows)
        while waiting and not self.store.is_cancelling(batch_id):
            taken, wait_seconds = self.client.limiter.take(len(waiting))
            going, waiting = waiting[:taken], waiting[taken:]
            if going:
                if not self.store.start_rows(batch_id, [r.row for r in going], self._clock()):
                    break  # its import was cancelled between the check and the slots
                futures += [self._rows.submit(work, batch_id, row, deadline) for row in going]
            if waiting and time.monotonic() + wait_seconds >= deadline:
                self.store.update_rows(batch_id, [r.row for r in waiting], status=RowStatus.FAILED,
                                       error=f"Gave up: {DEADLINE_MESSAGE}; the row can be resumed.")
                break
            if waiting and self._pause(batch_id, wait_seconds):
                break
        if self.store.is_cancelling(batch_id):
            log.info("import cancelled: rows not started read cancelled; in-flight rows finish")
            self.store.cancel_pending_rows(batch_id)
        wait(futures)

    def _pause(self, batch_id: str, seconds: float) -> bool:
        """Wait `seconds` for the rate window; True when waiting should stop instead (shutting
        down, or the batch's import cancelled from any process)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self._stopping.wait(min(left, CANCEL_POLL_SECONDS)):
                log.warning("shutting down: rows left pending; resume the batch to create them")
                return True
            if self.store.is_cancelling(batch_id):
                return True
        return False

    @contextmanager
    def _leased(self, batch_id: str) -> Iterator[None]:
        """Renew this process's lease on the batch every third of its length while the block runs,
        so that a wake-up call or a slow activation cannot make a live batch read `interrupted`."""
        done = threading.Event()

        def keep() -> None:
            while not done.wait(self.lease_seconds / 3):
                if not self.store.renew_lease(batch_id, self.owner, self._lease_end()):
                    log.error("lost the lease: another process took the batch over")
                    return

        keeper = threading.Thread(target=_in_batch_context(batch_id, keep), name=f"lease-{batch_id[:8]}",
                                  daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()

    def _create_row(self, batch_id: str, row: Row, deadline: float) -> None:
        """Create one row upstream and record its outcome; a row's failure is data, never raised."""
        try:
            hospital = self.client.create_hospital(
                batch_id, row.name, row.address, row.phone, deadline=deadline, slot_taken=True,
                find_existing=lambda listing: self._find_row(batch_id, row, listing),
                before_post=lambda: self.store.update_row(batch_id, row.row, status=RowStatus.IN_PROGRESS,
                                                          attempted_at=self._clock()))
        except Refused as exc:
            log.warning("row %d refused: %s", row.row, exc)
            # A refusal is an answer: nothing was created, so a resume need not wait for it to land.
            self.store.update_row(batch_id, row.row, status=RowStatus.FAILED, error=str(exc), attempted_at=None)
        except UpstreamError as exc:
            log.warning("row %d failed: %s", row.row, exc)
            self.store.update_row(batch_id, row.row, status=RowStatus.FAILED, error=str(exc))
        except Exception as exc:  # the task boundary: nothing may escape a worker thread unrecorded
            log.exception("row %d failed unexpectedly", row.row)
            self.store.update_row(batch_id, row.row, status=RowStatus.FAILED,
                                  error=f"Unexpected error ({type(exc).__name__}); the row can be resumed.")
        else:
            self.store.update_row(batch_id, row.row, status=RowStatus.CREATED, hospital_id=hospital.id, error=None)

    def _find_row(self, batch_id: str, row: Row, listing: list[Hospital]) -> Hospital | None:
        """This row's hospital in the listing: same name, address and phone, not claimed by another row."""
        claimed = {r.hospital_id for r in self.store.load(batch_id).rows if r.row != row.row and r.hospital_id}
        return min((h for h in listing if h.id not in claimed and _matches(row, h)),
                   key=lambda h: h.id, default=None)

    def _finish(self, batch_id: str, deadline: float) -> str | None:
        """Activate the batch when every row exists; return the batch-level error, if any."""
        batch = self.store.load(batch_id)
        if not all(r.status in EXISTING for r in batch.rows):
            return None
        self.store.update_batch(batch_id, status=BatchStatus.ACTIVATING)
        try:
            self.client.activate_batch(batch_id, deadline)
        except UpstreamError as exc:
            log.error("activation failed: %s", exc)
            return f"Every row exists but the batch could not be activated: {exc}"
        self.store.update_rows(batch_id, [r.row for r in batch.rows], status=RowStatus.CREATED_AND_ACTIVATED,
                               batch={"activated": True})
        return None

    def _fail_unfinished(self, batch_id: str, error: str) -> None:
        unfinished = [r.row for r in self.store.load(batch_id).rows
                      if r.status not in EXISTING | {RowStatus.FAILED, RowStatus.CANCELLED}]
        if unfinished:
            self.store.update_rows(batch_id, unfinished, status=RowStatus.FAILED, error=error)

    @staticmethod
    def _outcome(batch: Batch) -> str:
        if batch.activated:
            return BatchStatus.COMPLETED
        if any(r.status == RowStatus.CANCELLED for r in batch.rows):
            return BatchStatus.CANCELLED
        if any(r.status in EXISTING for r in batch.rows):
            return BatchStatus.PARTIALLY_FAILED
        return BatchStatus.FAILED

    # -- rolling back --------------------------------------------------------------------

    def roll_back(self, batch_id: str) -> None:
        """Delete the batch's hospitals upstream and mark it rolled_back (BatchConflict while it runs)."""
        self.load(batch_id)  # BatchNotFound before anything else
        if not self.store.take_lease(batch_id, self.owner, self._lease_end(), FINAL - {BatchStatus.INTERRUPTED}):
            raise BatchConflict(f"Batch {batch_id} is being processed; it cannot be rolled back now.")
        _in_batch_context(batch_id, self._roll_back)(batch_id)

    def _roll_back(self, batch_id: str) -> None:
        try:
            with self._leased(batch_id):
                deleted = self.client.delete_batch(batch_id)
        except UpstreamError as exc:
            batch = self.store.load(batch_id)
            self.store.update_batch(batch_id, status=self._outcome(batch), lease_owner=None, lease_expires=None)
            raise UpstreamUnavailable(f"The directory could not delete the batch: {exc}") from exc
        batch = self.store.load(batch_id)
        self.store.update_rows(batch_id, [r.row for r in batch.rows], status=RowStatus.DELETED, hospital_id=None,
                               batch={"status": BatchStatus.ROLLED_BACK, "activated": False,
                                      "lease_owner": None, "lease_expires": None})
        log.info("rolled back: %d hospitals deleted upstream", deleted)


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False
