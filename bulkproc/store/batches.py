"""Batches and their rows: reads and named transitions."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

from sqlalchemy import Connection, Float, Update, bindparam, func, insert, select, update
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


@cache
def _fence(columns: tuple[str, ...], from_status: bool) -> Update:
    """The fenced bump of a batch that also sets `columns` (and, with `from_status`, only from the
    status `f_status`), its values all parameters: built once for each set of columns, so a row's
    write costs the database's work, not SQLAlchemy's."""
    now = bindparam("f_now", type_=Float)
    status = [batches.c.status == bindparam("f_status")] if from_status else []
    return update(batches).where(
        batches.c.id == bindparam("f_id"), batches.c.run_token == bindparam("f_token"),
        batches.c.status != BatchStatus.ROLLED_BACK, *status,
    ).values(**{**banked(bindparam("f_banked", type_=Float)), "version": batches.c.version + 1,
                "updated_at": now, **{c: bindparam(f"v_{c}", type_=batches.c[c].type) for c in columns}})


@cache
def _row_update(columns: tuple[str, ...], every_row: bool) -> Update:
    """The update of a batch's rows (or of all of them) setting `columns` from parameters, built once."""
    which = [] if every_row else [batch_rows.c.row.in_(bindparam("r_rows", expanding=True))]
    return update(batch_rows).where(batch_rows.c.batch_id == bindparam("r_batch"), *which).values(
        **{c: bindparam(f"v_{c}", type_=batch_rows.c[c].type) for c in columns})


# A row's creation recorded: one statement for every row of a group (executemany).
_CREATED = update(batch_rows).where(
    batch_rows.c.batch_id == bindparam("r_batch"), batch_rows.c.row == bindparam("r_row"),
).values(status=RowStatus.CREATED, hospital_id=bindparam("v_hospital_id"), error=None)


# Whether a batch belongs to an import whose live run was asked to cancel (read several times a batch).
_CANCELLING = select(imports.c.id).join(import_batches, import_batches.c.import_id == imports.c.id).where(
    import_batches.c.batch_id == bindparam("b_id"), imports.c.cancel_requested,
    imports.c.status.in_([str(s) for s in RUNNING]), imports.c.lease_expires >= bindparam("b_now", type_=Float))


@dataclass(eq=False)
class _Created:
    """A row's creation waiting to be recorded, and, once its group's transaction ended, whether
    its run still held the batch (None when the transaction failed)."""
    run: Run
    row: int
    hospital_id: int
    done: bool = False
    held: bool | None = None


# The columns of a Batch and of a Row record in their fields' order: records are built by position,
# since building them by name cost more than reading them.
BATCH_COLUMNS = tuple(batches.c[f.name] for f in fields(Batch) if f.name in batches.c)
ROW_COLUMNS = tuple(batch_rows.c[f.name] for f in fields(Row))
_BATCH = select(*BATCH_COLUMNS).where(batches.c.id == bindparam("b_id"))
_ROWS = select(*ROW_COLUMNS).where(batch_rows.c.batch_id == bindparam("b_id")).order_by(batch_rows.c.row)


