"""bulkproc: the Hospital Bulk Processor."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["create_app"]


def create_app(test_config: dict[str, Any] | None = None, *, clock: Callable[[], float] = time.time) -> Flask:
    """Build the app: defaults, then the environment, then `test_config`; `clock` is the host's
    wall clock (tests move it); raises config.ConfigError."""
    # Imported here, not at the top: the `bulkproc` command (bulkproc.cli) loads this package too,
    # and must start without Flask, SQLAlchemy or the service's own modules.
    from flask import Flask

    from . import config, logs, web
    from .runtime import Runtime

    app = Flask(__name__, instance_relative_config=True)
    app.config.update(config.from_env())
    app.config.update(test_config or {})
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_BYTES"]
    app.json.sort_keys = False  # keep the documents in the contract's order
    if not app.testing:
        logs.configure(app.config["LOG_FORMAT"])

    runtime = Runtime.build(app.config, app.instance_path, clock=clock)
    app.extensions["bulkproc.runtime"] = runtime
    app.extensions["bulkproc"] = runtime.jobs
    app.extensions["bulkproc.imports"] = runtime.imports
    app.extensions["bulkproc.streams"] = runtime.streams
    web.register(app)
    return app
