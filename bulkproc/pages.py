"""The upload page, the liveness check and the metrics."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, render_template

from . import metrics

bp = Blueprint("pages", __name__)


@bp.get("/")
def upload_page():
    return render_template("upload.html", max_rows=current_app.config["MAX_ROWS"],
                           max_import_rows=current_app.config["MAX_IMPORT_ROWS"],
                           token_required=bool(current_app.config.get("API_TOKEN")))


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/metrics")
def metrics_text():
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
