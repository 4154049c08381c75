"""Imports: a file of any size split into ordinary batches, run so that the create-rate limit is never idle.

An import's runner starts its batches in file order, each on the jobs' executor like any async
upload, and starts the next one as soon as the current one has no row left waiting for a
limiter slot: at most one batch per import waits for the window at a time, so the limit is
spent as soon as it frees, and an upload started meanwhile waits beside that one batch, not
behind the whole file. Everything lives in the store, under a lease renewed like a batch's, so
any process can report on an import, cancel it, and resume it after its runner died.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait

from .. import metrics
from ..contract import ImportDocument, ImportSummary
from ..errors import BatchConflict, ImportNotFound, RunLost, StoreUnavailable
from ..files.rules import HospitalRow
from ..logs import in_import_context, log_finished
from ..states import ACTIVATABLE, FINAL, RUNNING, BatchStatus, RowStatus
from ..store import Import, Row, Run
from ..store.leases import new_token
from .batches import Jobs, follow, is_uuid
from .documents import (
    import_document,
    import_row_counts,
    import_summary,
    reported_import_status,
    reported_status,
    settled_status,
)
from .rate_limit import EDGE_SECONDS, WINDOW_MARGIN

log = logging.getLogger(__name__)

# Seconds the upstream spends on one creation (hospital-directory-api.md), for the estimate.
CREATION_SECONDS = 5.0
# Batches whose rows one read of a result file takes: one read per batch cost more than the
# rows, and all of them at once would hold a large import's rows in memory.
READ_PARTS = 25
# How long the runner waits for a sign of life from a batch before looking at it again.
LOOK_SECONDS = 0.5


def split(rows: Iterable[HospitalRow], size: int) -> Iterator[list[HospitalRow]]:
    """The rows in file order, cut into batches of at most `size`, one batch at a time."""
    remaining = iter(rows)
    while batch := list(itertools.islice(remaining, size)):
        yield batch


def last_slot_in(waiting: int, limit: int, span: float, used: int, oldest: float | None, start: float) -> float:
    """Seconds until the last of `waiting` rows takes a slot of a limiter giving `limit` per `span`,
    `used` of them taken (the oldest `oldest` seconds from now, so negative), none before `start`.

    The free slots go at `start`, and are free again a span later; the used ones free a span after
    the oldest. So each later span holds `used` slots from the oldest's cycle, then the rest.
    """
    free = max(0, limit - used)
    if waiting <= free:
        return start
    later = waiting - free - 1  # the last row's place among those after the free slots
    cycle, place = divmod(later, limit)
    taken_at = oldest if oldest is not None and place < used else start
    return max(start, taken_at + (cycle + 1) * span)


def _batch_ended(future: Future, started: threading.Event) -> None:
    """A batch's task has ended: it waits for no slot any more, and an unexpected error is logged
    (the batch's own thread has nobody else to tell)."""
    started.set()
    if not future.cancelled() and future.exception() is not None:
        log.error("a batch stopped by an unexpected error", exc_info=future.exception())


# -- orchestration -----------------------------------------------------------------------


class Imports:
    """Starts, runs, cancels, resumes and rolls back imports on top of the app's Jobs."""

    def __init__(self, jobs: Jobs, *, batch_rows: int, rate: tuple[int, float] | None, concurrency: int,
                 creation_seconds: float = CREATION_SECONDS, runners: int = 32,
                 clock: Callable[[], float] | None = None) -> None:
        self.jobs, self.store = jobs, jobs.store
        self.batch_rows, self.rate, self.concurrency = batch_rows, rate, concurrency
        self.creation_seconds = creation_seconds
        # Leases and run times are compared across instances: the store's clock, like the jobs'.
        self._clock = clock or self.store.now
        # Runners wait on their batches, so they must not take seats in the batches' pool.
        self._runners = ThreadPoolExecutor(runners, thread_name_prefix="bulkproc-import")
        self.heartbeat = jobs.heartbeat
        jobs.close_with(self.close)

    def close(self) -> None:
        """Let runners notice the stop (the jobs' waits are already cut short) and join them."""
        self._runners.shutdown(wait=True)

    # -- reading -------------------------------------------------------------------------

    def load(self, import_id: str) -> Import:
        """The import, or ImportNotFound."""
        imp = self.store.load_import(import_id) if is_uuid(import_id) else None
        if imp is None:
            raise ImportNotFound(import_id)
        return imp

    def document(self, import_id: str) -> ImportDocument:
        """The import's document now; raises ImportNotFound."""
        imp, now = self.load(import_id), self._clock()
        return import_document(imp, now, self._remaining(imp, now))

    def recent(self, limit: int) -> list[ImportSummary]:
        """Summaries of the newest `limit` imports, newest first."""
        now = self._clock()
        return [import_summary(i, now, self._remaining(i, now)) for i in self.store.recent_imports(limit)]

    def _remaining(self, imp: Import, now: float) -> float | None:
        """The import's estimate of the seconds left at `now`, computed here; None for a final import."""
        final = reported_import_status(imp, now) in FINAL
        return None if final else self.estimate(import_row_counts(imp), now)

    def rows(self, import_id: str) -> Iterator[tuple[str, Row]]:
        """Every row of the import in file order, with its batch id, read a few batches at a time (none
        for an unknown import: load it first for ImportNotFound)."""
        batch_ids = self.store.import_batch_ids(import_id)
        for start in range(0, len(batch_ids), READ_PARTS):
            # The batches hold consecutive runs of the file's rows, so row order is file order.
            yield from self.store.rows_of(batch_ids[start:start + READ_PARTS])

    def estimate(self, counts: Counter[str], now: float) -> float:
        """Seconds from `now` until the rows not yet created could be, given the rate limit and the
        slots it has given out (read from the store)."""
        waiting, in_flight = counts[RowStatus.PENDING], counts[RowStatus.IN_PROGRESS]
        if not waiting:
            return self.creation_seconds if in_flight else 0.0
        if self.rate is None:
            return math.ceil(waiting / self.concurrency) * self.creation_seconds
        limit, window = self.rate
        span = window * WINDOW_MARGIN + EDGE_SECONDS
        used, oldest, blocked_until = self.store.create_slots_in_use(span)
        last = last_slot_in(waiting, limit, span, used, None if oldest is None else oldest - now,
                            max(0.0, blocked_until - now))
        return round(last + self.creation_seconds, 1)

    def watch(self, import_id: str, quiet_after: float) -> Iterator[ImportDocument | None]:
        """The import's document now and after each change of it or its batches, or None when
        `quiet_after` seconds pass without one; ends after the first final document."""
        return follow(lambda: self.store.import_version(import_id), lambda: self.document(import_id),
                      lambda seen, timeout: self.store.wait_for_import_change(import_id, seen, timeout),
                      FINAL, quiet_after)

    # -- starting, cancelling, resuming, rolling back ------------------------------------

    def start(self, rows: Iterable[HospitalRow], *, idempotency_key: str | None = None,
              file_sha256: str | None = None, already_there: dict[int, int] | None = None) -> tuple[str, bool]:
        """Record a new import and its batches (`rows` read once, a few batches at a time), owned by a
        new run of this process, the rows in `already_there` (row -> hospital id) read
        already_in_directory; (id, True), or an earlier upload's (id, False) for a repeated idempotency key."""
        # Read as they are written, inside the store's transaction: an accepted file is read a second
        # time there (about 0.1 s for 10,000 rows) rather than held in memory.
        parts = ((str(uuid.uuid4()), batch) for batch in split(rows, self.batch_rows))
        run = Run(str(uuid.uuid4()), new_token(), "import")
        import_id, new = self.store.insert_import(run.id, parts, owner=self.jobs.owner,
                                                  lease_until=self._lease_end(), token=run.token,
                                                  idempotency_key=idempotency_key, file_sha256=file_sha256)
        if new:  # its lease, written with it, lasts until the heartbeat's next renewal
            self.heartbeat.hold(run)
            if already_there:
                self._record_in_directory(run, already_there)
        return import_id, new

    def _record_in_directory(self, run: Run, already_there: dict[int, int]) -> None:
        """Mark the rows found in the directory (row -> hospital id) in the batches holding them, which
        are the import run's until they start."""
        parts = self.load(run.id).parts
        first_rows = [part.first_row for part in parts]
        found: dict[str, dict[int, int]] = {}
        for row, hospital_id in already_there.items():
            # The batches hold consecutive runs of rows: a row is in the last one starting at or before it.
            part = parts[bisect.bisect_right(first_rows, row) - 1]
            found.setdefault(part.batch.id, {})[row] = hospital_id
        for batch_id, rows in found.items():
            run.holds(self.store.record_in_directory(Run(batch_id, run.token), rows))

    def seen(self, idempotency_key: str | None) -> bool:
        """Whether an earlier import used this Idempotency-Key (its repeat reads nothing upstream)."""
        return (idempotency_key is not None
                and self.store.find_import_by_idempotency_key(idempotency_key) is not None)

    def run_in_background(self, import_id: str) -> Future:
        """Run (or resume) an import this process holds, on the runners' executor."""
        run = self.heartbeat.find("import", import_id)
        if run is None:
            run = Run(import_id, "", "import")
            run.lose()
        return self._runners.submit(in_import_context(import_id, self._run), run)

    def cancel(self, import_id: str) -> bool:
        """Stop a running import from starting rows; False when it is cancelled already
        (BatchConflict when it is not running)."""
        imp = self.load(import_id)
        if self.store.request_import_cancel(import_id):
            log.info("cancel requested for import %s", import_id)
            return True
        status = reported_import_status(imp, self._clock())
        if status == BatchStatus.CANCELLED:
            return False
        raise BatchConflict(f"Import {import_id} is {status}; only a queued or processing import "
                            "can be cancelled.")

    def take_over(self, import_id: str) -> bool:
        """Take an unfinished import, and every unfinished batch of it, for a new run of this process;
        False when it is completed (BatchConflict when it is running or rolled back)."""
        status = reported_import_status(self.load(import_id), self._clock())
        if status == BatchStatus.COMPLETED:
            return False
        if status in RUNNING or status in (BatchStatus.ROLLED_BACK, BatchStatus.PARTIALLY_ACTIVATED):
            raise BatchConflict(f"Import {import_id} is {status}; only a partially_failed, failed, cancelled "
                                "or interrupted import can be resumed.")
        run = Run(import_id, new_token(), "import")
        if not self.store.take_import(import_id, self.jobs.owner, self._lease_end(), run.token):
            raise BatchConflict(f"Import {import_id} is already being resumed.")
        self.heartbeat.hold(run)
        return True

    # -- finishing without the failed rows -----------------------------------------------

    def take_for_activation(self, import_id: str) -> bool:
        """Hold an import at rest for a new run of this process that finishes its batches without their
        failed rows; False when it is completed (BatchConflict when it is running, final, or nothing
        of it exists upstream)."""
        status = reported_import_status(self.load(import_id), self._clock())
        if status == BatchStatus.COMPLETED:
            return False
        if status in RUNNING or status in (BatchStatus.ROLLED_BACK, BatchStatus.PARTIALLY_ACTIVATED,
                                           BatchStatus.FAILED):
            raise BatchConflict(f"Import {import_id} is {status}; only a partially_failed, cancelled or "
                                "interrupted import can be finished without its failed rows."
                                + (" Resume it or roll it back." if status == BatchStatus.FAILED else ""))
        run = Run(import_id, new_token(), "import")
        if not self.store.hold_import(import_id, self.jobs.owner, self._lease_end(), run.token):
            raise BatchConflict(f"Import {import_id} is being processed; wait for it to finish.")
        self.heartbeat.hold(run)
        return True

    def activate_in_background(self, import_id: str) -> Future:
        """Finish, on the runners' executor, every batch of an import this process holds that needs it."""
        run = self.heartbeat.find("import", import_id)
        if run is None:
            run = Run(import_id, "", "import")
            run.lose()
        return self._runners.submit(in_import_context(import_id, self._activate_all), run)

    def _activate_all(self, run: Run) -> None:
        """Finish each batch of the import that needs it without its failed rows, then record the import's
        status (partially_activated once no batch is left to finish); stop if the run loses the import."""
        self.heartbeat.hold(run)
        try:
            for part in self.load(run.id).parts:
                run.check()
                if self.jobs.stopping:
                    break
                self._activate_part(part.batch.id)
            status = self._activated_status(run.id)
            run.holds(self.store.finish_import_run(run, status, 0.0))
            log.info("import finished without its failed rows: %s", status)
        except RunLost:
            log.warning("another run took the import over while it was finished without its failed rows")
        finally:
            self.heartbeat.let_go(run)

    def _activate_part(self, batch_id: str) -> None:
        """Finish one batch without its failed rows, if it needs it; a batch that cannot is left as it is."""
        try:
            if self.jobs.take_for_activation(batch_id):
                self.jobs.activate(batch_id)
        except BatchConflict as exc:
            log.info("batch %s left as it is: %s", batch_id, exc.message)
        except RunLost:
            log.warning("batch %s was taken over while it was activated", batch_id)
        except Exception:  # the task boundary: the batch keeps its own state, the others go on
            log.exception("activating batch %s stopped by an unexpected error", batch_id)

    def _activated_status(self, import_id: str) -> str:
        """The import's status after its batches were finished: partially_activated when some rows are
        active and no batch is left that activation could finish (those failing it stay resumable)."""
        parts = self.load(import_id).parts
        now = self._clock()
        status = settled_status(parts, now)
        if status in (BatchStatus.COMPLETED, BatchStatus.ROLLED_BACK):
            return status
        statuses = {reported_status(p.batch, now) for p in parts}
        if statuses & (ACTIVATABLE | RUNNING) or not statuses & {BatchStatus.COMPLETED,
                                                                  BatchStatus.PARTIALLY_ACTIVATED}:
            return BatchStatus.PARTIALLY_FAILED if status in RUNNING else status
        return BatchStatus.PARTIALLY_ACTIVATED

    def roll_back(self, import_id: str) -> None:
        """Roll back every batch of an import at rest (BatchConflict while it runs); again for a rolled
        back one, which stays rolled back."""
        imp = self.load(import_id)
        if reported_import_status(imp, self._clock()) == BatchStatus.ROLLED_BACK:
            for part in imp.parts:
                self.jobs.roll_back(part.batch.id)
            return
        run = Run(import_id, new_token(), "import")
        if not self.store.hold_import(import_id, self.jobs.owner, self._lease_end(), run.token):
            raise BatchConflict(f"Import {import_id} is being processed; cancel it first, or wait.")
        self.heartbeat.hold(run)
        try:
            for part in imp.parts:
                run.check()
                self.jobs.roll_back(part.batch.id)
        except RunLost:
            raise BatchConflict(f"Import {import_id} was taken over while it was rolled back; "
                                "read it and try again.") from None
        finally:
            if not self.store.finish_import_run(run, self._settled(import_id), 0.0):
                log.warning("another run took the import over while it was rolled back")
            self.heartbeat.let_go(run)

    def _lease_end(self) -> float:
        return self._clock() + self.jobs.lease_seconds

    def _settled(self, import_id: str) -> str:
        status = settled_status(self.load(import_id).parts, self._clock())
        # Stored, a running status would mean "held by a runner"; a batch running on its own
        # still shows, because the status is read from the batches whenever no runner holds it.
        return BatchStatus.PARTIALLY_FAILED if status in RUNNING else status

    # -- the runner ----------------------------------------------------------------------

    def _run(self, run: Run) -> None:
        """Run the import as `run`: its batches in order; stop at once if the run loses the import."""
        self.heartbeat.hold(run)
        try:
            if self.jobs.stopping:
                log.info("import not started: the service is stopping; resume it to go on")
                run.holds(self.store.finish_import_run(run, self._settled(run.id), 0.0))
                return
            self._run_started(run)
        except RunLost:
            log.warning("this run no longer owns the import (taken over or rolled back): it stops here")
        finally:
            self.heartbeat.let_go(run)

    def _run_started(self, run: Run) -> None:
        started = self._clock()
        try:
            run.holds(self.store.start_import_run(run, started))
        except StoreUnavailable:  # waited out like the finish: the import is held meanwhile
            if not self.jobs.once_the_store_answers(lambda: run.holds(self.store.start_import_run(run, started))):
                return
        log.info("import running")
        try:
            wait(self._start_batches(run))
        except RunLost:
            raise
        except Exception:  # the task boundary: log it; the batches keep their own states
            log.exception("import runner stopped by an unexpected error")
        self._finish(run, started)

    def _finish(self, run: Run, started: float) -> None:
        """Record the run's outcome and let the import go; a store failure is waited out (the
        heartbeat keeps the import meanwhile), so a live import never lapses into `interrupted`."""
        def finish() -> None:
            rows = sum((Counter(p.batch.row_counts) for p in self.load(run.id).parts), Counter())
            status = self._settled(run.id)
            run.holds(self.store.finish_import_run(run, status, self._clock() - started))
            metrics.imports_finished.labels(status).inc()
            log_finished(log, "import", status, rows, self._clock() - started)

        try:
            finish()
        except StoreUnavailable as exc:
            log.warning("could not record the import's outcome: the job store is unavailable (%s); "
                        "trying again until it answers", exc.reason)
            self.jobs.once_the_store_answers(finish)

    def _start_batches(self, run: Run) -> list[Future]:
        """Start this run's batches in order, each once the one before has no row waiting for a slot;
        return those still running when the last has started."""
        running: list[Future] = []  # only those still running: a long import holds a few, not all
        for batch_id in self.store.import_batch_ids(run.id):
            if self._should_stop(batch_id, run):
                break
            batch = self.store.get_batch(batch_id)
            if batch is None or batch.status != BatchStatus.QUEUED or batch.run_token != run.token:
                continue  # finished, cancelled, or taken by a resume of its own
            # A batch never started needs no look at the upstream; any other learns what exists first.
            resuming = any(r.status != RowStatus.PENDING or r.attempted_at for r in batch.rows)
            started = threading.Event()
            try:
                future = self.jobs.run_in_background(batch.id, resuming, Run(batch.id, run.token), started)
            except RuntimeError:  # the executor is shut down: the service is stopping
                break
            future.add_done_callback(lambda done, started=started: _batch_ended(done, started))
            running = [f for f in running if not f.done()] + [future]
            self._wait_until_started(batch.id, started, run)
        return running

    def _wait_until_started(self, batch_id: str, started: threading.Event, run: Run) -> None:
        """Return once the batch has no row waiting for a limiter slot (or it ended, or the run stops).

        The batch runs in this process, so it says so itself: reading the store at every change
        in the process (every row's outcome) cost the import more than its rows did. A resumed
        batch waiting for its creations to settle has no row waiting for a slot yet: the next
        batch starts beside it rather than behind it.
        """
        while not started.wait(LOOK_SECONDS):
            if self._should_stop(batch_id, run) or self.jobs.rows.is_settling(batch_id):
                return

    def _should_stop(self, batch_id: str, run: Run) -> bool:
        run.check()
        return self.jobs.stopping or self.store.is_cancelling(batch_id)
