"""The job store's tables: batches and their rows, imports and their batches, the rate slots."""

from __future__ import annotations

from sqlalchemy import (Boolean, Column, Connection, Float, ForeignKey, Index, Integer, MetaData, String, Table,
                        Text, inspect, text)
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class Message(TypeDecorator):
    """Text from elsewhere (the directory's error messages): PostgreSQL refuses NUL, so it becomes U+FFFD."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: object) -> str | None:
        return None if value is None else value.replace("\x00", "\ufffd")


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
    # The owning run's token: every write of a run is conditional on it (leases.py).
    Column("run_token", String(36)),
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
    Column("run_token", String(36)),
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



# The shared rate limiters: one lock row (with the creations' back-off), and the requests of the
# current window, creations and the other calls (reads) each in a table of their own.
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


# A table of its own, rather than a kind column, so that a store made before it gains it at start.
read_slots = Table(
    "read_slots", metadata,
    Column("id", Integer, primary_key=True),
    Column("taken_at", Float, nullable=False, index=True),
)

# The outbox (outbox.py): each event announcing a final state, written in the transaction that writes
# that state, until the webhook's receiver took it (or it was given up). A table of its own, so a
# store made before it gains it at start.
webhook_events = Table(
    "webhook_events", metadata,
    Column("id", String(40), primary_key=True),  # the webhook-id, the same on every try
    Column("type", String(20), nullable=False),
    Column("subject_id", String(36), nullable=False),
    Column("body", Text, nullable=False),  # the exact bytes signed and sent, as UTF-8 text
    Column("created_at", Float, nullable=False),
    Column("status", String(12), nullable=False),  # pending, delivered, gone (410), given_up
    Column("attempts", Integer, nullable=False, default=0),
    Column("due_at", Float, nullable=False),
    # The delivering run's claim, fenced like a batch's run token: one delivery in flight at a time.
    Column("claim_token", String(36)),
    Column("claim_expires", Float),
    Column("last_error", Message),
    Column("finished_at", Float),
    Index("ix_webhook_events_due", "status", "due_at"),
)

# Columns added after the first release: a store made by an earlier version gains them at start.
_ADDED = ((batches, "run_token"), (imports, "run_token"))


def add_missing_columns(conn: Connection) -> None:
    """Add the columns of _ADDED that the database's tables lack (NULL in existing rows)."""
    for table, name in _ADDED:
        present = {c["name"] for c in inspect(conn).get_columns(table.name)}
        if name not in present:
            column = table.c[name]
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN {name} {kind}'))
