"""The upload page, the liveness check and the readiness check."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, render_template
from sqlalchemy.exc import SQLAlchemyError

from .errors import error_body

bp = Blueprint("pages", __name__)
log = logging.getLogger(__name__)


@bp.get("/")
def upload_page():
    return render_template("upload.html", max_rows=current_app.config["MAX_ROWS"],
                           token_required=bool(current_app.config.get("API_TOKEN")))


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready when the job store answers a trivial query; 503 JSON otherwise."""
    try:
        current_app.extensions["bulkproc"].store.ping()
    except SQLAlchemyError as exc:
        # The cause is for the operator's log only: it may name hosts, users or paths.
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        log.warning("readiness check: the job store does not answer: %s", cause)
        return jsonify(error_body("The job store is not answering.")), 503
    return jsonify({"status": "ready"})
