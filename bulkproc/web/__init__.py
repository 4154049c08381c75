"""The HTTP face: blueprints, the error table, auth, request ids, streams, pages, the API description."""

from __future__ import annotations

from flask import Flask

from . import batches, docs, http_errors, imports, observed, pages, request_ids, samples


def register(app: Flask) -> None:
    """Attach every blueprint, the error handlers and request ids to `app`."""
    app.register_blueprint(pages.bp)
    app.register_blueprint(batches.bp)
    app.register_blueprint(imports.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(samples.bp)
    http_errors.register(app)
    request_ids.register(app)
    observed.register(app)
