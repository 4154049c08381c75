"""Leases and run tokens: which process renews a batch or an import, and which run owns it.

A lease says a process is alive (`lease_owner`, renewed by its heartbeat until `lease_expires`);
a run token says which run owns the work (`run_token`, written when the work is accepted and anew
by every take-over). Every write of a run is conditional on its token, so a run that lost its
work changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import Connection, case, func, select, update

from ..states import RUNNING, BatchStatus
from .database import Database
from .records import Run
from .schema import batches, imports


def new_token() -> str:
    """A token no other run has: the proof every write of one run carries."""
    return str(uuid.uuid4())


def banked(now: float) -> dict:
    """Column values that add the running run's time up to `now` to the batch's, restarting its clock."""
    return {"elapsed": batches.c.elapsed + func.coalesce(now - batches.c.run_started_at, 0.0),
            "run_started_at": case((batches.c.run_started_at.is_(None), None), else_=now)}


class Leases(Database):
    """Taking a batch for a new run, renewing a process's leases, and checking a run's hold."""

    def take_lease(self, batch_id: str, owner: str, until: float, from_statuses: Iterable[str],
                   token: str) -> bool:
        """Atomically make `owner`'s run `token` the batch's, if it is in one of `from_statuses`
        or its previous owner's lease has lapsed (never once rolled back); return whether it did."""
        with self._write() as conn:
            now = self._now(conn)
            lapsed = batches.c.status.in_([str(s) for s in RUNNING]) & (batches.c.lease_expires < now)
            taken = conn.execute(update(batches).where(
                batches.c.id == batch_id, batches.c.status != BatchStatus.ROLLED_BACK,
                batches.c.status.in_([str(s) for s in from_statuses]) | lapsed,
            ).values(lease_owner=owner, lease_expires=until, run_token=token, status=BatchStatus.QUEUED,
                     # The dead run's time was banked up to its last write or renewal.
                     run_started_at=None, version=batches.c.version + 1, updated_at=now)).rowcount
        self._notify()
        return taken == 1


    def renew_leases(self, owner: str, lease_seconds: float, runs: list[Run]) -> list[Run]:
        """Extend, in one transaction ahead of this process's other writes, every lease `owner`
        holds under the tokens of `runs` (queued work included, and an import's batches under the
        import's token) to `lease_seconds` from the moment it is written, banking running batches'
        time then; return the runs whose work another run owns now."""
        tokens = sorted({r.token for r in runs})
        if not tokens:
            return []
        with self._write(urgent=True) as conn:
            # Read inside the transaction: however long the renewal waited for its turn, the
            # lease it writes is a whole one.
            now = self._now(conn)
            for table in (batches, imports):
                seen = {"run_seen_at": now} if table is imports else banked(now)
                conn.execute(update(table).where(
                    table.c.lease_owner == owner, table.c.run_token.in_(tokens),
                    table.c.status.in_([str(s) for s in RUNNING])).values(lease_expires=now + lease_seconds, **seen))
            owners = self._tokens(conn, runs)
        return [r for r in runs if owners.get((r.kind, r.id)) != r.token]


    def holds(self, run: Run) -> bool:
        """Whether `run` still owns its work (read before something is destroyed upstream)."""
        with self._read() as conn:
            return self._tokens(conn, [run]).get((run.kind, run.id)) == run.token


    @staticmethod
    def _tokens(conn: Connection, runs: list[Run]) -> dict[tuple[str, str], str | None]:
        """The token each run's work carries now, by (kind, id)."""
        found: dict[tuple[str, str], str | None] = {}
        for kind, table in (("batch", batches), ("import", imports)):
            ids = sorted({r.id for r in runs if r.kind == kind})
            if ids:
                for work_id, token in conn.execute(select(table.c.id, table.c.run_token).where(table.c.id.in_(ids))):
                    found[(kind, work_id)] = token
        return found
