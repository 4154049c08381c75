"""The status names of the contract, written once."""

from __future__ import annotations

from enum import StrEnum


class BatchStatus(StrEnum):
    """A batch's status."""

    QUEUED = "queued"
    PROCESSING = "processing"
    ACTIVATING = "activating"
    COMPLETED = "completed"
    PARTIALLY_FAILED = "partially_failed"
    # Finished without its failed rows (/activate): the others are active; final.
    PARTIALLY_ACTIVATED = "partially_activated"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    ROLLED_BACK = "rolled_back"
    # A batch of a cancelled import that has rows the cancel stopped before they started.
    CANCELLED = "cancelled"


class RowStatus(StrEnum):
    """A row's status."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    CREATED = "created"
    CREATED_AND_ACTIVATED = "created_and_activated"
    # With existing=skip: an active hospital of the directory already holds it; never created here.
    ALREADY_IN_DIRECTORY = "already_in_directory"
    FAILED = "failed"
    DELETED = "deleted"
    # A row of a cancelled import that never started; a resume creates it.
    CANCELLED = "cancelled"


class ImportStatus(StrEnum):
    """An import's status: its runner's while it runs, then what its batches say."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    PARTIALLY_FAILED = "partially_failed"
    PARTIALLY_ACTIVATED = "partially_activated"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    ROLLED_BACK = "rolled_back"


# A batch in one of these states is owned by a live process, as long as its lease holds.
RUNNING = frozenset({BatchStatus.QUEUED, BatchStatus.PROCESSING, BatchStatus.ACTIVATING})
# States a batch can never leave by processing: nothing more will happen to it.
FINAL = frozenset({BatchStatus.COMPLETED, BatchStatus.PARTIALLY_FAILED, BatchStatus.PARTIALLY_ACTIVATED,
                   BatchStatus.FAILED, BatchStatus.INTERRUPTED, BatchStatus.ROLLED_BACK, BatchStatus.CANCELLED})
RESUMABLE = frozenset({BatchStatus.PARTIALLY_FAILED, BatchStatus.FAILED, BatchStatus.INTERRUPTED,
                       BatchStatus.CANCELLED})
# Batches that /activate can finish without their failed rows (a cancelled import's too).
ACTIVATABLE = frozenset({BatchStatus.PARTIALLY_FAILED, BatchStatus.INTERRUPTED, BatchStatus.CANCELLED})
# Rows whose hospital this batch created upstream (it is in the batch's listing).
IN_BATCH = frozenset({RowStatus.CREATED, RowStatus.CREATED_AND_ACTIVATED})
# Rows that exist upstream, counted as processed: the batch's own, and those already in the directory.
EXISTING = IN_BATCH | {RowStatus.ALREADY_IN_DIRECTORY}
