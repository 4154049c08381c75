"""The service's Prometheus metrics, counted where the work happens and summed over every worker.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR (set up by gunicorn.conf.py before any worker starts)
makes every worker write its counts to files there, and /metrics adds them up; elsewhere (tests,
`flask run`) the counts live in this process's default registry.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

# A `_created` timestamp beside every counter doubles the output and multiprocess mode has none.
disable_created_metrics()

hospitals_created = Counter(
    "bulkproc_hospitals_created", "Rows the job store learned exist upstream (created by a try of ours).")
rows_failed = Counter(
    "bulkproc_rows_failed", "Rows marked failed (a resume that fails a row again counts it again).")
batches_finished = Counter(
    "bulkproc_batches_finished", "Runs of a batch that ended, by the status the batch ended in.", ["status"])
upstream_requests = Counter(
    "bulkproc_upstream_requests", "Requests sent to the directory, by operation and HTTP status or failure kind.",
    ["operation", "code"])
upstream_duration = Histogram(
    "bulkproc_upstream_request_duration_seconds",
    "Time from sending a request to the directory to its answer or failure.",
    ["operation"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 7.5, 10, 20, 30, 60, 90))
rate_limit_wait = Counter(
    "bulkproc_rate_limit_wait_seconds", "Seconds creations waited for a slot of the create-rate limit.")
duplicates_removed = Counter(
    "bulkproc_duplicates_removed", "Late duplicates of our own creations deleted upstream.")

webhook_deliveries = Counter(
    "bulkproc_webhook_deliveries", "Webhook delivery attempts, by result: delivered, failed (tried again later), "
    "gone (410: never again) or given_up (the last try).", ["result"])


http_requests = Counter(
    "bulkproc_http_requests", "Requests answered, by method, route template (never the raw path) and status.",
    ["method", "route", "status"])
http_duration = Histogram(
    "bulkproc_http_request_duration_seconds", "Time from a request's arrival to its answer, by route template.",
    ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
store_errors = Counter(
    "bulkproc_store_errors", "Times the job store could not be read or written (down, read-only, full).")
imports_finished = Counter(
    "bulkproc_imports_finished", "Runs of an import that ended, by the status the import ended in.", ["status"])
# livesum: the rows in flight now, over every live worker (a dead worker's rows leave the sum).
rows_in_flight = Gauge(
    "bulkproc_rows_in_flight", "Rows whose creation is being sent to the directory now.", multiprocess_mode="livesum")

# The route label of a request that matched no route: one label, so that scans cannot add series.
UNMATCHED_ROUTE = "unmatched"
# Any token is a method to HTTP: others count as "other", for the same reason.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

T = TypeVar("T")


def in_flight(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap a row's creation so that `bulkproc_rows_in_flight` counts it while it runs."""
    @functools.wraps(fn)
    def counted(*args: Any) -> T:
        with rows_in_flight.track_inprogress():
            return fn(*args)
    return counted


def observe_http(method: str, route: str | None, status: int, seconds: float) -> None:
    """Count one answered request under its route template."""
    route = route or UNMATCHED_ROUTE
    method = method if method in _METHODS else "other"
    http_requests.labels(method, route, str(status)).inc()
    http_duration.labels(route).observe(seconds)


def observe_upstream(operation: str, code: str, seconds: float) -> None:
    """Count one request to the directory and how long it took."""
    upstream_requests.labels(operation, code).inc()
    upstream_duration.labels(operation).observe(seconds)


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus text, summed over every worker process, and their content type."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
