"""The API description: GET /openapi.json, and GET /docs, Swagger UI served from the installed package."""

from __future__ import annotations

from importlib.resources import files

from flask import Blueprint, Response, current_app, jsonify, render_template, send_from_directory

from . import openapi

bp = Blueprint("api_docs", __name__)

# flask-swagger-ui ships Swagger UI's dist folder: the page's scripts and styles come from here,
# never from a CDN, so the explorer works offline.
SWAGGER_UI = str(files("flask_swagger_ui") / "dist")


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(openapi.document(token_required=bool(current_app.config.get("API_TOKEN"))))


@bp.get("/docs")
def docs() -> str:
    return render_template("docs.html")


@bp.get("/docs/<path:filename>")
def docs_asset(filename: str) -> Response:
    return send_from_directory(SWAGGER_UI, filename)
