"""Leases: which process is running a batch, until when."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import case, func, update

from ..states import RUNNING, BatchStatus
from .database import Database
from .schema import batches


class Leases(Database):
    """Who processes a batch: taking and renewing its lease."""

    def take_lease(self, batch_id: str, owner: str, until: float, from_statuses: Iterable[str]) -> bool:
        """Atomically make `owner` the batch's processor, if it is in one of `from_statuses`
        or its previous owner's lease has lapsed; return whether it did."""
        with self._write() as conn:
            now = self._now(conn)
            lapsed = batches.c.status.in_([str(s) for s in RUNNING]) & (batches.c.lease_expires < now)
            taken = conn.execute(update(batches).where(
                batches.c.id == batch_id,
                batches.c.status.in_([str(s) for s in from_statuses]) | lapsed,
            ).values(lease_owner=owner, lease_expires=until, status=BatchStatus.QUEUED,
                     version=batches.c.version + 1, updated_at=now)).rowcount
        self._notify()
        return taken == 1


    def renew_lease(self, batch_id: str, owner: str, until: float, now: float | None = None) -> bool:
        """Extend `owner`'s lease, and with `now` bank the run's time so far (a kill then loses at
        most one renewal's worth); False when the batch is no longer its own."""
        values: dict = {"lease_expires": until}
        if now is not None:
            values["elapsed"] = batches.c.elapsed + func.coalesce(now - batches.c.run_started_at, 0.0)
            values["run_started_at"] = case((batches.c.run_started_at.is_(None), None), else_=now)
        with self._write() as conn:
            return conn.execute(update(batches).where(
                batches.c.id == batch_id, batches.c.lease_owner == owner,
            ).values(**values)).rowcount == 1
