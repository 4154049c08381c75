"""Logging with the batch id on every line."""

from __future__ import annotations

import logging
import sys

from .jobs import current_batch

FORMAT = "%(asctime)s %(levelname)s [batch %(batch_id)s] %(name)s: %(message)s"


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
