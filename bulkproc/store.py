"""The job store: SQLAlchemy Core tables for batches and rows, and small functions over them."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from sqlalchemy import (
    Boolean, Column, Connection, Engine, Float, ForeignKey, Index, Integer, MetaData, String,
    Table, Text, create_engine, event, func, insert, select, text, update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from .states import RUNNING, BatchStatus, RowStatus

metadata = MetaData()

batches = Table(
    "batches", metadata,
    Column("id", String(36), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("total", Integer, nullable=False),
    Column("activated", Boolean, nullable=False, default=False),
    Column("error", Text),
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
    Column("error", Text),
    # When the row's last creation request was sent (wall-clock seconds): a resume gives it time to land.
    Column("attempted_at", Float),
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


class IdempotencyMismatch(Exception):
    """The idempotency key was used before with a different file."""


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
    engine = create_engine(parsed, pool_size=10, max_overflow=30,
                           connect_args={"timeout": 30, "check_same_thread": False})

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


class Store:
    """Batches and rows in a SQL database; every write bumps the batch's version and wakes watchers."""

    def __init__(self, url: str, clock=time.time) -> None:
        self.engine = engine_for(url)
        self._clock = clock
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

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # SQLite has one writer at a time, and a waiting writer polls on the busy handler's
        # sleeps (up to 100 ms each). Queueing this process's writers on a lock hands the file
        # over at once; other processes still meet the busy timeout.
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(readonly=True) as conn:
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
        now = self._clock()
        try:
            with self._write() as conn:
                conn.execute(insert(batches).values(
                    id=batch_id, status=BatchStatus.QUEUED, total=len(rows), activated=False,
                    version=0, created_at=now, updated_at=now, elapsed=0.0, lease_owner=owner,
                    lease_expires=lease_until, idempotency_key=idempotency_key, file_sha256=file_sha256))
                conn.execute(insert(batch_rows), [
                    {"batch_id": batch_id, "row": r.row, "name": r.name, "address": r.address,
                     "phone": r.phone, "status": RowStatus.PENDING} for r in rows])
        except IntegrityError:
            if idempotency_key is None:
                raise
            earlier = self.find_by_idempotency_key(idempotency_key)
            if earlier is None:
                raise
            if earlier.file_sha256 != file_sha256:
                raise IdempotencyMismatch(idempotency_key) from None
            return earlier.id, False
        self._notify()
        return batch_id, True

    def find_by_idempotency_key(self, key: str) -> Batch | None:
        with self._read() as conn:
            found = conn.execute(select(batches).where(batches.c.idempotency_key == key)).first()
        return Batch(**found._mapping) if found else None

    def load(self, batch_id: str) -> Batch | None:
        """The batch with its rows in CSV order, or None."""
        with self._read() as conn:
            found = conn.execute(select(batches).where(batches.c.id == batch_id)).first()
            if found is None:
                return None
            rows = conn.execute(select(batch_rows).where(batch_rows.c.batch_id == batch_id)
                                .order_by(batch_rows.c.row)).all()
        loaded = [Row(**{k: v for k, v in r._mapping.items() if k != "batch_id"}) for r in rows]
        return Batch(**found._mapping, rows=loaded, row_counts=dict(Counter(r.status for r in loaded)))

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
        return [Batch(**b._mapping, row_counts=counts[b.id]) for b in found]

    def version(self, batch_id: str) -> int | None:
        with self._read() as conn:
            return conn.execute(select(batches.c.version).where(batches.c.id == batch_id)).scalar()

    def update_batch(self, batch_id: str, **values) -> None:
        """Change the batch's columns (status, activated, error, elapsed, run_started_at...)."""
        with self._write() as conn:
            self._touch(conn, batch_id, **values)
        self._notify()

    def update_row(self, batch_id: str, row: int, **values) -> None:
        """Change one row's columns (status, hospital_id, error, attempted_at) and bump the batch's version."""
        self.update_rows(batch_id, [row], **values)

    def update_rows(self, batch_id: str, rows: Iterable[int], *, batch: dict | None = None, **values) -> None:
        """Change several rows, and the batch's `batch` columns with them, as one transition."""
        with self._write() as conn:
            conn.execute(update(batch_rows).where(batch_rows.c.batch_id == batch_id,
                                                  batch_rows.c.row.in_(list(rows))).values(**values))
            self._touch(conn, batch_id, **(batch or {}))
        self._notify()

    def _touch(self, conn: Connection, batch_id: str, **values) -> None:
        conn.execute(update(batches).where(batches.c.id == batch_id).values(
            version=batches.c.version + 1, updated_at=self._clock(), **values))

    # -- leases --------------------------------------------------------------------------

    def take_lease(self, batch_id: str, owner: str, until: float, from_statuses: Iterable[str]) -> bool:
        """Atomically make `owner` the batch's processor, if it is in one of `from_statuses`
        or its previous owner's lease has lapsed; return whether it did."""
        now = self._clock()
        lapsed = batches.c.status.in_([str(s) for s in RUNNING]) & (batches.c.lease_expires < now)
        with self._write() as conn:
            taken = conn.execute(update(batches).where(
                batches.c.id == batch_id,
                batches.c.status.in_([str(s) for s in from_statuses]) | lapsed,
            ).values(lease_owner=owner, lease_expires=until, status=BatchStatus.QUEUED,
                     version=batches.c.version + 1, updated_at=now)).rowcount
        self._notify()
        return taken == 1

    def renew_lease(self, batch_id: str, owner: str, until: float) -> bool:
        """Extend `owner`'s lease; False when the batch is no longer its own."""
        with self._write() as conn:
            return conn.execute(update(batches).where(
                batches.c.id == batch_id, batches.c.lease_owner == owner,
            ).values(lease_expires=until)).rowcount == 1

    # -- the create-rate limiter ---------------------------------------------------------

    def take_create_slots(self, limit: int, window: float, wanted: int = 1) -> tuple[int, float]:
        """Take up to `wanted` creation slots, keeping at most `limit` in any `window` seconds and
        none while a back-off is in force; return (slots taken, seconds until another frees)."""
        now = self._clock()
        with self._write() as conn:
            # The lock row serialises limiter updates on PostgreSQL; SQLite's BEGIN IMMEDIATE already does.
            blocked_until = conn.execute(select(limiter.c.blocked_until).where(limiter.c.id == 1)
                                         .with_for_update()).scalar_one()
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

    def block_creates(self, until: float) -> None:
        """Hold every creation back until `until` (wall-clock seconds)."""
        with self._write() as conn:
            conn.execute(update(limiter).where(limiter.c.id == 1, limiter.c.blocked_until < until)
                         .values(blocked_until=until))

    # -- watching ------------------------------------------------------------------------

    def wait_for_change(self, batch_id: str, seen_version: int, timeout: float, poll: float = 0.5) -> int | None:
        """Wait up to `timeout` seconds for the batch's version to pass `seen_version`; return the
        version then (None for an unknown batch). Holds no database connection while waiting."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.version(batch_id)
            remaining = deadline - time.monotonic()
            if current is None or current != seen_version or remaining <= 0:
                return current
            # Changes made in this process wake us at once; other workers' within `poll` seconds.
            with self._changed:
                self._changed.wait(min(poll, remaining))

    def ping(self) -> None:
        """Read the limiter's row, proving the store answers; raise SQLAlchemyError when it does not."""
        with self._read() as conn:
            conn.execute(select(limiter.c.id).limit(1)).first()
