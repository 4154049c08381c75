"""The database under the job store: engines made safe for SQLite and PostgreSQL, its failures
sorted, its clock, and the read and write transactions every part of the store uses."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy import Connection, Engine, create_engine, event, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, InterfaceError, InternalError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .. import metrics
from ..errors import StoreRefusedValue, StoreUnavailable
from .schema import add_missing_columns, limiter, metadata

# SQLite failures after which a connection is no use: one opened while the file was read-only
# stays read-only after it is writable again, so the pool is emptied and connections made afresh.
_BROKEN_SQLITE = ("SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_FULL", "SQLITE_CORRUPT",
                  "SQLITE_NOTADB")

# Failures of the store itself rather than of a statement: worth trying again later.
_UNAVAILABLE = (OperationalError, InterfaceError, InternalError, PoolTimeout, sqlite3.OperationalError)

# Each SQLite connection's page cache, in KiB (SQLite's default is 2 MiB): a pool of them grew with
# the file, up to 2 MiB each, so the worker's memory grew with the rows stored. In WAL mode a
# connection's cache is dropped whenever another one has written since, so a busy store gains
# little from a larger one.
SQLITE_CACHE_KIB = 256


# PostgreSQL's own clock, read inside the transaction that compares with it: every instance sharing
# the database then measures leases and rate windows on one clock, whatever its host's says.
DATABASE_NOW = text("SELECT extract(epoch from clock_timestamp())::float8")



class WriteQueue:
    """This process's writers to SQLite, one at a time, and those marked urgent ahead of the rest.

    A lease renewal waiting behind forty busy runs' writes (a plain lock is not even fair) could
    let the process's leases lapse while it lives; the heartbeat's renewals go first instead.
    """

    def __init__(self) -> None:
        lock = threading.Lock()
        # Each release wakes one writer, an urgent one when any waits: not every waiting thread.
        self._turn, self._urgent_turn = threading.Condition(lock), threading.Condition(lock)
        self._held = False
        self._urgent_waiting = 0
        self.waiting = 0  # writers waiting for their turn

    @contextmanager
    def hold(self, urgent: bool = False) -> Iterator[None]:
        with self._turn:
            self._urgent_waiting += urgent
            self.waiting += 1
            try:
                while self._held or (not urgent and self._urgent_waiting):
                    (self._urgent_turn if urgent else self._turn).wait()
            finally:
                self._urgent_waiting -= urgent
                self.waiting -= 1
            self._held = True
        try:
            yield
        finally:
            with self._turn:
                self._held = False
                (self._urgent_turn if self._urgent_waiting else self._turn).notify()


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
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
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
        metrics.store_errors.inc()
        raise StoreUnavailable(_reason(exc)) from exc
    except DataError as exc:
        raise StoreRefusedValue("The job store cannot keep a value of this request (such as a NUL "
                                "character); remove it and send the request again.") from exc


def _reason(exc: BaseException) -> str:
    """The driver's own words (for the log), without SQLAlchemy's statement and parameters."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Database:
    """A SQL database with one clock: every part of the store reads and writes through it.

    Its time (`now`) is the database's on PostgreSQL, which several hosts share, and `clock` (the
    host's) on SQLite, which one host has to itself; `database_clock=False` uses `clock` everywhere.
    """

    def __init__(self, url: str, clock: Callable[[], float] = time.time, *, database_clock: bool = True) -> None:
        self.engine = engine_for(url)
        self._clock = clock
        self._database_clock = database_clock and self.engine.dialect.name == "postgresql"
        self._changed = threading.Condition()
        self._writers = WriteQueue() if self.engine.dialect.name == "sqlite" else None
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
            add_missing_columns(conn)
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
    def _write(self, *, urgent: bool = False) -> Iterator[Connection]:
        # SQLite has one writer at a time, and a waiting writer polls on the busy handler's
        # sleeps (up to 100 ms each). Queueing this process's writers hands the file over at
        # once, urgent ones first; other processes still meet the busy timeout.
        turn = self._writers.hold(urgent) if self._writers else nullcontext()
        with _store_failures(), turn, self.engine.begin() as conn:
            yield conn


    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with _store_failures(), self.engine.connect().execution_options(readonly=True) as conn:
            with conn.begin():
                yield conn


    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()


    def ping(self) -> None:
        """Read the limiter's row, proving the store answers; raise SQLAlchemyError when it does not."""
        with self._read() as conn:
            conn.execute(select(limiter.c.id).limit(1)).first()


    class _Unchanged(Exception):
        """Rolls back a transition whose preconditions no longer hold."""
