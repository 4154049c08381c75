"""The contract's documents as they stand: what a client reads about a batch or an import, built from
the store's records into the contract's models (bulkproc/contract).

Rows and an import's batches go into their document as dicts: pydantic-core validates the whole
document in one pass, faster than building a model for each of them here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from ..contract import BatchDocument, BatchSummary, ImportDocument, ImportSummary
from ..states import EXISTING, FINAL, RUNNING, BatchStatus, RowStatus
from ..store import Batch, Import, ImportPart, Row


def batch_document(batch: Batch, now: float) -> BatchDocument:
    """The contract's status document for a batch as it stands at `now` (wall-clock seconds)."""
    return BatchDocument(**_batch_fields(batch, now), hospitals=[_row_fields(r) for r in batch.rows])


def summary_document(batch: Batch, now: float) -> BatchSummary:
    """The listing's view of a batch: its document without rows."""
    return BatchSummary(**_batch_fields(batch, now))


def _batch_fields(batch: Batch, now: float) -> dict[str, Any]:
    status = reported_status(batch, now)
    elapsed = batch.elapsed
    if batch.run_started_at is not None and status in RUNNING:
        elapsed += max(0.0, now - batch.run_started_at)
    return {
        "batch_id": batch.id,
        "status": status,
        "total_hospitals": batch.total,
        "processed_hospitals": _processed(batch.row_counts),
        "failed_hospitals": batch.row_counts.get(RowStatus.FAILED, 0),
        "processing_time_seconds": round(elapsed, 3),
        "batch_activated": batch.activated,
        "error": batch.error,
        "created_at": _iso(batch.created_at),
        "updated_at": _iso(batch.updated_at),
    }


def _processed(counts: Mapping[str, int]) -> int:
    return sum(counts.get(s, 0) for s in EXISTING)


def _row_fields(row: Row) -> dict[str, Any]:
    """One row as the contract shows it (RowDocument)."""
    return {"row": row.row, "hospital_id": row.hospital_id, "name": row.name, "status": row.status,
            "error": row.error}


def reported_status(batch: Batch, now: float) -> str:
    """The batch's status, reading `interrupted` when its owner stopped renewing the lease."""
    if batch.status in RUNNING and (batch.lease_expires or 0) < now:
        return BatchStatus.INTERRUPTED
    return batch.status


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}Z"


# -- imports ---------------------------------------------------------------------------


def reported_import_status(imp: Import, now: float) -> str:
    """The import's status: its runner's while one holds the lease, otherwise what its batches say."""
    if imp.status in RUNNING:
        return imp.status if (imp.lease_expires or 0) >= now else BatchStatus.INTERRUPTED
    settled = settled_status(imp.parts, now)
    # Finished without its failed rows (/activate): final, unless rolled back or a batch runs on its own.
    if imp.status == BatchStatus.PARTIALLY_ACTIVATED and settled not in (BatchStatus.ROLLED_BACK,
                                                                         BatchStatus.PROCESSING):
        return BatchStatus.PARTIALLY_ACTIVATED
    return settled


def settled_status(parts: list[ImportPart], now: float) -> str:
    """An import's status read from its batches, once no runner holds it."""
    statuses = {reported_status(p.batch, now) for p in parts}
    if statuses == {BatchStatus.ROLLED_BACK}:
        return BatchStatus.ROLLED_BACK
    if statuses & RUNNING:
        return BatchStatus.PROCESSING  # a batch resumed on its own under /hospitals/bulk
    if statuses == {BatchStatus.COMPLETED}:
        return BatchStatus.COMPLETED
    if BatchStatus.PARTIALLY_ACTIVATED in statuses and statuses <= {BatchStatus.COMPLETED,
                                                                   BatchStatus.PARTIALLY_ACTIVATED}:
        return BatchStatus.PARTIALLY_ACTIVATED
    for status in (BatchStatus.INTERRUPTED, BatchStatus.CANCELLED):
        if status in statuses:
            return status
    if any(p.batch.row_counts.get(s) for p in parts for s in EXISTING):
        return BatchStatus.PARTIALLY_FAILED
    return BatchStatus.FAILED


def import_row_counts(imp: Import) -> Counter[str]:
    """How many of the import's rows are in each status, over all its batches."""
    counts: Counter[str] = Counter()
    for part in imp.parts:
        counts.update(part.batch.row_counts)
    return counts


def import_document(imp: Import, now: float, remaining: float | None) -> ImportDocument:
    """The contract's import document at `now`, with `remaining` as its estimate of the seconds left
    (the caller's; None for a final import)."""
    return ImportDocument(**_import_fields(imp, now, remaining), batches=[_part_fields(p, now) for p in imp.parts])


def import_summary(imp: Import, now: float, remaining: float | None) -> ImportSummary:
    """The listing's view of an import: its document without batches."""
    return ImportSummary(**_import_fields(imp, now, remaining))


def _import_fields(imp: Import, now: float, remaining: float | None) -> dict[str, Any]:
    status = reported_import_status(imp, now)
    elapsed = imp.elapsed
    if imp.run_started_at is not None:
        # A run whose process died counts up to its last lease renewal.
        until = now if status in RUNNING else (imp.run_seen_at or imp.run_started_at)
        elapsed += max(0.0, until - imp.run_started_at)
    counts = import_row_counts(imp)
    return {
        "import_id": imp.id,
        "status": status,
        "total_hospitals": imp.total,
        "processed_hospitals": _processed(counts),
        "failed_hospitals": counts[RowStatus.FAILED],
        "processing_time_seconds": round(elapsed, 3),
        "estimated_seconds_remaining": None if status in FINAL else remaining,
        "created_at": _iso(imp.created_at),
        "updated_at": _iso(max([imp.updated_at] + [p.batch.updated_at for p in imp.parts])),
    }


def _part_fields(part: ImportPart, now: float) -> dict[str, Any]:
    """One batch of an import as the import document lists it (ImportBatch)."""
    batch = part.batch
    return {
        "batch_id": batch.id,
        "first_row": part.first_row,
        "last_row": part.last_row,
        "status": reported_status(batch, now),
        "total_hospitals": batch.total,
        "processed_hospitals": _processed(batch.row_counts),
        "failed_hospitals": batch.row_counts.get(RowStatus.FAILED, 0),
        "batch_activated": batch.activated,
        "created_at": _iso(batch.created_at),
        "updated_at": _iso(batch.updated_at),
    }
