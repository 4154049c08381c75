"""Logging with the batch id and the request id on every line, from any thread, as text or JSON."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import IO, Any

FORMAT = "%(asctime)s %(levelname)s [batch %(batch_id)s] [request %(request_id)s] %(name)s: %(message)s"
NONE = "-"

# The batch id of the work at hand, and the id of the request that started it, for every log line.
current_batch: contextvars.ContextVar[str] = contextvars.ContextVar("current_batch", default=NONE)
current_request: contextvars.ContextVar[str] = contextvars.ContextVar("current_request", default=NONE)


def in_batch_context(batch_id: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap `fn` so that it runs, in any thread, with the batch id and the current request id
    (taken now, where the work is handed over) in the logging context."""
    request_id = current_request.get()

    def run(*args: Any) -> Any:
        tokens = current_batch.set(batch_id), current_request.set(request_id)
        try:
            return fn(*args)
        finally:
            current_request.reset(tokens[1])
            current_batch.reset(tokens[0])
    return run


class BatchIdFilter(logging.Filter):
    """Stamp each record with the batch id and request id of the work it was logged from ("-" outside any)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.batch_id = current_batch.get()
        record.request_id = current_request.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, batch and request ids, and any exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "batch_id": _or_null(getattr(record, "batch_id", NONE)),
            "request_id": _or_null(getattr(record, "request_id", NONE)),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def _or_null(value: str) -> str | None:
    return None if value == NONE else value


def make_handler(log_format: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing to `stream` (default stderr) as `log_format` ("text" or "json"), ids stamped."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(BatchIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(FORMAT))
    return handler


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Send bulkproc's logs to stderr with the batch and request ids; safe to call more than once."""
    logger = logging.getLogger("bulkproc")
    if any(isinstance(f, BatchIdFilter) for h in logger.handlers for f in h.filters):
        return
    logger.addHandler(make_handler(log_format))
    logger.setLevel(level)
    logger.propagate = False
