"""The upload page and the liveness check."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template

bp = Blueprint("pages", __name__)


@bp.get("/")
def upload_page():
    return render_template("upload.html", max_rows=current_app.config["MAX_ROWS"],
                           max_import_rows=current_app.config["MAX_IMPORT_ROWS"],
                           token_required=bool(current_app.config.get("API_TOKEN")))


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
