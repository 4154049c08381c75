"""bulkproc: the Hospital Bulk Processor."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from . import api, api_docs, config, errors, logs, pages
from .directory_client import DirectoryClient
from .jobs import Jobs
from .rate_limit import RateLimiter
from .store import Store

__all__ = ["create_app"]


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then the environment, then `test_config`; raises config.ConfigError."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.update(config.from_env())
    app.config.update(test_config or {})
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_BYTES"]
    app.json.sort_keys = False  # keep the documents in the contract's order
    if not app.testing:
        logs.configure()

    store = Store(app.config["DATABASE_URL"] or _default_database(app))
    client = DirectoryClient(
        app.config["HOSPITAL_API_BASE_URL"], connect_timeout=app.config["CONNECT_TIMEOUT"],
        read_timeout=app.config["READ_TIMEOUT"], max_attempts=app.config["MAX_ATTEMPTS"],
        pool_size=app.config["CONCURRENCY"] + 4, backoff=app.config["BACKOFF_SECONDS"],
        rate_limit_pause=app.config["RATE_LIMIT_PAUSE"])
    if app.config["CREATE_RATE"]:
        client.limiter = RateLimiter(store, *app.config["CREATE_RATE"])
    app.extensions["bulkproc"] = Jobs(
        store, client, concurrency=app.config["CONCURRENCY"], lease_seconds=app.config["LEASE_SECONDS"],
        batch_deadline=app.config["BATCH_DEADLINE"], wake_timeout=app.config["WAKE_TIMEOUT"],
        settle_seconds=app.config["READ_TIMEOUT"])

    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(api_docs.bp)
    errors.register(app)
    return app


def _default_database(app: Flask) -> str:
    os.makedirs(app.instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(app.instance_path, "bulkproc.sqlite3")
