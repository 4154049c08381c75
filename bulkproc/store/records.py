"""What the store hands out: immutable records of rows, batches and imports as read."""

from __future__ import annotations

from dataclasses import dataclass, field


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

