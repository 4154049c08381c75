"""The status names of the contract, written once."""

from __future__ import annotations

from enum import StrEnum


class BatchStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    ACTIVATING = "activating"
    COMPLETED = "completed"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    ROLLED_BACK = "rolled_back"
    # A batch of a cancelled import that has rows the cancel stopped before they started.
    CANCELLED = "cancelled"


class RowStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    CREATED = "created"
    CREATED_AND_ACTIVATED = "created_and_activated"
    FAILED = "failed"
    DELETED = "deleted"
    # A row of a cancelled import that never started; a resume creates it.
    CANCELLED = "cancelled"


# A batch in one of these states is owned by a live process, as long as its lease holds.
RUNNING = frozenset({BatchStatus.QUEUED, BatchStatus.PROCESSING, BatchStatus.ACTIVATING})
# States a batch can never leave by processing: nothing more will happen to it.
FINAL = frozenset({BatchStatus.COMPLETED, BatchStatus.PARTIALLY_FAILED, BatchStatus.FAILED,
                   BatchStatus.INTERRUPTED, BatchStatus.ROLLED_BACK, BatchStatus.CANCELLED})
RESUMABLE = frozenset({BatchStatus.PARTIALLY_FAILED, BatchStatus.FAILED, BatchStatus.INTERRUPTED,
                       BatchStatus.CANCELLED})
EXISTING = frozenset({RowStatus.CREATED, RowStatus.CREATED_AND_ACTIVATED})
