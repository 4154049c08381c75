"""Following a batch or an import until it is final: its event stream, read again when it drops."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .service import Refused, Service, Unreachable, Work, is_final

# How long the service may stay unreachable while a batch is followed before the command gives up.
GIVE_UP_AFTER = 60.0


def follow(service: Service, work: Work, document: dict[str, Any], show: Callable[[dict[str, Any]], None], *,
           give_up_after: float = GIVE_UP_AFTER, pause: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Show each document of the work until one is final, and return it: from the event stream, and
    from the document itself when the stream ends early, drops or is refused (503: too many streams).

    Raises Unreachable when the service stays unreachable for `give_up_after` seconds, and Refused
    for any other error it answers.
    """
    show(document)
    unreachable_since: float | None = None
    while not is_final(document):
        try:
            document = _stream(service, work, show) or _reread(service, work, show, pause)
            unreachable_since = None
        except Unreachable:
            now = time.monotonic()
            unreachable_since = unreachable_since or now
            if now - unreachable_since >= give_up_after:
                raise
            pause(1.0)
        except Refused as exc:
            if exc.status != 503:
                raise
            document = _reread(service, work, show, pause, 2.0)
    return document


def _stream(service: Service, work: Work, show: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
    """Show the stream's documents; the final one, or None when the stream ended before it."""
    for document in service.events(work):
        show(document)
        if is_final(document):
            return document
    return None


def _reread(service: Service, work: Work, show: Callable[[dict[str, Any]], None],
            pause: Callable[[float], None], wait: float = 0.5) -> dict[str, Any]:
    """Read the document (after `wait` seconds when it is not final, so a loop of these is paced)."""
    document = service.document(work)
    show(document)
    if not is_final(document):
        pause(wait)
    return document
