"""The contract's documents: what a client reads about a batch, built from the store's records."""

from __future__ import annotations

import time
from typing import Any

from .states import EXISTING, RUNNING, BatchStatus, RowStatus
from .store import Batch, Row


def batch_document(batch: Batch, now: float, *, timestamps: bool = True) -> dict[str, Any]:
    """The contract's status document for a batch as it stands at `now` (wall-clock seconds)."""
    status = reported_status(batch, now)
    elapsed = batch.elapsed
    if batch.run_started_at is not None and status in RUNNING:
        elapsed += max(0.0, now - batch.run_started_at)
    document: dict[str, Any] = {
        "batch_id": batch.id,
        "status": status,
        "total_hospitals": batch.total,
        "processed_hospitals": sum(batch.row_counts.get(s, 0) for s in EXISTING),
        "failed_hospitals": batch.row_counts.get(RowStatus.FAILED, 0),
        "processing_time_seconds": round(elapsed, 3),
        "batch_activated": batch.activated,
        "error": batch.error,
        "hospitals": [row_document(r) for r in batch.rows],
    }
    if timestamps:
        document["created_at"] = _iso(batch.created_at)
        document["updated_at"] = _iso(batch.updated_at)
    return document


def summary_document(batch: Batch, now: float) -> dict[str, Any]:
    """The listing's view of a batch: its document without rows."""
    document = batch_document(batch, now)
    del document["hospitals"]
    return document


def row_document(row: Row) -> dict[str, Any]:
    """One row as the contract shows it."""
    return {"row": row.row, "hospital_id": row.hospital_id, "name": row.name,
            "status": row.status, "error": row.error}


def reported_status(batch: Batch, now: float) -> str:
    """The batch's status, reading `interrupted` when its owner stopped renewing the lease."""
    if batch.status in RUNNING and (batch.lease_expires or 0) < now:
        return BatchStatus.INTERRUPTED
    return batch.status


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}Z"
