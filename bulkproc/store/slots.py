"""The rate slots every process sharing the store takes before a request: creations, and the
upstream's other calls (reads), each kind in its own window."""

from __future__ import annotations

from sqlalchemy import Table, func, insert, select, update

from .database import Database
from .schema import create_slots, limiter, read_slots

SLOTS: dict[str, Table] = {"create": create_slots, "read": read_slots}


class CreateSlots(Database):
    """The shared rate limiters' slots, and the creations' back-off."""

    def take_slots(self, kind: str, limit: int, window: float, wanted: int = 1) -> tuple[int, float]:
        """Take up to `wanted` slots of `kind` ("create" or "read"), keeping at most `limit` in any
        `window` seconds, and no creation while a back-off is in force; return (slots taken,
        seconds until another frees)."""
        slots = SLOTS[kind]
        with self._write() as conn:
            # The lock row serialises limiter updates on PostgreSQL; SQLite's BEGIN IMMEDIATE already does.
            blocked_until = conn.execute(select(limiter.c.blocked_until).where(limiter.c.id == 1)
                                         .with_for_update()).scalar_one()
            # Read once the lock is held: a time from before a wait for it would date the slot too early.
            now = self._now(conn)
            if kind == "create" and blocked_until > now:
                return 0, blocked_until - now
            conn.execute(slots.delete().where(slots.c.taken_at <= now - window))
            count, oldest = conn.execute(select(func.count(), func.min(slots.c.taken_at))).one()
            taken = max(0, min(wanted, limit - count))
            if taken:
                conn.execute(insert(slots), [{"taken_at": now}] * taken)
        if taken == wanted:
            return taken, 0.0
        return taken, max((now if oldest is None else oldest) + window - now, 0.001)

    def take_create_slots(self, limit: int, window: float, wanted: int = 1) -> tuple[int, float]:
        """take_slots for creations."""
        return self.take_slots("create", limit, window, wanted)

    def return_slot(self, kind: str = "create") -> None:
        """Give back the newest slot of `kind` (its request never reached the upstream)."""
        slots = SLOTS[kind]
        with self._write() as conn:
            newest = conn.execute(select(slots.c.id).order_by(slots.c.taken_at.desc(), slots.c.id.desc())
                                  .limit(1)).scalar()
            if newest is not None:
                conn.execute(slots.delete().where(slots.c.id == newest))

    def return_create_slot(self) -> None:
        """Give back the newest creation slot (its request never reached the upstream)."""
        self.return_slot("create")

    def block_creates(self, until: float) -> None:
        """Hold every creation back until `until` (wall-clock seconds)."""
        with self._write() as conn:
            conn.execute(update(limiter).where(limiter.c.id == 1, limiter.c.blocked_until < until)
                         .values(blocked_until=until))

    def create_slots_in_use(self, window: float) -> tuple[int, float | None, float]:
        """(slots taken in the last `window` seconds, when the oldest of them was taken, blocked-until)."""
        with self._read() as conn:
            now = self._now(conn)
            count, oldest = conn.execute(select(func.count(), func.min(create_slots.c.taken_at))
                                         .where(create_slots.c.taken_at > now - window)).one()
            blocked = conn.execute(select(limiter.c.blocked_until).where(limiter.c.id == 1)).scalar() or 0.0
        return count, oldest, blocked