class BatchRecords(Database):
    """Batches and their rows: reads, and the named transitions, each one write bumping the version."""

    _announce: Callable[[Connection, str, str], None]  # OutboxRecords': a final state's webhook event

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Creations recorded while another group's transaction runs wait here for the next one.
        self._created: list[_Created] = []
        self._created_lock = threading.Lock()
        self._group_lock = threading.Lock()

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
            found = conn.execute(_BATCH, {"b_id": batch_id}).first()
            if found is None:
                return None
            rows = conn.execute(_ROWS, {"b_id": batch_id}).all()
            read_at = self._now(conn)
        loaded = [Row(*r) for r in rows]
        return Batch(*found, rows=loaded, row_counts=dict(Counter(r.status for r in loaded)), read_at=read_at)


    def rows_of(self, batch_ids: list[str]) -> list[tuple[str, Row]]:
        """The rows of these batches with their batch ids, in row-number order, in one read."""
        with self._read() as conn:
            found = conn.execute(select(batch_rows.c.batch_id, *ROW_COLUMNS).where(batch_rows.c.batch_id.in_(batch_ids))
                                 .order_by(batch_rows.c.row, batch_rows.c.batch_id)).all()
        return [(r[0], Row(*r[1:])) for r in found]


    def recent(self, limit: int, standalone: bool = False) -> list[Batch]:
        """The newest batches first, with their row counts but not their rows; with `standalone`,
        only the batches uploaded on their own (none of an import's)."""
        query = select(batches).order_by(batches.c.created_at.desc(), batches.c.id).limit(limit)
        if standalone:
            query = query.where(batches.c.id.not_in(select(import_batches.c.batch_id)))
        with self._read() as conn:
            found = conn.execute(query).all()
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
                            from_status=BatchStatus.QUEUED)


    def set_status(self, run: Run, status: str) -> bool:
        """Move the batch to `status` and nothing else (e.g. `activating`)."""
        return self._change(run, batch={"status": status})


    def set_error(self, run: Run, error: str | None) -> bool:
        """Say what the batch is waiting for or why it stopped; None clears it."""
        return self._change(run, batch={"error": error})


    def finish_run(self, run: Run, status: str, error: str | None, now: float) -> bool:
        """End the run at `now`: its time joins the batch's (as every fenced write banks it), and the
        lease is let go."""
        return self._change(run, batch={
            "status": status, "error": error, "run_started_at": None, "lease_owner": None, "lease_expires": None},
            now=now, announce=True)


    def release_lease(self, run: Run, status: str) -> bool:
        """Let go of the batch, leaving it in `status` (an attempt that changed nothing)."""
        return self._change(run, batch={"status": status, "lease_owner": None, "lease_expires": None})


    def mark_rows_in_flight(self, run: Run, rows: Iterable[int], now: float) -> bool:
        """These rows' creations are being sent at `now` (so they may land from then on)."""
        return self._change(run, rows, status=RowStatus.IN_PROGRESS, error=None, attempted_at=now)


    def record_created(self, run: Run, row: int, hospital_id: int) -> bool:
        """The row exists upstream as `hospital_id`: committed when this returns, in one transaction
        with the creations of any rows recorded meanwhile (each fenced on its own run)."""
        held = self._record_in_group(_Created(run, row, hospital_id))
        if held is None:  # the group's transaction failed: this row alone meets its own failure
            return self._change(run, [row], status=RowStatus.CREATED, hospital_id=hospital_id, error=None)
        return held


    def _record_in_group(self, mine: _Created) -> bool | None:
        """Wait until a group holding `mine` is committed, writing it (and all waiting) if no other
        thread is; whether its run held the batch, None when the group's transaction failed.

        The rows of twenty creations answered together took twenty transactions, one after the
        other on SQLite's one writer: grouped, the ones that arrive while one commits share the next.
        """
        with self._created_lock:
            self._created.append(mine)
        with self._group_lock:
            if not mine.done:
                with self._created_lock:
                    group, self._created = self._created, []
                try:
                    held = self._write_created(group)
                except Exception:  # each row then meets the failure on its own, in its own thread
                    held = None
                for pending in group:
                    pending.held = None if held is None else pending.run in held
                    pending.done = True
        return mine.held


    def _write_created(self, group: list[_Created]) -> set[Run]:
        """Record the group's creations in one transaction; the runs that still held their batches."""
        with self._write() as conn:
            held = {run for run in dict.fromkeys(p.run for p in group) if self._fenced(conn, run, {})}
            rows = [{"r_batch": p.run.id, "r_row": p.row, "v_hospital_id": p.hospital_id}
                    for p in group if p.run in held]
            if rows:
                conn.execute(_CREATED, rows)
        if held:
            self._notify()
        return held


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


    def mark_rows_activated(self, run: Run, rows: Iterable[int]) -> bool:
        """The batch is active upstream with these rows (its own created ones; the others stay as they are)."""
        return self._change(run, rows, status=RowStatus.CREATED_AND_ACTIVATED, batch={"activated": True})


    def mark_rows_rolled_back(self, run: Run, rows: Iterable[int]) -> bool:
        """Like mark_rolled_back, but only these rows read deleted (rows already in the directory stay so)."""
        return self._change(run, rows, status=RowStatus.DELETED, hospital_id=None,
                            batch={"status": BatchStatus.ROLLED_BACK, "activated": False,
                                   "lease_owner": None, "lease_expires": None}, announce=True)


    def record_in_directory(self, run: Run, found: dict[int, int]) -> bool:
        """These rows (row -> hospital id) are already in the directory: they are not to be created."""
        with self._write() as conn:
            if not self._fenced(conn, run, {}):
                return False
            for row, hospital_id in found.items():
                conn.execute(update(batch_rows).where(batch_rows.c.batch_id == run.id, batch_rows.c.row == row)
                             .values(status=RowStatus.ALREADY_IN_DIRECTORY, hospital_id=hospital_id, error=None))
        self._notify()
        return True


    def _change(self, run: Run, rows: Iterable[int] | None = (), *, batch: dict | None = None,
                from_status: str | None = None, now: float | None = None, announce: bool = False,
                **row_values) -> bool:
        """Change `rows` (None: every row) and the batch's columns as one transaction, if `run` still
        owns the batch, it is not rolled back (and is in `from_status`, when given), and wake
        watchers; return whether it did. The run's time is banked at `now` (the store's, if None).
        `announce`: the batch is final, and its webhook event is written in the same transaction."""
        with self._write() as conn:
            if not self._fenced(conn, run, batch or {}, from_status, now):
                return False
            if row_values:
                params = {f"v_{c}": v for c, v in row_values.items()}
                if rows is not None:
                    params["r_rows"] = list(rows)
                conn.execute(_row_update(tuple(row_values), rows is None), {"r_batch": run.id, **params})
            if announce:
                self._announce(conn, "batch", run.id)
        self._notify()
        return True


    def _fenced(self, conn: Connection, run: Run, values: dict, from_status: str | None = None,
                banked_at: float | None = None) -> bool:
        """Bump the batch (locking its row first) with `values` and the run's time banked (at
        `banked_at`, or now), if `run` still owns it, it is not rolled back and is in `from_status`
        (when given); whether it did."""
        now = self._now(conn)
        params = {"f_id": run.id, "f_token": run.token, "f_now": now,
                  "f_banked": now if banked_at is None else banked_at, **{f"v_{c}": v for c, v in values.items()}}
        if from_status is not None:
            params["f_status"] = from_status
        return conn.execute(_fence(tuple(values), from_status is not None), params).rowcount == 1


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
        found = conn.execute(select(*ROW_COLUMNS).where(batch_rows.c.batch_id == batch_id, batch_rows.c.row != row)
                             .order_by(batch_rows.c.row)).all()
        return [Row(*r) for r in found]


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
        return conn.execute(_CANCELLING, {"b_id": batch_id, "b_now": self._now(conn)}).first() is not None


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
