"""Logging with the batch id on every line, from any thread."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Callable
from typing import Any

FORMAT = "%(asctime)s %(levelname)s [batch %(batch_id)s] %(name)s: %(message)s"

# The batch id of the work at hand, for every log line.
current_batch: contextvars.ContextVar[str] = contextvars.ContextVar("current_batch", default="-")


def in_batch_context(batch_id: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap `fn` so that it runs, in any thread, with the batch id in the logging context."""
    def run(*args: Any) -> Any:
        token = current_batch.set(batch_id)
        try:
            return fn(*args)
        finally:
            current_batch.reset(token)
    return run


class BatchIdFilter(logging.Filter):
    """Stamp each record with the batch id of the work it was logged from ("-" outside any batch)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.batch_id = current_batch.get()
        return True


def configure(level: int = logging.INFO) -> None:
    """Send bulkproc's logs to stderr with the batch id; safe to call more than once."""
    logger = logging.getLogger("bulkproc")
    if any(isinstance(f, BatchIdFilter) for h in logger.handlers for f in h.filters):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(BatchIdFilter())
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
