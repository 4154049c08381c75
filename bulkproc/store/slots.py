"""The create-rate slots every process sharing the store takes before a creation."""

from __future__ import annotations

from sqlalchemy import func, insert, select, update

from .database import Database
from .schema import create_slots, limiter


class CreateSlots(Database):
    """The shared create-rate limiter's slots and back-off."""

    def take_create_slots(self, limit: int, window: float, wanted: int = 1) -> tuple[int, float]:
        """Take up to `wanted` creation slots, keeping at most `limit` in any `window` seconds and
        none while a back-off is in force; return (slots taken, seconds until another frees)."""
        with self._write() as conn:
            # The lock row serialises limiter updates on PostgreSQL; SQLite's BEGIN IMMEDIATE already does.
            blocked_until = conn.execute(select(limiter.c.blocked_until).where(limiter.c.id == 1)
                                         .with_for_update()).scalar_one()
            # Read once the lock is held: a time from before a wait for it would date the slot too early.
            now = self._now(conn)
            if blocked_until > now:
                return 0, blocked_until - now
            conn.execute(create_slots.delete().where(create_slots.c.taken_at <= now - window))
            count, oldest = conn.execute(select(func.count(), func.min(create_slots.c.taken_at))).one()
            taken = max(0, min(wanted, limit - count))
            if taken:
                conn.execute(insert(create_slots), [{"taken_at": now}] * taken)
        if taken == wanted:
            return taken, 0.0
        return taken, max((now if oldest is None else oldest) + window - now, 0.001)


    def return_create_slot(self) -> None:
        """Give back the newest creation slot (its request never reached the upstream)."""
        with self._write() as conn:
            newest = conn.execute(select(create_slots.c.id).order_by(create_slots.c.taken_at.desc(),
                                                                     create_slots.c.id.desc()).limit(1)).scalar()
            if newest is not None:
                conn.execute(create_slots.delete().where(create_slots.c.id == newest))


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
