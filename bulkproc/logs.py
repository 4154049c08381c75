"""Logging with the batch or import id and the request id on every line, from any thread, as text or JSON."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

FORMAT = "%(asctime)s %(levelname)s %(subject)s [request %(request_id)s] %(name)s: %(message)s"
NONE = "-"

# The batch and the import of the work at hand, and the id of the request that started it, for every line.
current_batch: contextvars.ContextVar[str] = contextvars.ContextVar("current_batch", default=NONE)
current_import: contextvars.ContextVar[str] = contextvars.ContextVar("current_import", default=NONE)
current_request: contextvars.ContextVar[str] = contextvars.ContextVar("current_request", default=NONE)

# What a finished line carries beyond its message (record attributes, set through `extra`).
_FINISHED_FIELDS = ("rows", "duration_seconds")
# gunicorn's access atoms (its access logger's record.args) that a JSON access line names.
_ACCESS_FIELDS = {"m": "method", "U": "path", "q": "query", "s": "status", "B": "bytes", "h": "remote"}


def in_batch_context(batch_id: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap `fn` so that it runs, in any thread, with the batch id and the current import and request
    ids (taken now, where the work is handed over) in the logging context."""
    return _in_context(batch_id, current_import.get(), fn)


def in_import_context(import_id: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap `fn` so that it runs, in any thread, as work of the import `import_id` (no batch yet)."""
    return _in_context(NONE, import_id, fn)


def in_work_context(kind: str, work_id: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`in_import_context` when `kind` is "import", else `in_batch_context`."""
    return in_import_context(work_id, fn) if kind == "import" else in_batch_context(work_id, fn)


def _in_context(batch_id: str, import_id: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    request_id = current_request.get()

    def run(*args: Any) -> Any:
        tokens = current_batch.set(batch_id), current_import.set(import_id), current_request.set(request_id)
        try:
            return fn(*args)
        finally:
            current_request.reset(tokens[2])
            current_import.reset(tokens[1])
            current_batch.reset(tokens[0])
    return run


class BatchIdFilter(logging.Filter):
    """Stamp each record with the batch, import and request ids of the work it was logged from ("-" outside any)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.batch_id = current_batch.get()
        record.import_id = current_import.get()
        record.request_id = current_request.get()
        record.subject = _subject(record.batch_id, record.import_id)
        return True


def _subject(batch_id: str, import_id: str) -> str:
    if import_id == NONE:
        return f"[batch {batch_id}]"
    return f"[import {import_id}]" + ("" if batch_id == NONE else f" [batch {batch_id}]")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, batch, import and request ids, and any exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "batch_id": _or_null(getattr(record, "batch_id", NONE)),
            "import_id": _or_null(getattr(record, "import_id", NONE)),
            "request_id": _or_null(getattr(record, "request_id", NONE)),
        }
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            entry.update(_access_fields(record.args))
        entry.update({name: getattr(record, name) for name in _FINISHED_FIELDS if hasattr(record, name)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _access_fields(atoms: Mapping[str, Any]) -> dict[str, Any]:
    """What an access line tells, as fields: the request id the service answered with, method, path, time."""
    fields: dict[str, Any] = {name: atoms.get(atom) for atom, name in _ACCESS_FIELDS.items()}
    fields["status"] = int(fields["status"]) if str(fields["status"]).isdigit() else fields["status"]
    fields["request_id"] = _or_null(str(atoms.get("{x-request-id}o", NONE)))
    micros = atoms.get("D")
    fields["duration_seconds"] = int(micros) / 1e6 if str(micros).isdigit() else None
    return fields


def _or_null(value: str) -> str | None:
    return None if value in (NONE, "", None) else value


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
    if log_format == "json":
        _route_strays_through(logger)


def _route_strays_through(logger: logging.Logger) -> None:
    """Send uncaught exceptions (of any thread) and warnings through `logger`, so they are JSON too."""
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").handlers = logger.handlers
    logging.getLogger("py.warnings").propagate = False

    def uncaught(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not SystemExit:
            logger.error("uncaught exception in thread %s", getattr(args.thread, "name", "?"),
                         exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
    threading.excepthook = uncaught
    sys.excepthook = lambda kind, value, tb: logger.error("uncaught exception", exc_info=(kind, value, tb))


def gunicorn_logconfig(log_format: str) -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: its error lines (stderr) and access lines (stdout) as `log_format`,
    and any other library's lines (the root logger) with them."""
    formatter = {"()": f"{__name__}.JsonFormatter"} if log_format == "json" else {"format": FORMAT}
    handler = {"class": "logging.StreamHandler", "formatter": "bulkproc", "filters": ["ids"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"ids": {"()": f"{__name__}.BatchIdFilter"}},
        "formatters": {"bulkproc": formatter},
        "handlers": {"stderr": {**handler, "stream": "ext://sys.stderr"},
                     "stdout": {**handler, "stream": "ext://sys.stdout"}},
        "root": {"level": "WARNING", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        },
    }


def format_from_env(environ: Mapping[str, str]) -> str:
    """BULKPROC_LOG_FORMAT read on its own, for lines written before (or instead of) the settings: text
    unless it says json, so that a bad value is refused in text."""
    return "json" if environ.get("BULKPROC_LOG_FORMAT", "").strip().lower() == "json" else "text"


def startup_logger(log_format: str) -> logging.Logger:
    """The logger of the start-up checks (bulkproc.serve), writing to stderr as `log_format`."""
    logger = logging.getLogger("bulkproc.serve")
    if not logger.handlers:
        handler = make_handler(log_format)
        if log_format != "json":
            handler.setFormatter(logging.Formatter("bulkproc: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def log_finished(logger: logging.Logger, what: str, status: str, rows: Mapping[str, int], seconds: float) -> None:
    """Log that `what` (a batch or an import) finished in `status`, with its rows by status and its time."""
    counts = {str(status_): n for status_, n in sorted(rows.items()) if n}
    told = ", ".join(f"{n} {status_}" for status_, n in counts.items()) or "no rows"
    logger.info("%s finished: %s (%s rows: %s) in %.1f s", what, status, sum(counts.values()), told, seconds,
                extra={"rows": counts, "duration_seconds": round(seconds, 3)})
