"""Event streams: each holds one of the process's few stream slots until it ends or its client goes away.

An open stream keeps a server thread for as long as its batch runs, so a process serves at
most `BULKPROC_MAX_STREAMS` of them and refuses more with 503, keeping threads for everything else.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from flask import Response, current_app

from ..contract import BatchDocument, ImportDocument
from ..errors import StoreUnavailable, TooManyStreams
from ..logs import in_work_context

__all__ = ["StreamSlots", "document_events", "event_response"]

log = logging.getLogger(__name__)

Document = TypeVar("Document", BatchDocument, ImportDocument)


class StreamSlots:
    """At most `limit` event streams open at once in this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open = 0
        self._lock = threading.Lock()

    @property
    def open(self) -> int:
        """How many streams hold a slot now."""
        return self._open

    def hold(self, events: Iterator[str]) -> Iterator[str]:
        """`events`, holding a slot until they end or are closed; TooManyStreams when every slot is taken."""
        with self._lock:
            if self._open >= self.limit:
                raise TooManyStreams(f"This server already serves its {self.limit} event streams; "
                                     "read the document with GET instead, or try the stream again later.")
            self._open += 1
        return _Held(events, self._release)

    def _release(self) -> None:
        with self._lock:
            self._open -= 1


class _Held:
    """An iterator over `events` that calls `release` once, when they end or the server closes it."""

    def __init__(self, events: Iterator[str], release: Callable[[], None]) -> None:
        self._events = events
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> _Held:
        return self

    def __next__(self) -> str:
        try:
            return next(self._events)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        # The WSGI server calls this when the stream ends and when writing to a client that went
        # away fails; a generator closed before it started runs no `finally`, so the slot is
        # released here rather than inside the generator.
        release, self._release = self._release, None
        if release is None:
            return
        try:
            close = getattr(self._events, "close", None)
            if close is not None:
                close()
        finally:
            release()


def event_response(events: Iterator[str]) -> Response:
    """A text/event-stream response of `events` holding one of this process's stream slots (TooManyStreams)."""
    slots: StreamSlots = current_app.extensions["bulkproc.streams"]
    return Response(slots.hold(events), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def document_events(documents: Iterable[Document | None], key: Callable[[Document], object],
                    kind: str, subject: str) -> Iterator[str]:
    """Server-sent events of `subject` (the id of a batch or an import, as `kind` says): one per
    document whose `key` moved, its JSON as the event's data; a comment for each None (a quiet
    spell), and the end when the documents end or the store fails."""
    yield "retry: 2000\n\n"
    sent = None
    try:
        for document in documents:
            if document is None:
                yield ": keep-alive\n\n"
            elif key(document) != sent:
                sent = key(document)
                yield f"data: {json.dumps(document.model_dump(mode='json'))}\n\n"
    except StoreUnavailable as exc:
        # The client reconnects by itself, and hears 503 until the store answers again.
        in_work_context(kind, subject, log.warning)("event stream ended: the job store is unavailable (%s)", exc.reason)
