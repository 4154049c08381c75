"""The /hospitals/imports endpoints: parse the request, call imports, shape the response."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, url_for

from ..contract import ImportList
from ..files import results, rules
from ..work.imports import Imports
from .auth import require_token
from .requests import (
    answer,
    csv_file,
    existing_choice,
    idempotency_key,
    list_limit,
    read_options,
    upload_fingerprint,
    uploaded_csv,
    validation_document,
)
from .streams import document_events, event_response

bp = Blueprint("imports", __name__, url_prefix="/hospitals/imports")
bp.before_request(require_token)


def _imports() -> Imports:
    return current_app.extensions["bulkproc.imports"]


def _accepted(import_id: str, status: int = 202) -> Response:
    """The import document, with where to follow it."""
    response = answer(_imports().document(import_id), status)
    response.headers["Location"] = url_for("imports.get_import", import_id=import_id)
    return response


@bp.post("")
def create_import():
    data = uploaded_csv()
    key = idempotency_key()
    existing, options = existing_choice(), read_options()
    # Checked without keeping its rows; they are read again from the file as they are stored.
    accepted = rules.accept(data, max_rows=current_app.config["MAX_IMPORT_ROWS"], options=options)
    imports = _imports()
    # A repeat of an earlier upload reads nothing upstream: it answers that upload's import.
    there = imports.jobs.find_in_directory(accepted.rows()) if existing == "skip" and not imports.seen(key) else None
    import_id, new = imports.start(accepted.rows(), idempotency_key=key,
                                   file_sha256=upload_fingerprint(data, existing, options), already_there=there)
    if new:
        imports.run_in_background(import_id)
    return _accepted(import_id)


@bp.post("/validate")
def validate_import():
    data, existing = uploaded_csv(), existing_choice()
    inspection = rules.inspect(data, max_rows=current_app.config["MAX_IMPORT_ROWS"], options=read_options())
    found = None
    if existing == "skip":  # a refused file causes no upstream call: its rows read null
        found = _imports().jobs.find_in_directory(inspection.rows) if inspection.valid else {}
    return answer(validation_document(inspection, found))


@bp.get("")
def list_imports():
    return answer(ImportList(imports=_imports().recent(list_limit())))


@bp.get("/<import_id>")
def get_import(import_id: str):
    return answer(_imports().document(import_id))


@bp.post("/<import_id>/cancel")
def cancel_import(import_id: str):
    # Rows in flight still finish, so the import reads `cancelled` a moment after this answer.
    _imports().cancel(import_id)
    return answer(_imports().document(import_id))


@bp.post("/<import_id>/resume")
def resume_import(import_id: str):
    imports = _imports()
    if not imports.take_over(import_id):
        return _accepted(import_id, 200)  # completed already: nothing to do
    imports.run_in_background(import_id)
    return _accepted(import_id)


@bp.post("/<import_id>/activate")
def activate_import(import_id: str):
    imports = _imports()
    if not imports.take_for_activation(import_id):
        return _accepted(import_id, 200)  # completed already: nothing to do
    imports.activate_in_background(import_id)
    return _accepted(import_id)


@bp.delete("/<import_id>")
def roll_back_import(import_id: str):
    _imports().roll_back(import_id)
    return answer(_imports().document(import_id))


@bp.get("/<import_id>/events")
def import_events(import_id: str):
    imports = _imports()
    imports.load(import_id)  # a 404 now, before the stream starts
    heartbeat = current_app.config.get("SSE_HEARTBEAT_SECONDS", 15.0)
    return event_response(document_events(
        imports.watch(import_id, heartbeat),
        lambda d: (d.updated_at, d.status, d.processed_hospitals), "import", import_id))


# -- result files: the batches' format, every row of the import in file order ---------------


@bp.get("/<import_id>/results.csv")
def import_results(import_id: str):
    imports = _imports()
    imports.load(import_id)  # a 404 now, before the file starts
    return csv_file(results.results_lines(imports.rows(import_id)), f"import-{import_id}-results.csv")


@bp.get("/<import_id>/failed.csv")
def import_failed_rows(import_id: str):
    imports = _imports()
    imports.load(import_id)
    return csv_file(results.failed_lines(imports.rows(import_id)), f"import-{import_id}-failed.csv")
