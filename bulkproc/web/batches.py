"""The /hospitals/bulk endpoints: parse the request, call jobs, shape the response."""

from __future__ import annotations


from flask import Blueprint, Response, current_app, request, url_for

from ..contract import BatchList
from ..files import results, rules
from ..work import fixes
from ..work.batches import Jobs
from .auth import require_token
from .requests import (
    answer,
    csv_file,
    existing_choice,
    idempotency_key,
    json_object_body,
    list_limit,
    query_flag,
    read_options,
    upload_fingerprint,
    uploaded_csv,
    validation_document,
)
from .streams import document_events, event_response

bp = Blueprint("api", __name__, url_prefix="/hospitals/bulk")
bp.before_request(require_token)


def _jobs() -> Jobs:
    return current_app.extensions["bulkproc"]


def _wants_async() -> bool:
    prefer = request.headers.get("Prefer", "")
    asked = any(p.split("=")[0].strip().lower() == "respond-async" for p in prefer.split(","))
    return asked or request.values.get("async", "").lower() in ("1", "true", "yes")


def _accepted(batch_id: str) -> Response:
    """202 with the status document and where to follow it."""
    response = answer(_jobs().document(batch_id), 202)
    response.headers["Location"] = url_for("api.get_batch", batch_id=batch_id)
    if "respond-async" in request.headers.get("Prefer", ""):
        response.headers["Preference-Applied"] = "respond-async"
    return response


def _finished(batch_id: str) -> Response:
    return answer(_jobs().document(batch_id))


@bp.post("")
def create_batch():
    data = uploaded_csv()
    key = idempotency_key()
    existing, options = existing_choice(), read_options()
    rows = rules.parse(data, max_rows=current_app.config["MAX_ROWS"], options=options)
    jobs = _jobs()
    # A repeat of an earlier upload reads nothing upstream: it answers that upload's batch.
    there = jobs.find_in_directory(rows) if existing == "skip" and not jobs.seen(key) else None
    batch_id, new = jobs.start(rows, idempotency_key=key, file_sha256=upload_fingerprint(data, existing, options),
                               already_there=there)
    if _wants_async():
        if new:
            jobs.run_in_background(batch_id)
        return _accepted(batch_id)
    if new:
        jobs.run(batch_id)
    else:
        # A client's retry of an upload still running elsewhere: answer once it is done.
        jobs.wait_until_final(batch_id)
    return _finished(batch_id)


@bp.post("/validate")
def validate_batch():
    data, existing = uploaded_csv(), existing_choice()
    inspection = rules.inspect(data, max_rows=current_app.config["MAX_ROWS"], options=read_options())
    found = None
    if existing == "skip":  # a refused file causes no upstream call: its rows read null
        found = _jobs().find_in_directory(inspection.rows) if inspection.valid else {}
    return answer(validation_document(inspection, found))


@bp.get("")
def list_batches():
    return answer(BatchList(batches=_jobs().recent(list_limit(), query_flag("standalone"))))


@bp.get("/<batch_id>")
def get_batch(batch_id: str):
    return answer(_jobs().document(batch_id))


@bp.post("/<batch_id>/resume")
def resume_batch(batch_id: str):
    jobs = _jobs()
    if not jobs.take_over(batch_id):
        return _finished(batch_id)  # completed already: nothing to do
    if _wants_async():
        jobs.run_in_background(batch_id, resuming=True)
        return _accepted(batch_id)
    jobs.resume(batch_id)
    return _finished(batch_id)


@bp.post("/<batch_id>/activate")
def activate_batch(batch_id: str):
    jobs = _jobs()
    if not jobs.take_for_activation(batch_id):
        return _finished(batch_id)  # completed already: nothing to do
    if _wants_async():
        jobs.run_in_background(batch_id, resuming=True, leaving_failed=True)
        return _accepted(batch_id)
    jobs.activate(batch_id)
    return _finished(batch_id)


@bp.delete("/<batch_id>")
def roll_back_batch(batch_id: str):
    _jobs().roll_back(batch_id)
    return answer(_jobs().document(batch_id))


@bp.get("/<batch_id>/events")
def batch_events(batch_id: str):
    jobs = _jobs()
    jobs.load(batch_id)  # a 404 now, before the stream starts
    heartbeat = current_app.config.get("SSE_HEARTBEAT_SECONDS", 15.0)
    # updated_at moves with every write; the status also moves when a lease lapses.
    return event_response(document_events(jobs.watch(batch_id, heartbeat),
                                           lambda d: (d.updated_at, d.status), "batch", batch_id))


@bp.get("/<batch_id>/results.csv")
def batch_results(batch_id: str):
    batch = _jobs().load(batch_id)
    return csv_file(results.results_lines((batch.id, row) for row in batch.rows), f"batch-{batch.id}-results.csv")


@bp.get("/<batch_id>/failed.csv")
def batch_failed_rows(batch_id: str):
    batch = _jobs().load(batch_id)
    return csv_file(results.failed_lines((batch.id, row) for row in batch.rows), f"batch-{batch.id}-failed.csv")


@bp.patch("/<batch_id>/rows/<int(min=1):row>")
def fix_batch_row(batch_id: str, row: int):
    jobs = _jobs()
    batch = jobs.load(batch_id)
    fixes.fix_row(jobs.store, batch, row, fixes.changes_from(json_object_body(), row), batch.read_at)
    return answer(jobs.document(batch_id))
