"""bulkproc: the Hospital Bulk Processor."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from . import api, api_docs, config, errors, imports_api, logs, pages, request_ids
from .directory_client import DirectoryClient
from .imports import Imports
from .jobs import Jobs
from .rate_limit import NoLimiter, RateLimiter
from .rows import SETTLE_FACTOR
from .store import Store
from .streams import StreamSlots

__all__ = ["create_app"]


def create_app(test_config: dict[str, Any] | None = None, *, clock: Callable[[], float] = time.time) -> Flask:
    """Build the app: defaults, then the environment, then `test_config`; `clock` is the host's
    wall clock (tests move it); raises config.ConfigError."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.update(config.from_env())
    app.config.update(test_config or {})
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_BYTES"]
    app.json.sort_keys = False  # keep the documents in the contract's order
    if not app.testing:
        logs.configure(app.config["LOG_FORMAT"])

    store = Store(app.config["DATABASE_URL"] or _default_database(app), clock=clock)
    client = DirectoryClient(
        app.config["HOSPITAL_API_BASE_URL"], connect_timeout=app.config["CONNECT_TIMEOUT"],
        read_timeout=app.config["READ_TIMEOUT"], max_attempts=app.config["MAX_ATTEMPTS"],
        pool_size=app.config["CONCURRENCY"] + 4, backoff=app.config["BACKOFF_SECONDS"],
        rate_limit_pause=app.config["RATE_LIMIT_PAUSE"], outage_grace=app.config["OUTAGE_GRACE"])
    limiter = RateLimiter(store, *app.config["CREATE_RATE"]) if app.config["CREATE_RATE"] else NoLimiter()
    jobs = app.extensions["bulkproc"] = Jobs(
        store, client, limiter=limiter, concurrency=app.config["CONCURRENCY"], lease_seconds=app.config["LEASE_SECONDS"],
        batch_deadline=app.config["BATCH_DEADLINE"], wake_timeout=app.config["WAKE_TIMEOUT"],
        settle_seconds=SETTLE_FACTOR * app.config["READ_TIMEOUT"] + app.config["CONNECT_TIMEOUT"])
    app.extensions["bulkproc.imports"] = Imports(
        jobs, batch_rows=app.config["MAX_ROWS"], rate=app.config["CREATE_RATE"],
        concurrency=app.config["CONCURRENCY"], creation_seconds=app.config.get("IMPORT_CREATION_SECONDS", 5.0))
    app.extensions["bulkproc.streams"] = StreamSlots(app.config["MAX_STREAMS"])

    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(imports_api.bp)
    app.register_blueprint(api_docs.bp)
    errors.register(app)
    request_ids.register(app)
    return app


def _default_database(app: Flask) -> str:
    os.makedirs(app.instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(app.instance_path, "bulkproc.sqlite3")
