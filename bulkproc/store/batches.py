"""Batches and their rows: reads and named transitions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import IdempotencyMismatch
from ..states import RESUMABLE, RUNNING, BatchStatus, RowStatus
from .database import Database
from .leases import banked, new_token
from .records import Batch, Import, Row, Run
from .schema import batch_rows, batches, import_batches, imports


def _earlier_upload(clash: IntegrityError, find: Callable[[str], Batch | Import | None], key: str | None,
                    file_sha256: str | None) -> str:
    """After an insert's `clash`: the id of the earlier upload under the idempotency `key`;
    IdempotencyMismatch when its file differs, and the clash itself when no key explains it."""
    earlier = find(key) if key is not None else None
    if earlier is None:
        raise clash
    if earlier.file_sha256 != file_sha256:
        raise IdempotencyMismatch(key) from None
    return earlier.id


def _as_row(found: Any) -> Row:
    """A row record from a batch_rows result row."""
    return Row(**{k: v for k, v in found._mapping.items() if k != "batch_id"})


class BatchRecords(Database):
    """Batches and their rows: reads, and the named transitions, each one write bumping the version."""

    _announce: Callable[[Connection, str, str], None]  # OutboxRecords': a final state's webhook event

    def insert_batch(self, batch_id: str, rows: Iterable, *, owner: str, lease_until: float,
                     token: str | None = None, idempotency_key: str | None = None,
                     file_sha256: str | None = None) -> tuple[str, bool]:
        """Record a new queued batch renewed by `owner`, owned by the run `token` (a new one when
        None); return (batch id, True), or the earlier batch's (id, False) when the idempotency key
        was seen with the same file.

        Raises IdempotencyMismatch when the key was seen with another file.
        """
        rows = list(rows)
        try:
            with self._write() as conn:
                now = self._now(conn)
                conn.execute(insert(batches).values(
                    id=batch_id, status=BatchStatus.QUEUED, total=len(rows), activated=False,
                    version=0, created_at=now, updated_at=now, elapsed=0.0, lease_owner=owner,
                    lease_expires=lease_until, run_token=token or new_token(), idempotency_key=idempotency_key,
                    file_sha256=file_sha256))
                conn.execute(insert(batch_rows), [
                    {"batch_id": batch_id, "row": r.row, "name": r.name, "address": r.address,
                     "phone": r.phone, "status": RowStatus.PENDING} for r in rows])
        except IntegrityError as clash:
            return _earlier_upload(clash, self.find_by_idempotency_key, idempotency_key, file_sha256), False
        self._notify()
        return batch_id, True


    def find_by_idempotency_key(self, key: str) -> Batch | None:
        with self._read() as conn:
            found = conn.execute(select(batches).where(batches.c.idempotency_key == key)).first()
        return Batch(**found._mapping) if found else None


    def get_batch(self, batch_id: str) -> Batch | None:
        """The batch with its rows in CSV order, or None."""
        with self._read() as conn:
            found = conn.execute(select(batches).where(batches.c.id == batch_id)).first()
            if found is None:
                return None
            rows = conn.execute(select(batch_rows).where(batch_rows.c.batch_id == batch_id)
                                .order_by(batch_rows.c.row)).all()
            read_at = self._now(conn)
        loaded = [_as_row(r) for r in rows]
        return Batch(**found._mapping, rows=loaded, row_counts=dict(Counter(r.status for r in loaded)),
                     read_at=read_at)


    def rows_of(self, batch_ids: list[str]) -> list[tuple[str, Row]]:
        """The rows of these batches with their batch ids, in row-number order, in one read."""
        with self._read() as conn:
            found = conn.execute(select(batch_rows).where(batch_rows.c.batch_id.in_(batch_ids))
                                 .order_by(batch_rows.c.row, batch_rows.c.batch_id)).all()
        return [(r.batch_id, _as_row(r)) for r in found]


    def recent(self, limit: int) -> list[Batch]:
        """The newest batches first, with their row counts but not their rows."""
        with self._read() as conn:
            found = conn.execute(select(batches).order_by(batches.c.created_at.desc(), batches.c.id)
                                 .limit(limit)).all()
            counts: dict[str, dict[str, int]] = {b.id: {} for b in found}
            for batch_id, status, count in conn.execute(
                    select(batch_rows.c.batch_id, batch_rows.c.status, func.count())
                    .where(batch_rows.c.batch_id.in_(list(counts)))
                    .group_by(batch_rows.c.batch_id, batch_rows.c.status)):
                counts[batch_id][status] = count
            read_at = self._now(conn)
        return [Batch(**b._mapping, row_counts=counts[b.id], read_at=read_at) for b in found]


    def version(self, batch_id: str) -> int | None:
        with self._read() as conn:
            return conn.execute(select(batches.c.version).where(batches.c.id == batch_id)).scalar()


    def start_run(self, run: Run, now: float) -> bool:
        """The queued batch is being processed by `run`, from `now`; False when the run lost it."""
        return self._change(run, batch={"status": BatchStatus.PROCESSING, "run_started_at": now, "error": None},
                            only_if=batches.c.status == BatchStatus.QUEUED)


    def set_status(self, run: Run, status: str) -> bool:
        """Move the batch to `status` and nothing else (e.g. `activating`)."""
        return self._change(run, batch={"status": status})


    def set_error(self, run: Run, error: str | None) -> bool:
        """Say what the batch is waiting for or why it stopped; None clears it."""
        return self._change(run, batch={"error": error})


    def finish_run(self, run: Run, status: str, error: str | None, now: float) -> bool:
        """End the run at `now`: its time joins the batch's, and the lease is let go."""
        return self._change(run, batch={
            "status": status, "error": error, "run_started_at": None, "lease_owner": None, "lease_expires": None,
            "elapsed": batches.c.elapsed + func.coalesce(now - batches.c.run_started_at, 0.0)}, announce=True)


    def release_lease(self, run: Run, status: str) -> bool:
        """Let go of the batch, leaving it in `status` (an attempt that changed nothing)."""
        return self._change(run, batch={"status": status, "lease_owner": None, "lease_expires": None})


    def mark_rows_in_flight(self, run: Run, rows: Iterable[int], now: float) -> bool:
        """These rows' creations are being sent at `now` (so they may land from then on)."""
        return self._change(run, rows, status=RowStatus.IN_PROGRESS, error=None, attempted_at=now)


    def record_created(self, run: Run, row: int, hospital_id: int) -> bool:
        """The row exists upstream as `hospital_id`."""
        return self._change(run, [row], status=RowStatus.CREATED, hospital_id=hospital_id, error=None)


    def record_row_failed(self, run: Run, row: int, error: str, *, may_have_landed: bool = True) -> bool:
        """The row failed; unless its last attempt may have reached the upstream, nothing can land later."""
        values: dict = {"status": RowStatus.FAILED, "error": error}
        if not may_have_landed:
            values["attempted_at"] = None
        return self._change(run, [row], **values)


    def mark_row_unsent(self, run: Run, row: int) -> bool:
        """The row's last attempt never reached the upstream: nothing of it can land later."""
        return self._change(run, [row], attempted_at=None)


    def mark_rows_failed(self, run: Run, rows: Iterable[int], error: str) -> bool:
        """These rows failed for one reason (a deadline, the directory unreachable)."""
        return self._change(run, rows, status=RowStatus.FAILED, error=error)


    def mark_rows_pending(self, run: Run, rows: Iterable[int], error: str | None = None) -> bool:
        """These rows are not created and not being created (a resume starts them afresh)."""
        return self._change(run, rows, status=RowStatus.PENDING, hospital_id=None, error=error)


    def mark_activated(self, run: Run) -> bool:
        """The batch is active upstream: every row with it."""
        return self._change(run, None, status=RowStatus.CREATED_AND_ACTIVATED, batch={"activated": True})


    def mark_rolled_back(self, run: Run) -> bool:
        """The batch's hospitals are deleted upstream; the lease is let go, and nothing changes it again."""
        return self._change(run, None, status=RowStatus.DELETED, hospital_id=None,
                            batch={"status": BatchStatus.ROLLED_BACK, "activated": False,
                                   "lease_owner": None, "lease_expires": None}, announce=True)


    def _change(self, run: Run, rows: Iterable[int] | None = (), *, batch: dict | None = None,
                only_if: ColumnElement[bool] | None = None, announce: bool = False, **row_values) -> bool:
        """Change `rows` (None: every row) and the batch's columns as one transaction, if `run` still
        owns the batch and it is not rolled back, and wake watchers; return whether it did.
        `announce`: the batch is final, and its webhook event is written in the same transaction."""
        with self._write() as conn:
            if not self._fenced(conn, run, batch or {}, only_if):
                return False
            if row_values:
                which = [] if rows is None else [batch_rows.c.row.in_(list(rows))]
                conn.execute(update(batch_rows).where(batch_rows.c.batch_id == run.id, *which)
                             .values(**row_values))
            if announce:
                self._announce(conn, "batch", run.id)
        self._notify()
        return True


    def _fenced(self, conn: Connection, run: Run, values: dict, only_if: ColumnElement[bool] | None = None) -> bool:
        """Bump the batch (locking its row first) with `values` and the run's time banked, if `run`
        still owns it and it is not rolled back; whether it did."""
        now = self._now(conn)
        where = [batches.c.id == run.id, batches.c.run_token == run.token,
                 batches.c.status != BatchStatus.ROLLED_BACK] + ([] if only_if is None else [only_if])
        return conn.execute(update(batches).where(*where).values(
            **{**banked(now), "version": batches.c.version + 1, "updated_at": now, **values})).rowcount == 1


    def fix_row(self, batch_id: str, row: int, name: str, address: str, phone: str | None, error: str,
                check: Callable[[list[Row]], None] = lambda _others: None) -> bool:
        """Give a failed row of a batch at rest (resumable, or its owner's lease lapsed) new values;
        return whether it did, False when the row is not failed or the batch is being processed.

        `check(the batch's other rows)` runs inside the transaction, after the batch is locked, and
        may raise to refuse the values: nothing is written then, and its exception propagates.
        """
        try:
            with self._write() as conn:
                now = self._now(conn)
                at_rest = batches.c.status.in_([str(s) for s in RESUMABLE])
                lapsed = batches.c.status.in_([str(s) for s in RUNNING]) & (batches.c.lease_expires < now)
                # Bumping the batch first locks its row, so a resume's take_lease cannot slip in between,
                # and a fix of another of its rows waits here until this one is committed.
                if conn.execute(update(batches).where(batches.c.id == batch_id, at_rest | lapsed).values(
                        version=batches.c.version + 1, updated_at=now)).rowcount != 1:
                    raise self._Unchanged
                # Read under that lock (a fresh snapshot on PostgreSQL), so a fix committed meanwhile shows.
                check(self._other_rows(conn, batch_id, row))
                if conn.execute(update(batch_rows).where(
                        batch_rows.c.batch_id == batch_id, batch_rows.c.row == row,
                        batch_rows.c.status == RowStatus.FAILED,
                ).values(name=name, address=address, phone=phone, error=error)).rowcount != 1:
                    raise self._Unchanged
        except self._Unchanged:
            return False
        self._notify()
        return True


    def _other_rows(self, conn: Connection, batch_id: str, row: int) -> list[Row]:
        found = conn.execute(select(batch_rows).where(batch_rows.c.batch_id == batch_id, batch_rows.c.row != row)
                             .order_by(batch_rows.c.row)).all()
        return [_as_row(r) for r in found]


    def start_rows(self, run: Run, rows: Iterable[int], now: float) -> bool | None:
        """Mark rows holding a limiter slot in flight from `now`, unless the batch's import is being
        cancelled; return whether they may go (None when the run lost the batch). One transaction,
        so a cancel either comes first and no row starts, or comes after and finds them in flight."""
        with self._write() as conn:
            if self._cancelling(conn, run.id):
                return False
            if not self._fenced(conn, run, {}):
                return None
            conn.execute(update(batch_rows).where(batch_rows.c.batch_id == run.id,
                                                  batch_rows.c.row.in_(list(rows)))
                         .values(status=RowStatus.IN_PROGRESS, error=None, attempted_at=now))
        self._notify()
        return True


    def is_cancelling(self, batch_id: str) -> bool:
        """Whether the batch belongs to an import whose live run was asked to cancel."""
        with self._read() as conn:
            return self._cancelling(conn, batch_id)


    def _cancelling(self, conn: Connection, batch_id: str) -> bool:
        return conn.execute(select(imports.c.id).join(import_batches, import_batches.c.import_id == imports.c.id)
                            .where(import_batches.c.batch_id == batch_id, imports.c.cancel_requested,
                                   imports.c.status.in_([str(s) for s in RUNNING]),
                                   imports.c.lease_expires >= self._now(conn))).first() is not None


    def cancel_pending_rows(self, run: Run) -> bool:
        """Mark the batch's rows still pending `cancelled`: a cancel stopped them before they started."""
        with self._write() as conn:
            if not self._fenced(conn, run, {}):
                return False
            conn.execute(update(batch_rows).where(batch_rows.c.batch_id == run.id,
                                                  batch_rows.c.status == RowStatus.PENDING)
                         .values(status=RowStatus.CANCELLED))
        self._notify()
        return True
