"""The job store: SQLAlchemy Core over SQLite or PostgreSQL, one module a concern."""

from __future__ import annotations

from .batches import BatchRecords
from .database import Database, engine_for
from .imports import ImportRecords
from .leases import Leases
from .outbox import OutboxEvent, OutboxRecords
from .records import Batch, Import, ImportPart, Row, Run
from .schema import limiter, metadata
from .slots import CreateSlots
from .watch import Watching

__all__ = ["Batch", "Import", "ImportPart", "OutboxEvent", "Row", "Run", "Store", "engine_for", "limiter", "metadata"]


class Store(BatchRecords, ImportRecords, Leases, CreateSlots, Watching, OutboxRecords, Database):
    """Batches, rows and imports in a SQL database; every write bumps a version and wakes watchers;
    final states write their webhook events (outbox.py)."""
