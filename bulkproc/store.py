"""The job store: SQLAlchemy Core tables for batches and rows, and small functions over them."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from sqlalchemy import (
    Boolean, Column, case, Connection, Engine, Float, ForeignKey, Index, Integer, MetaData, String,
    Table, Text, create_engine, event, func, insert, select, text, update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, InternalError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.types import TypeDecorator

from .exceptions import IdempotencyMismatch, StoreRefusedValue, StoreUnavailable
from .states import RESUMABLE, RUNNING, BatchStatus, RowStatus

metadata = MetaData()

# SQLite failures after which a connection is no use: one opened while the file was read-only
# stays read-only after it is writable again, so the pool is emptied and connections made afresh.
_BROKEN_SQLITE = ("SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_FULL", "SQLITE_CORRUPT",
                  "SQLITE_NOTADB")
# Failures of the store itself rather than of a statement: worth trying again later.
_UNAVAILABLE = (OperationalError, InterfaceError, InternalError, PoolTimeout, sqlite3.OperationalError)


class Message(TypeDecorator):
    """Text from elsewhere (the directory's error messages): PostgreSQL refuses NUL, so it becomes U+FFFD."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: object) -> str | None:
        return None if value is None else value.replace("\x00", "\ufffd")


# PostgreSQL's own clock, read inside the transaction that compares with it: every instance sharing
# the database then measures leases and rate windows on one clock, whatever its host's says.
DATABASE_NOW = text("SELECT extract(epoch from clock_timestamp())::float8")

batches = Table(
    "batches", metadata,
    Column("id", String(36), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("total", Integer, nullable=False),
    Column("activated", Boolean, nullable=False, default=False),
    Column("error", Message),
    # Bumped by every change, so a watcher can tell that something happened.
    Column("version", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # Processing time: seconds of finished runs, plus the running one since run_started_at.
    Column("elapsed", Float, nullable=False, default=0.0),
    Column("run_started_at", Float),
    Column("lease_owner", String(80)),
    Column("lease_expires", Float),
    Column("idempotency_key", String(200), unique=True),
    Column("file_sha256", String(64)),
    Index("ix_batches_created_at", "created_at"),
)

batch_rows = Table(
    "batch_rows", metadata,
    Column("batch_id", String(36), ForeignKey("batches.id"), primary_key=True),
    Column("row", Integer, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("phone", Text),
    Column("status", String(24), nullable=False),
    Column("hospital_id", Integer),
    Column("error", Message),
    # When the row's last creation request was sent (wall-clock seconds): a resume gives it time to land.
    Column("attempted_at", Float),
)

# An import: one file split into batches, run by one process at a time under a lease like a batch's.
imports = Table(
    "imports", metadata,
    Column("id", String(36), primary_key=True),
    # queued/processing while a runner owns it; otherwise the outcome its last run saw.
    Column("status", String(20), nullable=False),
    Column("total", Integer, nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("version", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # Processing time as for a batch; run_seen_at is the running run's last lease renewal, so a
    # killed run's time is kept up to then.
    Column("elapsed", Float, nullable=False, default=0.0),
    Column("run_started_at", Float),
    Column("run_seen_at", Float),
    Column("lease_owner", String(80)),
    Column("lease_expires", Float),
    Column("idempotency_key", String(200), unique=True),
    Column("file_sha256", String(64)),
    Index("ix_imports_created_at", "created_at"),
)
# Which batches make up an import, in the file's order.
import_batches = Table(
    "import_batches", metadata,
    Column("import_id", String(36), ForeignKey("imports.id"), primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("batch_id", String(36), ForeignKey("batches.id"), nullable=False, unique=True),
    Column("first_row", Integer, nullable=False),
    Column("last_row", Integer, nullable=False),
)

# The shared create-rate limiter: one lock row, and the creations of the current window.
limiter = Table(
    "create_limiter", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("blocked_until", Float, nullable=False, default=0.0),
)
create_slots = Table(
    "create_slots", metadata,
    Column("id", Integer, primary_key=True),
    Column("taken_at", Float, nullable=False, index=True),
)


@dataclass(frozen=True)
class Row:
    row: int
    name: str
    address: str
    phone: str | None
    status: str
    hospital_id: int | None
    error: str | None
    attempted_at: float | None = None


@dataclass(frozen=True)
class Batch:
    id: str
    status: str
    total: int
    activated: bool
    error: str | None
    version: int
    created_at: float
    updated_at: float
    elapsed: float
    run_started_at: float | None
    lease_owner: str | None
    lease_expires: float | None
    idempotency_key: str | None
    file_sha256: str | None
    rows: list[Row] = field(default_factory=list)
    # How many rows are in each status; filled even where `rows` is not (the listing).
    row_counts: dict[str, int] = field(default_factory=dict)
    # The store's time when the batch was read (Store.now), for judging its lease.
    read_at: float = 0.0


@dataclass(frozen=True)
class ImportPart:
    """One batch of an import: where it sits in the file, and the batch (row counts, no rows)."""
    position: int
    first_row: int
    last_row: int
    batch: Batch


@dataclass(frozen=True)
class Import:
    id: str
    status: str
    total: int
    cancel_requested: bool
    version: int
    created_at: float
    updated_at: float
    elapsed: float
    run_started_at: float | None
    run_seen_at: float | None
    lease_owner: str | None
    lease_expires: float | None
    idempotency_key: str | None
    file_sha256: str | None
    parts: list[ImportPart] = field(default_factory=list)


def _enter_wal_mode(cursor: sqlite3.Cursor, tries: int = 200, pause: float = 0.05) -> None:
    """Switch the file to WAL (a lasting property of the file, so normally a no-op).

    Switching needs the file to itself, and SQLite answers "database is locked" at once instead
    of waiting on the busy timeout when another worker holds it: so retry, for about 10 s.
    """
    for attempt in range(tries):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if attempt == tries - 1:
                raise
            time.sleep(pause)


def engine_for(url: str) -> Engine:
    """Build an Engine for `url`, with SQLite made safe for many threads and several processes."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        # Render and most hosts hand out postgres:// URLs; psycopg 3 is the driver we ship.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if not parsed.drivername.startswith("sqlite"):
        return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=30)
    engine = create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=30,
                           connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "handle_error")
    def _drop_broken_connections(context) -> None:
        name = getattr(context.original_exception, "sqlite_errorname", "")
        if name.startswith(_BROKEN_SQLITE):
            context.is_disconnect = True  # invalidates this connection and every pooled one

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # We issue BEGIN ourselves (below), so pysqlite must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        _enter_wal_mode(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that later writes can fail with "database is locked" without
        # waiting; taking the write lock up front makes writers queue on busy_timeout instead.
        readonly = conn.get_execution_options().get("readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


@contextmanager
def _store_failures() -> Iterator[None]:
    """Turn the database's own failures into StoreUnavailable, and a value it cannot keep into StoreRefusedValue."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(_reason(exc)) from exc
    except DataError as exc:
        raise StoreRefusedValue("The job store cannot keep a value of this request (such as a NUL "
                                "character); remove it and send the request again.") from exc


def _reason(exc: BaseException) -> str:
    """The driver's own words (for the log), without SQLAlchemy's statement and parameters."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


class Store:
    """Batches and rows in a SQL database; every write bumps the batch's version and wakes watchers.

    Its time (`now`) is the database's on PostgreSQL, which several hosts share, and `clock` (the
    host's) on SQLite, which one host has to itself; `database_clock=False` uses `clock` everywhere.
    """

    def __init__(self, url: str, clock: Callable[[], float] = time.time, *, database_clock: bool = True) -> None:
        self.engine = engine_for(url)
        self._clock = clock
        self._database_clock = database_clock and self.engine.dialect.name == "postgresql"
        self._changed = threading.Condition()
        self._write_lock = threading.Lock() if self.engine.dialect.name == "sqlite" else nullcontext()
        try:
            self._create_schema()
        except BaseException:
            self.engine.dispose()
            raise

    def _create_schema(self) -> None:
        """Create the tables and the limiter's lock row unless they exist; safe when workers race."""
        with self._write() as conn:
            # Workers start together: serialise them (SQLite's BEGIN IMMEDIATE already does).
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7226150)"))
            metadata.create_all(conn, checkfirst=True)
            if conn.execute(select(limiter.c.id)).first() is None:
                conn.execute(insert(limiter).values(id=1, blocked_until=0.0))

    def close(self) -> None:
        self.engine.dispose()

    def now(self) -> float:
        """The store's time in epoch seconds, the one clock for leases, rate windows and timestamps."""
        if not self._database_clock:
            return self._clock()
        with self._read() as conn:
            return self._now(conn)

    def _now(self, conn: Connection) -> float:
        """The store's time, read inside the caller's transaction."""
        return conn.execute(DATABASE_NOW).scalar_one() if self._database_clock else self._clock()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # SQLite has one writer at a time, and a waiting writer polls on the busy handler's
        # sleeps (up to 100 ms each). Queueing this process's writers on a lock hands the file
        # over at once; other processes still meet the busy timeout.
        with _store_failures(), self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with _store_failures(), self.engine.connect().execution_options(readonly=True) as conn:
            with conn.begin():
                yield conn

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- batches -------------------------------------------------------------------------

    def insert_batch(self, batch_id: str, rows: Iterable, *, owner: str, lease_until: float,
                     idempotency_key: str | None = None, file_sha256: str | None = None) -> tuple[str, bool]:
        """Record a new queued batch owned by `owner`; return (batch id, True), or the earlier
        batch's (id, False) when the idempotency key was seen with the same file.

        Raises IdempotencyMismatch when the key was seen with another file.
        """
        rows = list(rows)
        try:
            with self._write() as conn:
                now = self._now(conn)
                conn.execute(insert(batches).values(
                    id=batch_id, status=BatchStatus.QUEUED, total=len(rows), activated=False,
                    version=0, created_at=now, updated_at=now, elapsed=0.0, lease_owner=owner,
                    lease_expires=lease_until, idempotency_key=idempotency_key, file_sha256=file_sha256))
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
        loaded = [Row(**{k: v for k, v in r._mapping.items() if k != "batch_id"}) for r in rows]
        return Batch(**found._mapping, rows=loaded, row_counts=dict(Counter(r.status for r in loaded)),
                     read_at=read_at)

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

    # -- transitions: each one write, bumping the version ------------------------------------

    def start_run(self, batch_id: str, now: float) -> None:
        """The batch is being processed by its lease holder, from `now`."""
        self._change(batch_id, batch={"status": BatchStatus.PROCESSING, "run_started_at": now, "error": None})

    def set_status(self, batch_id: str, status: str) -> None:
        """Move the batch to `status` and nothing else (e.g. `activating`)."""
        self._change(batch_id, batch={"status": status})

    def set_error(self, batch_id: str, error: str | None) -> None:
        """Say what the batch is waiting for or why it stopped; None clears it."""
        self._change(batch_id, batch={"error": error})

    def finish_run(self, batch_id: str, status: str, error: str | None, now: float) -> None:
        """End the run at `now`: its time joins the batch's, and the lease is let go."""
        self._change(batch_id, batch={
            "status": status, "error": error, "run_started_at": None, "lease_owner": None, "lease_expires": None,
            "elapsed": batches.c.elapsed + func.coalesce(now - batches.c.run_started_at, 0.0)})

    def release_lease(self, batch_id: str, status: str) -> None:
        """Let go of the batch, leaving it in `status` (an attempt that changed nothing)."""
        self._change(batch_id, batch={"status": status, "lease_owner": None, "lease_expires": None})

    def mark_rows_in_flight(self, batch_id: str, rows: Iterable[int], now: float) -> None:
        """These rows' creations are being sent at `now` (so they may land from then on)."""
        self._change(batch_id, rows, status=RowStatus.IN_PROGRESS, error=None, attempted_at=now)

    def record_created(self, batch_id: str, row: int, hospital_id: int) -> None:
        """The row exists upstream as `hospital_id`."""
        self._change(batch_id, [row], status=RowStatus.CREATED, hospital_id=hospital_id, error=None)

    def record_row_failed(self, batch_id: str, row: int, error: str, *, may_have_landed: bool = True) -> None:
        """The row failed; unless its last attempt may have reached the upstream, nothing can land later."""
        values: dict = {"status": RowStatus.FAILED, "error": error}
        if not may_have_landed:
            values["attempted_at"] = None
        self._change(batch_id, [row], **values)

    def mark_row_unsent(self, batch_id: str, row: int) -> None:
        """The row's last attempt never reached the upstream: nothing of it can land later."""
        self._change(batch_id, [row], attempted_at=None)

    def mark_rows_failed(self, batch_id: str, rows: Iterable[int], error: str) -> None:
        """These rows failed for one reason (a deadline, the directory unreachable)."""
        self._change(batch_id, rows, status=RowStatus.FAILED, error=error)

    def mark_rows_pending(self, batch_id: str, rows: Iterable[int], error: str | None = None) -> None:
        """These rows are not created and not being created (a resume starts them afresh)."""
        self._change(batch_id, rows, status=RowStatus.PENDING, hospital_id=None, error=error)

    def mark_activated(self, batch_id: str) -> None:
        """The batch is active upstream: every row with it."""
        self._change(batch_id, None, status=RowStatus.CREATED_AND_ACTIVATED,
                     batch={"activated": True})

    def mark_rolled_back(self, batch_id: str) -> None:
        """The batch's hospitals are deleted upstream; the lease is let go."""
        self._change(batch_id, None, status=RowStatus.DELETED, hospital_id=None,
                     batch={"status": BatchStatus.ROLLED_BACK, "activated": False,
                            "lease_owner": None, "lease_expires": None})

    def _change(self, batch_id: str, rows: Iterable[int] | None = (), *, batch: dict | None = None,
                **row_values) -> None:
        """Change `rows` (None: every row) and the batch's columns as one transaction, and wake watchers."""
        with self._write() as conn:
            if row_values:
                which = [] if rows is None else [batch_rows.c.row.in_(list(rows))]
                conn.execute(update(batch_rows).where(batch_rows.c.batch_id == batch_id, *which)
                             .values(**row_values))
            conn.execute(update(batches).where(batches.c.id == batch_id).values(
                version=batches.c.version + 1, updated_at=self._now(conn), **(batch or {})))
        self._notify()

    # -- leases --------------------------------------------------------------------------

    def take_lease(self, batch_id: str, owner: str, until: float, from_statuses: Iterable[str]) -> bool:
        """Atomically make `owner` the batch's processor, if it is in one of `from_statuses`
        or its previous owner's lease has lapsed; return whether it did."""
        with self._write() as conn:
            now = self._now(conn)
            lapsed = batches.c.status.in_([str(s) for s in RUNNING]) & (batches.c.lease_expires < now)
            taken = conn.execute(update(batches).where(
                batches.c.id == batch_id,
                batches.c.status.in_([str(s) for s in from_statuses]) | lapsed,
            ).values(lease_owner=owner, lease_expires=until, status=BatchStatus.QUEUED,
                     version=batches.c.version + 1, updated_at=now)).rowcount
        self._notify()
        return taken == 1

    def renew_lease(self, batch_id: str, owner: str, until: float, now: float | None = None) -> bool:
        """Extend `owner`'s lease, and with `now` bank the run's time so far (a kill then loses at
        most one renewal's worth); False when the batch is no longer its own."""
        values: dict = {"lease_expires": until}
        if now is not None:
            values["elapsed"] = batches.c.elapsed + func.coalesce(now - batches.c.run_started_at, 0.0)
            values["run_started_at"] = case((batches.c.run_started_at.is_(None), None), else_=now)
        with self._write() as conn:
            return conn.execute(update(batches).where(
                batches.c.id == batch_id, batches.c.lease_owner == owner,
            ).values(**values)).rowcount == 1

    # -- the create-rate limiter ---------------------------------------------------------

    def take_create_slots(self, limit: int, window: float, wanted: int = 1) -> tuple[int, float]:
        """Take up to `wanted` creation slots, keeping at most `limit` in any `window` seconds and
        none while a back-off is in force; return (slots taken, seconds until another frees)."""
        with self._write() as conn:
            # The lock row serialises limiter updates on PostgreSQL; SQLite's BEGIN IMMEDIATE already does.
            blocked_until = conn.execute(select(limiter.c.blocked_until).where(limiter.c.id == 1)
                                         .with_for_update()).scalar_one()
            # Read once the lock is held: a time from before a wait for it would date the slot too early.
            now = self._now(conn)
            if blocked_until > now:
                return 0, blocked_until - now
            conn.execute(create_slots.delete().where(create_slots.c.taken_at <= now - window))
            count, oldest = conn.execute(select(func.count(), func.min(create_slots.c.taken_at))).one()
            taken = max(0, min(wanted, limit - count))
            if taken:
                conn.execute(insert(create_slots), [{"taken_at": now}] * taken)
        if taken == wanted:
            return taken, 0.0
        return taken, max((now if oldest is None else oldest) + window - now, 0.001)

    def return_create_slot(self) -> None:
        """Give back the newest creation slot (its request never reached the upstream)."""
        with self._write() as conn:
            newest = conn.execute(select(create_slots.c.id).order_by(create_slots.c.taken_at.desc(),
                                                                     create_slots.c.id.desc()).limit(1)).scalar()
            if newest is not None:
                conn.execute(create_slots.delete().where(create_slots.c.id == newest))

    def block_creates(self, until: float) -> None:
        """Hold every creation back until `until` (wall-clock seconds)."""
        with self._write() as conn:
            conn.execute(update(limiter).where(limiter.c.id == 1, limiter.c.blocked_until < until)
                         .values(blocked_until=until))

    # -- watching ------------------------------------------------------------------------

    def wait_for_change(self, batch_id: str, seen_version: int | None, timeout: float,
                        poll: float = 0.5) -> int | None:
        """Wait up to `timeout` seconds for the batch's version to pass `seen_version`; return the
        version then (None for an unknown batch). Holds no database connection while waiting."""
        return self._wait_until_moved(lambda: self.version(batch_id), seen_version, timeout, poll)

    def _wait_until_moved(self, version_of: Callable[[], int | None], seen_version: int | None, timeout: float,
                          poll: float) -> int | None:
        deadline = time.monotonic() + timeout
        while True:
            current = version_of()
            remaining = deadline - time.monotonic()
            if current is None or current != seen_version or remaining <= 0:
                return current
            # Changes made in this process wake us at once; other workers' within `poll` seconds.
            with self._changed:
                self._changed.wait(min(poll, remaining))

    # -- fixing a failed row -------------------------------------------------------------

    def fix_row(self, batch_id: str, row: int, name: str, address: str, phone: str | None, error: str) -> bool:
        """Give a failed row of a batch at rest (resumable, or its owner's lease lapsed) new values;
        return whether it did, False when the row is not failed or the batch is being processed."""
        try:
            with self._write() as conn:
                now = self._now(conn)
                at_rest = batches.c.status.in_([str(s) for s in RESUMABLE])
                lapsed = batches.c.status.in_([str(s) for s in RUNNING]) & (batches.c.lease_expires < now)
                # Bumping the batch first locks its row, so a resume's take_lease cannot slip in between.
                if conn.execute(update(batches).where(batches.c.id == batch_id, at_rest | lapsed).values(
                        version=batches.c.version + 1, updated_at=now)).rowcount != 1:
                    raise self._Unchanged
                if conn.execute(update(batch_rows).where(
                        batch_rows.c.batch_id == batch_id, batch_rows.c.row == row,
                        batch_rows.c.status == RowStatus.FAILED,
                ).values(name=name, address=address, phone=phone, error=error)).rowcount != 1:
                    raise self._Unchanged
        except self._Unchanged:
            return False
        self._notify()
        return True

    class _Unchanged(Exception):
        """Rolls back a transition whose preconditions no longer hold."""

    # -- cancelling rows (imports) -------------------------------------------------------

    def start_rows(self, batch_id: str, rows: Iterable[int], now: float) -> bool:
        """Mark rows holding a limiter slot in flight from `now`, unless the batch's import is being
        cancelled; return whether they may go. One transaction, so a cancel either comes first and
        no row starts, or comes after and finds them in flight."""
        with self._write() as conn:
            if self._cancelling(conn, batch_id):
                return False
            conn.execute(update(batch_rows).where(batch_rows.c.batch_id == batch_id,
                                                  batch_rows.c.row.in_(list(rows)))
                         .values(status=RowStatus.IN_PROGRESS, error=None, attempted_at=now))
            conn.execute(update(batches).where(batches.c.id == batch_id).values(
                version=batches.c.version + 1, updated_at=self._now(conn)))
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

    def cancel_pending_rows(self, batch_id: str) -> None:
        """Mark the batch's rows still pending `cancelled`: a cancel stopped them before they started."""
        with self._write() as conn:
            conn.execute(update(batch_rows).where(batch_rows.c.batch_id == batch_id,
                                                  batch_rows.c.status == RowStatus.PENDING)
                         .values(status=RowStatus.CANCELLED))
            conn.execute(update(batches).where(batches.c.id == batch_id).values(
                version=batches.c.version + 1, updated_at=self._now(conn)))
        self._notify()

    # -- imports -------------------------------------------------------------------------

    def insert_import(self, import_id: str, parts: list[tuple[str, list]], *, owner: str, lease_until: float,
                      idempotency_key: str | None = None, file_sha256: str | None = None) -> tuple[str, bool]:
        """Record a new queued import and its queued batches (each `parts` item: batch id, rows),
        all owned by `owner`, in one transaction; return (import id, True), or the earlier
        import's (id, False) when the idempotency key was seen with the same file.

        Raises IdempotencyMismatch when the key was seen with another file.
        """
        try:
            with self._write() as conn:
                now = self._now(conn)
                owned = {"status": BatchStatus.QUEUED, "version": 0, "created_at": now, "updated_at": now,
                         "elapsed": 0.0, "lease_owner": owner, "lease_expires": lease_until}
                conn.execute(insert(imports).values(
                    id=import_id, total=sum(len(rows) for _, rows in parts), cancel_requested=False,
                    idempotency_key=idempotency_key, file_sha256=file_sha256, **owned))
                conn.execute(insert(batches), [{"id": batch_id, "total": len(rows), "activated": False, **owned}
                                               for batch_id, rows in parts])
                conn.execute(insert(batch_rows), [
                    {"batch_id": batch_id, "row": r.row, "name": r.name, "address": r.address,
                     "phone": r.phone, "status": RowStatus.PENDING} for batch_id, rows in parts for r in rows])
                conn.execute(insert(import_batches), [
                    {"import_id": import_id, "position": position, "batch_id": batch_id,
                     "first_row": rows[0].row, "last_row": rows[-1].row}
                    for position, (batch_id, rows) in enumerate(parts)])
        except IntegrityError as clash:
            return _earlier_upload(clash, self._import_by_key, idempotency_key, file_sha256), False
        self._notify()
        return import_id, True

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
        links = conn.execute(select(import_batches, *batches.c)
                             .join(batches, batches.c.id == import_batches.c.batch_id)
                             .where(import_batches.c.import_id.in_(import_ids))
                             .order_by(import_batches.c.import_id, import_batches.c.position)).all()
        counts: dict[str, dict[str, int]] = {link.batch_id: {} for link in links}
        member = select(import_batches.c.batch_id).where(import_batches.c.import_id.in_(import_ids))
        for batch_id, status, count in conn.execute(
                select(batch_rows.c.batch_id, batch_rows.c.status, func.count())
                .where(batch_rows.c.batch_id.in_(member))
                .group_by(batch_rows.c.batch_id, batch_rows.c.status)):
            counts[batch_id][status] = count
        parts: dict[str, list[ImportPart]] = {i: [] for i in import_ids}
        for link in links:
            batch = Batch(**{c.name: link._mapping[c] for c in batches.c}, row_counts=counts[link.batch_id])
            parts[link.import_id].append(ImportPart(link.position, link.first_row, link.last_row, batch))
        return parts

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

    def take_import(self, import_id: str, owner: str, until: float) -> bool:
        """Atomically make `owner` the runner of an import at rest (or whose runner's lease lapsed),
        with every unfinished batch of it nobody is processing, their cancelled rows pending again;
        False when the import is running or rolled back."""
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
            if not self._claim_import(conn, import_id, owner, until, BatchStatus.QUEUED):
                return False
            mine = batches.c.id.in_(self._members(import_id))
            conn.execute(update(batch_rows).where(batch_rows.c.batch_id.in_(
                select(batches.c.id).where(mine, takeable)), batch_rows.c.status == RowStatus.CANCELLED)
                .values(status=RowStatus.PENDING, error=None))
            conn.execute(update(batches).where(mine, takeable).values(
                status=BatchStatus.QUEUED, lease_owner=owner, lease_expires=until,
                version=batches.c.version + 1, updated_at=now))
        self._notify()
        return True

    def hold_import(self, import_id: str, owner: str, until: float) -> bool:
        """Atomically make `owner` the holder of an import at rest (or whose runner's lease lapsed),
        marked processing, without touching its batches; False when it is running."""
        with self._write() as conn:
            held = self._claim_import(conn, import_id, owner, until, BatchStatus.PROCESSING, rolled_back=True)
        self._notify()
        return held

    def _claim_import(self, conn: Connection, import_id: str, owner: str, until: float, status: str, *,
                      rolled_back: bool = False) -> bool:
        now = self._now(conn)
        running = [str(s) for s in RUNNING]
        at_rest = imports.c.status.not_in(running + ([] if rolled_back else [BatchStatus.ROLLED_BACK]))
        lapsed = imports.c.status.in_(running) & (imports.c.lease_expires < now)
        return conn.execute(update(imports).where(imports.c.id == import_id, at_rest | lapsed).values(
            status=status, cancel_requested=False, lease_owner=owner, lease_expires=until,
            # A run killed without finishing counts up to its last renewal.
            elapsed=imports.c.elapsed + func.coalesce(imports.c.run_seen_at - imports.c.run_started_at, 0.0),
            run_started_at=None, run_seen_at=None, version=imports.c.version + 1, updated_at=now)).rowcount == 1

    def start_import_run(self, import_id: str, started: float) -> None:
        """Mark the import processing, its run timed from `started`."""
        with self._write() as conn:
            self._touch_import(conn, import_id, status=BatchStatus.PROCESSING, run_started_at=started,
                               run_seen_at=started)
        self._notify()

    def renew_import_lease(self, import_id: str, owner: str, until: float) -> bool:
        """Extend `owner`'s lease on the import and on its batches still waiting to start; False
        when the import is no longer its own."""
        with self._write() as conn:
            now = self._now(conn)
            if not conn.execute(update(imports).where(imports.c.id == import_id, imports.c.lease_owner == owner)
                                .values(lease_expires=until, run_seen_at=now)).rowcount:
                return False
            conn.execute(update(batches).where(batches.c.id.in_(self._members(import_id)),
                                               batches.c.lease_owner == owner,
                                               batches.c.status == BatchStatus.QUEUED)
                         .values(lease_expires=until))
        return True

    def finish_import_run(self, import_id: str, owner: str, status: str, ran: float) -> None:
        """End `owner`'s run: record its outcome and time, release the lease and the cancel request;
        batches it never started read `interrupted` at once."""
        with self._write() as conn:
            now = self._now(conn)
            conn.execute(update(batches).where(batches.c.id.in_(self._members(import_id)),
                                               batches.c.lease_owner == owner,
                                               batches.c.status == BatchStatus.QUEUED)
                         .values(lease_expires=now, version=batches.c.version + 1, updated_at=now))
            conn.execute(update(imports).where(imports.c.id == import_id, imports.c.lease_owner == owner).values(
                status=status, elapsed=imports.c.elapsed + ran, run_started_at=None, run_seen_at=None,
                lease_owner=None, lease_expires=None, cancel_requested=False,
                version=imports.c.version + 1, updated_at=now))
        self._notify()

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

    def _touch_import(self, conn: Connection, import_id: str, **values) -> None:
        conn.execute(update(imports).where(imports.c.id == import_id).values(
            version=imports.c.version + 1, updated_at=self._now(conn), **values))

    def wait_for_import_change(self, import_id: str, seen_version: int | None, timeout: float,
                               poll: float = 0.5) -> int | None:
        """Like wait_for_change, for an import and all its batches."""
        return self._wait_until_moved(lambda: self.import_version(import_id), seen_version, timeout, poll)

    # -- what the limiter has given out (for estimates) ------------------------------------

    def create_slots_in_use(self, window: float) -> tuple[int, float | None, float]:
        """(slots taken in the last `window` seconds, when the oldest of them was taken, blocked-until)."""
        with self._read() as conn:
            now = self._now(conn)
            count, oldest = conn.execute(select(func.count(), func.min(create_slots.c.taken_at))
                                         .where(create_slots.c.taken_at > now - window)).one()
            blocked = conn.execute(select(limiter.c.blocked_until).where(limiter.c.id == 1)).scalar() or 0.0
        return count, oldest, blocked

    def ping(self) -> None:
        """Read the limiter's row, proving the store answers; raise SQLAlchemyError when it does not."""
        with self._read() as conn:
            conn.execute(select(limiter.c.id).limit(1)).first()
