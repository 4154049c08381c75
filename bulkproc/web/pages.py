"""The upload page, the liveness and readiness checks, and the metrics."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, render_template
from sqlalchemy.exc import SQLAlchemyError

from .. import metrics
from ..contract import Health, Ready
from ..errors import StoreUnavailable
from .http_errors import error_document
from .requests import answer

bp = Blueprint("pages", __name__)
log = logging.getLogger(__name__)


@bp.get("/")
def upload_page():
    return render_template("upload.html", max_rows=current_app.config["MAX_ROWS"],
                           max_import_rows=current_app.config["MAX_IMPORT_ROWS"],
                           token_required=bool(current_app.config.get("API_TOKEN")))


@bp.get("/healthz")
def healthz():
    return answer(Health(status="ok"))


@bp.get("/metrics")
def metrics_text():
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


@bp.get("/readyz")
def readyz():
    """Ready when the job store answers a trivial query; 503 JSON otherwise."""
    try:
        current_app.extensions["bulkproc"].store.ping()
    except (StoreUnavailable, SQLAlchemyError) as exc:
        # The cause is for the operator's log only: it may name hosts, users or paths.
        cause = exc.reason if isinstance(exc, StoreUnavailable) else str(getattr(exc, "orig", None) or exc)
        cause = cause.splitlines()[0]
        log.warning("readiness check: the job store does not answer: %s", cause)
        return answer(error_document("The job store is not answering."), 503)
    return answer(Ready(status="ready"))
