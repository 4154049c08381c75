"""What the store hands out: immutable records of rows, batches and imports as read."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..errors import RunLost


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
    run_token: str | None
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
    run_token: str | None
    idempotency_key: str | None
    file_sha256: str | None
    parts: list[ImportPart] = field(default_factory=list)



@dataclass(frozen=True, eq=False)
class Run:
    """One run's hold on a batch or an import: the token every write of the run must show."""
    id: str
    token: str
    kind: str = "batch"
    # Set when the run lost its work (a fenced write failed, or the heartbeat saw another token).
    lost: threading.Event = field(default_factory=threading.Event, repr=False)
    # Set when the run must stop waiting: it lost its work, or the service is stopping.
    halt: threading.Event = field(default_factory=threading.Event, repr=False)

    def lose(self) -> None:
        """Mark the run as having lost its work, waking every wait of it."""
        self.lost.set()
        self.halt.set()

    def check(self) -> None:
        """Raise RunLost when the run has lost its work."""
        if self.lost.is_set():
            raise RunLost(self.id)

    def holds(self, held: bool) -> None:
        """Take a fenced write's answer: RunLost (and the run stopped) when it did not hold."""
        if not held:
            self.lose()
            raise RunLost(self.id)

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds`; True when the service is stopping; RunLost when the run lost its work."""
        halted = self.halt.wait(max(0.0, seconds))
        self.check()
        return halted
