"""Imports: one file's batches, their reads, claims and the runner's transitions."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..states import FINAL, RESUMABLE, RUNNING, BatchStatus, RowStatus
from .batches import BATCH_COLUMNS, _earlier_upload
from .database import Database
from .leases import new_token
from .records import Batch, Import, ImportPart, Run
from .schema import batch_rows, batches, import_batches, imports


# Batches whose rows one INSERT statement writes when an import is recorded: one statement for
# every row of a large file held its parameters, several times the rows' own size, all at once.
INSERT_PARTS = 25

# A batch's rows in each status, one column a status, for rows grouped by batch alone: they come in
# batch order from the primary key, so SQLite sorts nothing. Grouped by batch and status, every row of
# the import went through an in-memory sorter at each read of its document (1 MB at 10,000 rows, in
# whichever thread read it; bench/import_scale.py).
_STATUSES = [str(status) for status in RowStatus]
_STATUS_COUNTS = [func.count().filter(batch_rows.c.status == status) for status in _STATUSES]


def _insert_parts(conn: Connection, import_id: str, position: int, group: list[tuple[str, list]],
                  owned: dict[str, object]) -> int:
    """Write a few of an import's batches, the first at `position`: the batches, their rows and their
    places in the import; return how many rows they hold."""
    conn.execute(insert(batches), [{"id": batch_id, "total": len(rows), "activated": False, **owned}
                                   for batch_id, rows in group])
    conn.execute(insert(batch_rows), [
        {"batch_id": batch_id, "row": r.row, "name": r.name, "address": r.address, "phone": r.phone,
         "status": RowStatus.PENDING}
        for batch_id, rows in group for r in rows])
    conn.execute(insert(import_batches), [
        {"import_id": import_id, "position": position + offset, "batch_id": batch_id,
         "first_row": rows[0].row, "last_row": rows[-1].row}
        for offset, (batch_id, rows) in enumerate(group)])
    return sum(len(rows) for _, rows in group)


class ImportRecords(Database):
    """Imports and the batches they are split into: reads, claims and the runner's transitions."""

    _announce: Callable[[Connection, str, str], None]  # OutboxRecords': a final state's webhook event

    def insert_import(self, import_id: str, parts: Iterable[tuple[str, list]], *, owner: str, lease_until: float,
                      token: str | None = None, idempotency_key: str | None = None,
                      file_sha256: str | None = None) -> tuple[str, bool]:
        """Record a new queued import and its queued batches (each `parts` item: batch id, rows; read
        a few at a time), all renewed by `owner` and owned by the import's run `token`, in one
        transaction; return (import id, True), or the earlier import's (id, False) when the
        idempotency key was seen with the same file.

        Raises IdempotencyMismatch when the key was seen with another file.
        """
        try:
            with self._write() as conn:
                now = self._now(conn)
                owned = {"status": BatchStatus.QUEUED, "version": 0, "created_at": now, "updated_at": now,
                         "elapsed": 0.0, "lease_owner": owner, "lease_expires": lease_until,
                         "run_token": token or new_token()}
                # First, so that a repeated key is found before any row is written.
                conn.execute(insert(imports).values(
                    id=import_id, total=0, cancel_requested=False, idempotency_key=idempotency_key,
                    file_sha256=file_sha256, **owned))
                total, position, remaining = 0, 0, iter(parts)
                while group := list(itertools.islice(remaining, INSERT_PARTS)):
                    total += _insert_parts(conn, import_id, position, group, owned)
                    position += len(group)
                conn.execute(update(imports).where(imports.c.id == import_id).values(total=total))
        except IntegrityError as clash:
            return _earlier_upload(clash, self._import_by_key, idempotency_key, file_sha256), False
        self._notify()
        return import_id, True


    def find_import_by_idempotency_key(self, key: str) -> Import | None:
        """The import an earlier upload with this Idempotency-Key recorded, without its batches, or None."""
        return self._import_by_key(key)


    def _import_by_key(self, key: str) -> Import | None:
        with self._read() as conn:
            found = conn.execute(select(imports).where(imports.c.idempotency_key == key)).first()
        return Import(**found._mapping) if found else None


    def load_import(self, import_id: str) -> Import | None:
        """The import with its batches in file order (their row counts, not their rows), or None."""
        with self._read() as conn:
            found = conn.execute(select(imports).where(imports.c.id == import_id)).first()
            if found is None:
                return None
            parts = self._import_parts(conn, [import_id])
        return Import(**found._mapping, parts=parts[import_id])


    def recent_imports(self, limit: int) -> list[Import]:
        """The newest imports first, with their batches' row counts."""
        with self._read() as conn:
            found = conn.execute(select(imports).order_by(imports.c.created_at.desc(), imports.c.id)
                                 .limit(limit)).all()
            parts = self._import_parts(conn, [i.id for i in found])
        return [Import(**i._mapping, parts=parts[i.id]) for i in found]


    def _import_parts(self, conn: Connection, import_ids: list[str]) -> dict[str, list[ImportPart]]:
        """The imports' batches in file order, with their row counts: two reads, whatever the size
        (a 10,000-row import's document is read twice a second by a client following it)."""
        links = conn.execute(select(import_batches.c.import_id, import_batches.c.position, import_batches.c.first_row,
                                    import_batches.c.last_row, *BATCH_COLUMNS)
                             .join(batches, batches.c.id == import_batches.c.batch_id)
                             .where(import_batches.c.import_id.in_(import_ids))
                             .order_by(import_batches.c.import_id, import_batches.c.position)).all()
        member = select(import_batches.c.batch_id).where(import_batches.c.import_id.in_(import_ids))
        counts = {batch_id: {status: n for status, n in zip(_STATUSES, by_status) if n}
                  for batch_id, *by_status in conn.execute(
                      select(batch_rows.c.batch_id, *_STATUS_COUNTS).where(batch_rows.c.batch_id.in_(member))
                      .group_by(batch_rows.c.batch_id))}
        parts: dict[str, list[ImportPart]] = {i: [] for i in import_ids}
        for import_id, position, first_row, last_row, *batch in links:
            part = ImportPart(position, first_row, last_row, Batch(*batch, row_counts=counts.get(batch[0], {})))
            parts[import_id].append(part)
        return parts


    def import_batch_ids(self, import_id: str) -> list[str]:
        """The ids of the import's batches in file order (no batch read: a large import has hundreds)."""
        with self._read() as conn:
            return list(conn.execute(select(import_batches.c.batch_id).where(import_batches.c.import_id == import_id)
                                     .order_by(import_batches.c.position)).scalars())


    def import_version(self, import_id: str) -> int | None:
        """A number that grows with every change of the import or any of its batches (None if unknown)."""
        with self._read() as conn:
            own = conn.execute(select(imports.c.version).where(imports.c.id == import_id)).scalar()
            if own is None:
                return None
            theirs = conn.execute(select(func.coalesce(func.sum(batches.c.version), 0))
                                  .where(batches.c.id.in_(self._members(import_id)))).scalar()
        return own + theirs


    @staticmethod
    def _members(import_id: str):
        return select(import_batches.c.batch_id).where(import_batches.c.import_id == import_id)


    def take_import(self, import_id: str, owner: str, until: float, token: str) -> bool:
        """Atomically make `owner`'s run `token` the runner of an import at rest (or whose runner's
        lease lapsed), with every unfinished batch of it nobody is processing, their cancelled rows
        pending again; False when the import is running or rolled back."""
        with self._write() as conn:
            now = self._now(conn)
            running = [str(s) for s in RUNNING]
            takeable = (batches.c.status.in_([str(s) for s in RESUMABLE])
                        | (batches.c.status.in_(running) & (batches.c.lease_expires < now)))
            # A runner whose lease lapsed died with its process, and so did the batches that process
            # was running, though their own leases may lapse a moment later: they come with the import.
            dead = conn.execute(select(imports.c.lease_owner).where(
                imports.c.id == import_id, imports.c.status.in_(running), imports.c.lease_expires < now)).scalar()
            if dead is not None:
                takeable = takeable | (batches.c.status.in_(running) & (batches.c.lease_owner == dead))
            if not self._claim_import(conn, import_id, owner, until, token, BatchStatus.QUEUED):
                return False
            mine = batches.c.id.in_(self._members(import_id))
            conn.execute(update(batch_rows).where(batch_rows.c.batch_id.in_(
                select(batches.c.id).where(mine, takeable)), batch_rows.c.status == RowStatus.CANCELLED)
                .values(status=RowStatus.PENDING, error=None))
            conn.execute(update(batches).where(mine, takeable).values(
                status=BatchStatus.QUEUED, lease_owner=owner, lease_expires=until, run_token=token,
                run_started_at=None, version=batches.c.version + 1, updated_at=now))
        self._notify()
        return True


    def hold_import(self, import_id: str, owner: str, until: float, token: str) -> bool:
        """Atomically make `owner`'s run `token` the holder of an import at rest (or whose runner's
        lease lapsed), marked processing, without touching its batches; False when it is running
        or rolled back."""
        with self._write() as conn:
            held = self._claim_import(conn, import_id, owner, until, token, BatchStatus.PROCESSING)
        self._notify()
        return held


    def _claim_import(self, conn: Connection, import_id: str, owner: str, until: float, token: str,
                      status: str) -> bool:
        now = self._now(conn)
        running = [str(s) for s in RUNNING]
        at_rest = imports.c.status.not_in(running + [BatchStatus.ROLLED_BACK])
        lapsed = imports.c.status.in_(running) & (imports.c.lease_expires < now)
        return conn.execute(update(imports).where(imports.c.id == import_id, at_rest | lapsed).values(
            status=status, cancel_requested=False, lease_owner=owner, lease_expires=until, run_token=token,
            # A run killed without finishing counts up to its last renewal.
            elapsed=imports.c.elapsed + func.coalesce(imports.c.run_seen_at - imports.c.run_started_at, 0.0),
            run_started_at=None, run_seen_at=None, version=imports.c.version + 1, updated_at=now)).rowcount == 1


    def start_import_run(self, run: Run, started: float) -> bool:
        """Mark the queued import processing, its run timed from `started`; False when the run lost it."""
        with self._write() as conn:
            held = conn.execute(update(imports).where(
                imports.c.id == run.id, imports.c.run_token == run.token, imports.c.status == BatchStatus.QUEUED,
            ).values(status=BatchStatus.PROCESSING, run_started_at=started, run_seen_at=started,
                     version=imports.c.version + 1, updated_at=self._now(conn))).rowcount == 1
        self._notify()
        return held


    def finish_import_run(self, run: Run, status: str, ran: float) -> bool:
        """End the run: record its outcome and time, release the lease and the cancel request;
        batches of it never started read `interrupted` at once. False when the run lost the import."""
        with self._write() as conn:
            now = self._now(conn)
            if not conn.execute(update(imports).where(
                    imports.c.id == run.id, imports.c.run_token == run.token,
                    imports.c.status != BatchStatus.ROLLED_BACK,
            ).values(status=status, elapsed=imports.c.elapsed + ran, run_started_at=None, run_seen_at=None,
                     lease_owner=None, lease_expires=None, cancel_requested=False,
                     version=imports.c.version + 1, updated_at=now)).rowcount:
                return False
            conn.execute(update(batches).where(batches.c.id.in_(self._members(run.id)),
                                               batches.c.run_token == run.token,
                                               batches.c.status == BatchStatus.QUEUED)
                         .values(lease_expires=now, version=batches.c.version + 1, updated_at=now))
            if status in FINAL:  # its webhook event, in the same transaction (outbox.py)
                self._announce(conn, "import", run.id)
        self._notify()
        return True


    def request_import_cancel(self, import_id: str) -> bool:
        """Ask a running import to stop starting rows: its pending rows read `cancelled` and its
        batches not started `cancelled`; False when the import is not running."""
        with self._write() as conn:
            now = self._now(conn)
            running = [str(s) for s in RUNNING]
            if not conn.execute(update(imports).where(
                    imports.c.id == import_id, imports.c.status.in_(running), imports.c.lease_expires >= now,
            ).values(cancel_requested=True, version=imports.c.version + 1, updated_at=now)).rowcount:
                return False
            mine = batch_rows.c.batch_id.in_(self._members(import_id))
            conn.execute(update(batch_rows).where(mine, batch_rows.c.status == RowStatus.PENDING)
                         .values(status=RowStatus.CANCELLED))
            conn.execute(update(batches).where(batches.c.id.in_(self._members(import_id)),
                                               batches.c.status == BatchStatus.QUEUED)
                         .values(status=BatchStatus.CANCELLED, lease_owner=None, lease_expires=None))
            conn.execute(update(batches).where(batches.c.id.in_(self._members(import_id))).values(
                version=batches.c.version + 1, updated_at=now))
        self._notify()
        return True
