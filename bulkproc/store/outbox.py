"""The outbox: events announcing a batch's or an import's final state, written in the very transaction
that writes that state, and claimed for delivery one at a time under a lease and a token.

A claim is owned like a batch's run: the claimant's token is written with a lease, and the outcome
of its delivery is recorded only if the token still holds. While a claim's lease runs, no other
instance can take the event, so one delivery of an event is in flight at a time.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, case, func, insert, or_, select, update

from .batches import _BATCH, _ROWS
from .database import Database
from .records import Batch, Import, ImportPart, Row
from .schema import imports, webhook_events

PENDING, DELIVERED, GONE, GIVEN_UP = "pending", "delivered", "gone", "given_up"

# What an event says about a finished batch or import: the payload for ("batch"|"import", record, now).
Announcement = Callable[[str, Batch | Import, float], dict[str, Any]]


@dataclass(frozen=True)
class OutboxEvent:
    """One event as claimed for a delivery attempt, with the claim's token."""
    id: str
    type: str
    subject_id: str
    body: str
    created_at: float
    attempts: int
    token: str


class OutboxRecords(Database):
    """The webhook events: written with final states, claimed, and settled after each attempt."""

    _import_parts: Callable[[Connection, list[str]], dict[str, list[ImportPart]]]  # ImportRecords'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set by the runtime when webhooks are configured; None writes no events at all.
        self.announcement: Announcement | None = None
        self._listeners: list[Callable[[], None]] = []
        self._announced = threading.local()
        super().__init__(*args, **kwargs)

    def on_announce(self, wake: Callable[[], None]) -> None:
        """Call `wake` after each transaction of this process that wrote an event has committed."""
        self._listeners.append(wake)

    def _announce(self, conn: Connection, kind: str, work_id: str) -> None:
        """Write the event of the work's final state inside the caller's transaction (webhooks on only)."""
        if self.announcement is None:
            return
        now = self._now(conn)
        record = self._batch_in(conn, work_id, now) if kind == "batch" else self._import_in(conn, work_id)
        payload = self.announcement(kind, record, now)
        conn.execute(insert(webhook_events).values(
            id=f"msg_{uuid.uuid4().hex}", type=payload["type"], subject_id=work_id,
            body=json.dumps(payload, ensure_ascii=False), created_at=now, status=PENDING, attempts=0, due_at=now))
        self._announced.pending = True

    def _notify(self) -> None:
        super()._notify()
        if getattr(self._announced, "pending", False):
            self._announced.pending = False
            for wake in self._listeners:
                wake()

    def _batch_in(self, conn: Connection, batch_id: str, now: float) -> Batch:
        found = conn.execute(_BATCH, {"b_id": batch_id}).one()
        rows = [Row(*r) for r in conn.execute(_ROWS, {"b_id": batch_id})]
        return Batch(*found, rows=rows, row_counts=dict(Counter(r.status for r in rows)), read_at=now)

    def _import_in(self, conn: Connection, import_id: str) -> Import:
        found = conn.execute(select(imports).where(imports.c.id == import_id)).one()
        return Import(**found._mapping, parts=self._import_parts(conn, [import_id])[import_id])

    # -- delivery ------------------------------------------------------------------------

    @staticmethod
    def _claimable(now: float):
        return and_(webhook_events.c.status == PENDING, webhook_events.c.due_at <= now,
                    or_(webhook_events.c.claim_expires.is_(None), webhook_events.c.claim_expires < now))

    def next_event_due_in(self) -> float | None:
        """Seconds until a pending event may be claimed (0 or less: now), None when none is pending."""
        with self._read() as conn:
            now = self._now(conn)
            # An event in flight elsewhere may be claimed again when its claim's lease ends.
            claimed = webhook_events.c.claim_expires > webhook_events.c.due_at
            due = conn.execute(select(func.min(case((claimed, webhook_events.c.claim_expires),
                                                    else_=webhook_events.c.due_at)))
                               .where(webhook_events.c.status == PENDING)).scalar()
        return None if due is None else due - now

    def claim_event(self, token: str, lease_seconds: float) -> OutboxEvent | None:
        """Take the oldest due event that nobody is delivering, for `lease_seconds`, under `token`; None when none is."""
        with self._write() as conn:
            now = self._now(conn)
            found = conn.execute(select(webhook_events).where(self._claimable(now))
                                 .order_by(webhook_events.c.due_at, webhook_events.c.id).limit(1)).first()
            # The condition again in the UPDATE: of two claimants of one event, one changes a row.
            if found is None or conn.execute(update(webhook_events).where(
                    webhook_events.c.id == found.id, self._claimable(now),
            ).values(claim_token=token, claim_expires=now + lease_seconds)).rowcount != 1:
                return None
        return OutboxEvent(found.id, found.type, found.subject_id, found.body, found.created_at, found.attempts,
                           token)

    def settle_event(self, event: OutboxEvent, status: str, *, retry_in: float | None = None,
                     error: str | None = None) -> bool:
        """Record an attempt's outcome (`status`; PENDING again in `retry_in` seconds) and let the
        event go, if `event`'s claim still holds; whether it did."""
        with self._write() as conn:
            now = self._now(conn)
            values: dict[str, Any] = {"status": status, "attempts": webhook_events.c.attempts + 1,
                                      "claim_token": None, "claim_expires": None, "last_error": error}
            values.update({"due_at": now + retry_in} if status == PENDING else {"finished_at": now})
            return conn.execute(update(webhook_events).where(
                webhook_events.c.id == event.id, webhook_events.c.claim_token == event.token,
                webhook_events.c.status == PENDING).values(**values)).rowcount == 1

    def webhook_events(self) -> list[dict[str, Any]]:
        """Every event, oldest first, as stored (for operators and tests)."""
        with self._read() as conn:
            found = conn.execute(select(webhook_events).order_by(webhook_events.c.created_at,
                                                                 webhook_events.c.id)).all()
        return [dict(r._mapping) for r in found]
