"""Webhooks: the outbox's events POSTed to the one configured URL, signed as Standard Webhooks says.

Every process with BULKPROC_WEBHOOK_URL set runs one Deliverer. It claims one due event at a time
from the store (store/outbox.py: owned under a token and a lease, so one delivery of an event is in
flight across all instances), sends it, and records the outcome only if its claim still holds. A
`2xx` ends the event, a `410` ends it for good, anything else is tried again later, backing off
from seconds to hours, until the event is three days old.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from .. import metrics
from ..contract import BatchFinished, ImportFinished
from ..errors import StoreUnavailable
from ..logs import in_batch_context
from ..store import Batch, Import, OutboxEvent, Store
from ..store.leases import new_token
from ..store.outbox import DELIVERED, GIVEN_UP, GONE, PENDING
from ..upstream.deadline import Watchdog, WatchedAdapter
from .documents import batch_document, import_document

log = logging.getLogger(__name__)

# Seconds a receiver has to answer; with the connect timeout, the most one attempt can take.
READ_TIMEOUT = 15.0
# A claim outlives any attempt (the request is cut at its connect plus read timeout in total).
CLAIM_SECONDS = 60.0


def announcement(kind: str, record: Batch | Import, now: float) -> dict[str, Any]:
    """The payload announcing a final batch or import (the contract's BatchFinished or ImportFinished):
    its type, when, and its document then."""
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    payload: BatchFinished | ImportFinished
    if kind == "batch":
        payload = BatchFinished(type="batch.finished", timestamp=stamp, data=batch_document(record, now))
    else:
        payload = ImportFinished(type="import.finished", timestamp=stamp, data=import_document(record, now, None))
    return payload.model_dump(mode="json")


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks `v1` signature: base64 HMAC-SHA256 of `id.timestamp.body`."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def secret_key(secret: str) -> bytes:
    """The key of a `whsec_<base64>` secret."""
    key = secret.removeprefix("whsec_")
    return base64.b64decode(key + "=" * (-len(key) % 4))  # padding optional, as the spec's libraries read it


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed event is tried again: `delays` after each failure (the last one repeating),
    never past `give_up_after` seconds from the event's writing, where the last try lands."""

    delays: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 43200)
    give_up_after: float = 3 * 86400

    def next_delay(self, failures: int, age: float) -> float | None:
        """Seconds until the next try after `failures` failed ones of an event `age` seconds old; None: give up."""
        if age >= self.give_up_after:
            return None
        return min(self.delays[min(failures, len(self.delays)) - 1], self.give_up_after - age)


class Deliverer:
    """Delivers the store's due events to `url`, one at a time, on a thread of its own until closed."""

    def __init__(self, store: Store, url: str, secret: str, *, stopping: threading.Event | None = None,
                 connect_timeout: float = 5.0, read_timeout: float = READ_TIMEOUT,
                 policy: RetryPolicy | None = None, poll: float = 2.0, claim_seconds: float = CLAIM_SECONDS,
                 clock: Callable[[], float] = time.time, start: bool = True) -> None:
        self.store, self.url, self._key = store, url, secret_key(secret)
        self.timeout = (connect_timeout, read_timeout)
        self.policy, self.poll, self.claim_seconds, self._clock = policy or RetryPolicy(), poll, claim_seconds, clock
        self._stopping = stopping or threading.Event()
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._watchdog = Watchdog()
        self._http = requests.Session()
        self._http.mount("http://", WatchedAdapter())
        self._http.mount("https://", WatchedAdapter())
        store.on_announce(self._wake.set)
        self._thread = threading.Thread(target=self._loop, name="bulkproc-webhooks", daemon=True)
        if start:
            self._thread.start()

    def close(self) -> None:
        """Stop delivering (an attempt in flight ends within its timeouts) and release the connections."""
        self._closing.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self._http.close()
        self._watchdog.close()

    def _stopped(self) -> bool:
        return self._closing.is_set() or self._stopping.is_set()

    def _loop(self) -> None:
        while not self._stopped():
            self._wake.clear()  # before looking: an event written meanwhile wakes the wait below
            try:
                pause = self.deliver_due()
            except StoreUnavailable as exc:
                log.warning("webhook events cannot be read: the job store is unavailable (%s)", exc.reason)
                pause = self.poll
            except Exception:  # the thread's boundary: log it and go on
                log.exception("webhook delivery stopped by an unexpected error")
                pause = self.poll
            self._wake.wait(pause)

    def deliver_due(self) -> float:
        """Deliver every event due now, one at a time; the seconds until one may be due again."""
        while not self._stopped():
            due_in = self.store.next_event_due_in()
            if due_in is None or due_in > 0:
                return self.poll if due_in is None else min(due_in, self.poll)
            if not self.deliver_one():
                return min(0.05, self.poll)  # another instance took it first: look again soon
        return 0.0

    def deliver_one(self) -> bool:
        """Claim one due event and try to deliver it; False when none could be claimed."""
        event = self.store.claim_event(new_token(), self.claim_seconds)
        if event is None:
            return False
        in_batch_context(event.subject_id, self._attempt)(event)
        return True

    def _attempt(self, event: OutboxEvent) -> None:
        """Send the event once and record what came of it (nothing, when the claim was lost meanwhile)."""
        code, error = self._send(event)
        if code is not None and 200 <= code < 300:
            status, result, retry_in = DELIVERED, "delivered", None
        elif code == 410:
            status, result, retry_in = GONE, "gone", None
        else:
            retry_in = self.policy.next_delay(event.attempts + 1, self.store.now() - event.created_at)
            status, result = (PENDING, "failed") if retry_in is not None else (GIVEN_UP, "given_up")
        if not self.store.settle_event(event, status, retry_in=retry_in, error=error):
            log.warning("webhook %s: another delivery took the event over meanwhile; its outcome stands", event.id)
            return
        metrics.webhook_deliveries.labels(result).inc()
        self._log(event, result, error, retry_in)

    def _send(self, event: OutboxEvent) -> tuple[int | None, str | None]:
        """POST the event to the configured URL (never anywhere else: no redirect is followed); its
        status code, or None, and what went wrong."""
        body = event.body.encode()
        timestamp = int(self._clock())
        headers = {"Content-Type": "application/json", "User-Agent": "bulkproc-webhooks",
                   "webhook-id": event.id, "webhook-timestamp": str(timestamp),
                   "webhook-signature": signature(self._key, event.id, timestamp, body)}
        try:
            with self._watchdog.limit(sum(self.timeout)):
                response = self._http.post(self.url, data=body, headers=headers, timeout=self.timeout,
                                           allow_redirects=False, stream=True)
                response.close()
        except requests.RequestException as exc:
            return None, f"no answer from the receiver ({type(exc).__name__})"
        code = response.status_code
        return code, None if 200 <= code < 300 else f"the receiver answered {code}"

    def _log(self, event: OutboxEvent, result: str, error: str | None, retry_in: float | None) -> None:
        what = f"webhook {event.id} ({event.type}), try {event.attempts + 1}"
        if result == "delivered":
            log.info("%s: delivered", what)
        elif result == "gone":
            log.warning("%s: the receiver answered 410 Gone; it is not sent again", what)
        elif result == "given_up":
            log.error("%s: %s; given up after %d tries over %.0f s", what, error, event.attempts + 1,
                      self.policy.give_up_after)
        else:
            log.warning("%s: %s; tried again in %.0f s", what, error, retry_in)
