"""The service's OpenAPI 3.1 description: every endpoint, request and error of the contract, in words.

The document is data built from small helpers, so that each operation reads as one table entry:
its parameters, its body, and the responses it can give. The documents' schemas are generated
from the contract's models (bulkproc/contract); what is written here is the paths, their
parameters, headers and error responses, the words, and the multipart upload form, which no model
parses (web/requests.py reads its parts one by one).
"""

from __future__ import annotations

from typing import Any

from ..contract.schemas import components
from ..files.headers import FIELDS as FILE_FIELDS
from .requests import MAX_LIST_LIMIT

OPENAPI_VERSION = "3.1.0"

# Path prefixes the API token protects (BULKPROC_API_TOKEN); everything else stays open.
PROTECTED_PREFIXES = ("/hospitals/bulk", "/hospitals/imports")

Json = dict[str, Any]


def _ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


UUID = {"type": "string", "format": "uuid"}

# -- the upload form ---------------------------------------------------------------------------

_CSV_FILE = {"type": "string", "format": "binary",
             "description": "A CSV (UTF-8, UTF-16 with a byte-order mark, or the `encoding` named; `,` `;` tab "
                            "or `|` between fields) or an .xlsx, .xls or .ods workbook, told apart by its bytes. "
                            "An optional header in the words of the contract's table."}
# The encodings documented; any other character set Python knows by name is read too.
ENCODINGS = ["utf-8", "utf-16", "utf-16le", "utf-16be", "windows-1252", "iso-8859-1", "iso-8859-15",
             "windows-1250", "windows-1251", "mac-roman", "shift_jis", "gb18030", "big5"]
_EXISTING = {"type": "string", "enum": ["create", "skip"], "default": "create",
             "description": "`skip`: the directory is read once (`GET /hospitals/`) before anything is "
                            "created, and a row whose name and address match an active hospital there "
                            "(NFC, case-folded, runs of spaces collapsed; phone not compared) is not "
                            "created: it reads `already_in_directory` with that hospital's id. An "
                            "Idempotency-Key is bound to the file and this field together."}
_READING_FIELDS = {
    "encoding": {"type": "string", "enum": ENCODINGS,
                 "description": "The text's encoding when it is not UTF-8 or UTF-16 with a byte-order mark; "
                                "an unknown one is a `400`."},
    "sheet": {"type": "string", "maxLength": 200, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$",
              "description": "The workbook's sheet to read (the first by default)."},
    "columns": {"type": "object", "maxProperties": 100,
                "additionalProperties": {"type": "string", "enum": [*FILE_FIELDS, "ignore"]},
                "description": 'JSON: header cell -> field or `ignore`, e.g. `{"Facility": "name", "Notes": '
                               '"ignore"}`; it overrides the matching.'},
}
CSV_FILE = {"type": "object", "required": ["file"],
            "properties": {"file": _CSV_FILE, **_READING_FIELDS, "existing": _EXISTING}}
# Form fields are text whatever they hold; any value but 1/true/yes means "synchronous".
UPLOAD = {"type": "object", "required": ["file"],
          "properties": {"file": _CSV_FILE, **_READING_FIELDS, "existing": _EXISTING,
                         "async": {"description": "`1`, `true` or `yes`: answer `202` at once."}}}


def _schemas() -> Json:
    """The models' schemas, and the upload form's."""
    return {**components(), "Upload": UPLOAD, "CsvFile": CSV_FILE}


# -- headers, parameters, error responses ----------------------------------------------------------

HEADERS: Json = {
    "Location": {"required": True, "description": "Where to follow the work.",
                 "schema": {"type": "string"}},
    "Preference-Applied": {"description": "`respond-async` when the `Prefer` header was honoured.",
                          "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before trying again.",
                   "schema": {"type": "string"}},
    "WWW-Authenticate": {"required": True, "description": "`Bearer`.", "schema": {"type": "string"}},
    "Allow": {"description": "The methods this address accepts.", "schema": {"type": "string"}},
    "Content-Disposition": {"description": "`attachment` with a file name.", "schema": {"type": "string"}},
}

PARAMETERS: Json = {
    "BatchId": {"name": "batch_id", "in": "path", "required": True, "schema": UUID,
                "description": "An unknown or malformed id answers `404`."},
    "ImportId": {"name": "import_id", "in": "path", "required": True, "schema": UUID,
                 "description": "An unknown or malformed id answers `404`."},
    "Row": {"name": "row", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1},
            "description": "The row's number in the uploaded file."},
    "Limit": {"name": "limit", "in": "query", "required": False,
              "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "default": 20},
              "description": "How many, newest first."},
    "Standalone": {"name": "standalone", "in": "query", "required": False,
                   "schema": {"type": "string", "enum": ["true", "false"], "default": "false"},
                   "description": "`true`: only the batches uploaded on their own, none of an import's."},
    "Async": {"name": "async", "in": "query", "required": False, "schema": {"type": "string"},
              "description": "`1`, `true` or `yes`: answer `202` at once and go on in the background."},
    "Prefer": {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
               "description": "`respond-async` (RFC 7240): answer `202` at once."},
    "IdempotencyKey": {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[\\x20-\\x7e]+$"},
        "description": "Send an upload again with the same key and file: the first request's batch is "
                       "answered, and nothing new is created. The same key with another file: `422`."},
}

# status -> (component name, description, extra headers)
ERRORS: dict[int, tuple[str, str, tuple[str, ...]]] = {
    400: ("BadRequest", "Malformed request: no `file` part, empty file name, not multipart, bad parameter.", ()),
    401: ("Unauthorized", "Missing or wrong API token (only when BULKPROC_API_TOKEN is set).",
          ("WWW-Authenticate",)),
    404: ("NotFound", "Unknown or malformed id.", ()),
    405: ("MethodNotAllowed", "This address does not accept that method.", ("Allow",)),
    409: ("Conflict", "The batch is in a state that does not allow this.", ()),
    413: ("PayloadTooLarge", "The upload is over BULKPROC_MAX_UPLOAD_BYTES, or a JSON body over 64 KiB; "
                             "the message states the limit.", ()),
    422: ("Unprocessable", "The CSV (or the fix) is refused; `details` names every row and column.", ()),
    502: ("BadGateway", "The upstream is unreachable and the request could not proceed.", ()),
    503: ("ServiceUnavailable", "The job store is unavailable (the batch id is named when there is one), "
                               "or too many event streams are open.", ("Retry-After",)),
    504: ("GatewayTimeout", "The upstream did not answer in time and the request could not proceed.", ()),
}


def _json_content(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _error_response(description: str, headers: tuple[str, ...]) -> Json:
    response: Json = {"description": description, "content": _json_content(_ref("schemas", "Error"))}
    if headers:
        response["headers"] = {h: _ref("headers", h) for h in headers}
    return response


RESPONSES: Json = {name: _error_response(text, headers) for name, text, headers in ERRORS.values()}

# -- operations ---------------------------------------------------------------------------------

STORE = (503,)  # every operation that reads or writes the job store
UPSTREAM = (502, 503, 504)


def _ok(description: str, schema_name: str, *, status: int = 200, headers: tuple[str, ...] = (),
        links: tuple[str, ...] = ()) -> Json:
    response: Json = {"description": description, "content": _json_content(_ref("schemas", schema_name))}
    if headers:
        response["headers"] = {h: _ref("headers", h) for h in headers}
    if links:
        response["links"] = {name: _ref("links", name) for name in links}
    return {str(status): response}


def _link(operation_id: str, id_field: str, **more: str) -> Json:
    """A link from a document to `operation_id`, taking the document's id (and `more` parameters)."""
    return {"operationId": operation_id,
            "parameters": {id_field: f"$response.body#/{id_field}", **more}}


# What a client can do next with a batch or import it was just answered.
LINKS: Json = {
    **{op: _link(op, "batch_id") for op in ("get_batch", "batch_events", "resume_batch", "activate_batch",
                                             "roll_back_batch", "batch_results", "batch_failed_rows")},
    "fix_batch_row": _link("fix_batch_row", "batch_id", row="$response.body#/hospitals/0/row"),
    **{op: _link(op, "import_id") for op in ("get_import", "import_events", "cancel_import", "resume_import",
                                              "activate_import", "roll_back_import", "import_results",
                                              "import_failed_rows")},
}
BATCH_LINKS = tuple(op for op in LINKS if LINKS[op]["parameters"].keys() & {"batch_id"})
IMPORT_LINKS = tuple(op for op in LINKS if LINKS[op]["parameters"].keys() & {"import_id"})


def _text(description: str, media_type: str, schema: Json | None = None, **extra: Any) -> Json:
    return {"200": {"description": description,
                    "content": {media_type: {"schema": schema or {"type": "string"}}}, **extra}}


def _errors(*codes: int) -> Json:
    return {str(code): _ref("responses", ERRORS[code][0]) for code in sorted(set(codes))}


def _operation(operation_id: str, summary: str, tag: str, responses: Json, *, description: str = "",
               parameters: tuple[str, ...] = (), body: Json | None = None) -> Json:
    operation: Json = {"operationId": operation_id, "summary": summary, "tags": [tag], "responses": responses}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = [_ref("parameters", p) for p in parameters]
    if body is not None:
        operation["requestBody"] = body
    return operation


EXAMPLE_CSV = ("name,address,phone\n"
               "General Hospital,1 Main St,555-0100\n"
               '"Saint Mary\'s","2 Elm St, Boston",(617) 555-0101\n')


# What spreadsheet programs send a file as; the service itself goes by the bytes.
_FILE_TYPES = ("text/csv, text/plain, text/tab-separated-values, application/octet-stream, "
               "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet, application/vnd.ms-excel, "
               "application/vnd.oasis.opendocument.spreadsheet")


def _upload_body(description: str, schema: str = "CsvFile") -> Json:
    return {"required": True, "description": description, "content": {"multipart/form-data": {
        "schema": _ref("schemas", schema), "encoding": {"file": {"contentType": _FILE_TYPES}, "columns": {"contentType": "application/json"}},
        "examples": {"two_hospitals": {"summary": "Two hospitals, with a header",
                                       "value": {"file": EXAMPLE_CSV}}}}}}


def _events(schema_name: str) -> Json:
    """An event stream whose events carry the document `schema_name` as JSON in their data."""
    # Before OpenAPI 3.2 (itemSchema), a text/event-stream schema describes one event.
    event = {"type": "object", "properties": {
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": _ref("schemas", schema_name)},
        "event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer", "minimum": 0}}}
    return _text("Server-sent events: the document whenever it changes, a comment now and then to keep "
                 "the connection open; the stream ends after a final state.", "text/event-stream", event)


_ACCEPTED = ("Location", "Preference-Applied")
_CSV_HEADERS = {"Content-Disposition": _ref("headers", "Content-Disposition")}


def _batch_paths() -> Json:
    upload = _upload_body("The CSV in the multipart field `file`.")
    return {
        "/hospitals/bulk": {
            "post": _operation(
                "create_batch", "Create a batch from a CSV", "batches",
                {**_ok("Processed: the result document.", "BatchDocument", links=BATCH_LINKS),
                 **_ok("Accepted: processing goes on in the background.", "BatchDocument", status=202,
                       headers=_ACCEPTED, links=BATCH_LINKS),
                 **_errors(400, 401, 413, 422, *UPSTREAM)},
                description="Synchronous by default. With `Prefer: respond-async` or `async=1` it answers "
                            "`202` at once with `Location`.",
                parameters=("Async", "Prefer", "IdempotencyKey"),
                body=_upload_body("The CSV in the multipart field `file`; `async` may come here too.", "Upload")),
            "get": _operation("list_batches", "Recent batches, newest first, without rows", "batches",
                              {**_ok("The summaries.", "BatchList"), **_errors(400, 401, *STORE)},
                              parameters=("Limit", "Standalone")),
        },
        "/hospitals/bulk/validate": {
            "post": _operation("validate_batch", "Check a CSV without creating anything", "batches",
                               {**_ok("The verdict.", "Validation"), **_errors(400, 401, 413, *UPSTREAM)},
                               description="Calls the upstream only with `existing=skip`.", body=upload),
        },
        "/hospitals/bulk/{batch_id}": {
            "parameters": [_ref("parameters", "BatchId")],
            "get": _operation("get_batch", "Progress and result of a batch", "batches",
                              {**_ok("The batch as it stands.", "BatchDocument"), **_errors(401, 404, *STORE)}),
            "delete": _operation("roll_back_batch", "Roll a batch back", "batches",
                                 {**_ok("Rolled back.", "BatchDocument"),
                                  **_errors(401, 404, 409, *UPSTREAM)},
                                 description="Deletes the batch's hospitals upstream; `409` while it is processed."),
        },
        "/hospitals/bulk/{batch_id}/events": {
            "parameters": [_ref("parameters", "BatchId")],
            "get": _operation("batch_events", "Live progress of a batch", "batches",
                              {**_events("BatchDocument"), **_errors(401, 404, *STORE)}),
        },
        "/hospitals/bulk/{batch_id}/resume": {
            "parameters": [_ref("parameters", "BatchId")],
            "post": _operation(
                "resume_batch", "Finish a partially failed, failed or interrupted batch", "batches",
                {**_ok("Resumed (or already completed).", "BatchDocument"),
                 **_ok("Accepted: resuming in the background.", "BatchDocument", status=202, headers=_ACCEPTED),
                 **_errors(401, 404, 409, *UPSTREAM)},
                description="`409` while the batch is processed or after a rollback.",
                parameters=("Async", "Prefer")),
        },
        "/hospitals/bulk/{batch_id}/activate": {
            "parameters": [_ref("parameters", "BatchId")],
            "post": _operation(
                "activate_batch", "Finish a partly failed batch without its failed rows", "batches",
                {**_ok("Finished: `partially_activated` (or `completed` when every row turned out to exist).",
                       "BatchDocument"),
                 **_ok("Accepted: finishing in the background.", "BatchDocument", status=202, headers=_ACCEPTED),
                 **_errors(401, 404, 409, *UPSTREAM)},
                description="For a `partially_failed`, `interrupted` or `cancelled` batch: learns which rows "
                            "exist upstream (waiting for creations that may still land) and activates the "
                            "batch with them. Failed rows keep their error and stay in `failed.csv`. "
                            "`partially_activated` is final: resume and activate answer `409`, rollback "
                            "still works. `409` while processing, when nothing exists upstream, or after "
                            "a rollback.",
                parameters=("Async", "Prefer")),
        },
        "/hospitals/bulk/{batch_id}/results.csv": {
            "parameters": [_ref("parameters", "BatchId")],
            "get": _operation("batch_results", "Every row of a batch as CSV", "batches",
                              {**_text("Header `row,name,address,phone,status,hospital_id,batch_id,error`.",
                                       "text/csv", headers=_CSV_HEADERS),
                               **_errors(401, 404, *STORE)}),
        },
        "/hospitals/bulk/{batch_id}/failed.csv": {
            "parameters": [_ref("parameters", "BatchId")],
            "get": _operation("batch_failed_rows", "The rows not created, ready to fix and upload again",
                              "batches",
                              {**_text("Header `name,address,phone,error`.", "text/csv", headers=_CSV_HEADERS),
                               **_errors(401, 404, *STORE)}),
        },
        "/hospitals/bulk/{batch_id}/rows/{row}": {
            "parameters": [_ref("parameters", "BatchId"), _ref("parameters", "Row")],
            "patch": _operation(
                "fix_batch_row", "Fix a failed row", "batches",
                {**_ok("The batch document, with the row's new values.", "BatchDocument"),
                 **_errors(400, 401, 404, 409, 413, 422, *STORE)},
                description="Only a `failed` row of a batch at rest can change (`409` otherwise); "
                            "a later resume creates it with its new values. The body is at most 64 KiB (`413`); "
                            "one that is not a JSON object, however nested, is a `400`.",
                body={"required": True, "content": _json_content(_ref("schemas", "RowFix"))}),
        },
    }


def _import_paths() -> Json:
    upload = _upload_body("The CSV in the multipart field `file`, up to BULKPROC_MAX_IMPORT_ROWS rows.")
    one = [_ref("parameters", "ImportId")]
    return {
        "/hospitals/imports": {
            "post": _operation("create_import", "Import a file of any size", "imports",
                               {**_ok("Accepted: the import document.", "ImportDocument", status=202,
                                      headers=("Location",), links=IMPORT_LINKS),
                                **_errors(400, 401, 413, 422, *UPSTREAM)},
                               description="Split in order into batches of at most BULKPROC_MAX_ROWS rows.",
                               body=upload),
            "get": _operation("list_imports", "Recent imports, newest first", "imports",
                              {**_ok("The imports.", "ImportList"), **_errors(400, 401, *STORE)},
                              parameters=("Limit",)),
        },
        "/hospitals/imports/validate": {
            "post": _operation("validate_import", "Check an import's CSV without creating anything", "imports",
                               {**_ok("The verdict.", "Validation"), **_errors(400, 401, 413, *UPSTREAM)},
                               description="Calls the upstream only with `existing=skip`.", body=upload),
        },
        "/hospitals/imports/{import_id}": {
            "parameters": one,
            "get": _operation("get_import", "Progress of an import", "imports",
                              {**_ok("The import as it stands.", "ImportDocument"), **_errors(401, 404, *STORE)}),
            "delete": _operation("roll_back_import", "Roll back every batch of an import", "imports",
                                 {**_ok("Rolled back.", "ImportDocument"), **_errors(401, 404, 409, *UPSTREAM)}),
        },
        "/hospitals/imports/{import_id}/events": {
            "parameters": one,
            "get": _operation("import_events", "Live progress of an import", "imports",
                              {**_events("ImportDocument"), **_errors(401, 404, *STORE)}),
        },
        "/hospitals/imports/{import_id}/cancel": {
            "parameters": one,
            "post": _operation("cancel_import", "Start no further row", "imports",
                               {**_ok("Cancelled: rows in flight finish, rows not started read `cancelled`.",
                                      "ImportDocument"), **_errors(401, 404, 409, *STORE)}),
        },
        "/hospitals/imports/{import_id}/resume": {
            "parameters": one,
            "post": _operation("resume_import", "Resume every unfinished batch", "imports",
                               {**_ok("Resumed.", "ImportDocument"),
                                **_ok("Accepted: resuming in the background.", "ImportDocument", status=202,
                                      headers=("Location",)),
                                **_errors(401, 404, 409, *UPSTREAM)}),
        },
        "/hospitals/imports/{import_id}/activate": {
            "parameters": one,
            "post": _operation("activate_import", "Finish every partly failed batch without its failed rows",
                               "imports",
                               {**_ok("Completed already: nothing to do.", "ImportDocument"),
                                **_ok("Accepted: finishing in the background; the import then reads "
                                      "`partially_activated`.", "ImportDocument", status=202,
                                      headers=("Location",)),
                                **_errors(401, 404, 409, *STORE)},
                               description="Does what `POST /hospitals/bulk/{batch_id}/activate` does for "
                                           "each of its batches that needs it. `409` while it runs, when "
                                           "nothing of it exists upstream, once it is `partially_activated`, "
                                           "or after a rollback."),
        },
        "/hospitals/imports/{import_id}/results.csv": {
            "parameters": one,
            "get": _operation("import_results", "Every row of an import as CSV", "imports",
                              {**_text("As a batch's results.csv, every batch in order.", "text/csv",
                                       headers=_CSV_HEADERS), **_errors(401, 404, *STORE)}),
        },
        "/hospitals/imports/{import_id}/failed.csv": {
            "parameters": one,
            "get": _operation("import_failed_rows", "The rows of an import not created", "imports",
                              {**_text("As a batch's failed.csv.", "text/csv", headers=_CSV_HEADERS),
                               **_errors(401, 404, *STORE)}),
        },
    }


# The Standard Webhooks headers of every announcement.
_WEBHOOK_HEADERS = (
    ("webhook-id", "The event's id, the same on every retry: a receiver can drop repeats."),
    ("webhook-timestamp", "Seconds since the epoch when this attempt was signed."),
    ("webhook-signature", "`v1,<base64 HMAC-SHA256 of id.timestamp.body>` with the BULKPROC_WEBHOOK_SECRET key."),
)


def _webhook(operation_id: str, summary: str, schema_name: str) -> Json:
    """A POST the service sends to BULKPROC_WEBHOOK_URL."""
    operation = _operation(
        operation_id, summary, "webhooks",
        {"2XX": {"description": "Delivered."},
         "410": {"description": "Gone: the event is not sent again."},
         "default": {"description": "Tried again later, backing off from seconds to hours, for about three days."}},
        body={"required": True, "content": _json_content(_ref("schemas", schema_name))})
    operation["parameters"] = [{"name": name, "in": "header", "required": True, "schema": {"type": "string"},
                                "description": text} for name, text in _WEBHOOK_HEADERS]
    return {"post": operation}


WEBHOOKS: Json = {
    "batch.finished": _webhook("batch_finished", "A batch reached a final state", "BatchFinished"),
    "import.finished": _webhook("import_finished", "An import reached a final state", "ImportFinished"),
}


def _open_paths() -> Json:
    return {
        "/": {"get": _operation("upload_page", "The upload page", "service",
                                _text("An HTML form to check and upload a CSV.", "text/html"))},
        "/hospitals/template.csv": {"get": _operation(
            "template_csv", "A file to start from: the header and two example rows", "service",
            _text("Header `name,address,phone` and two hospitals.", "text/csv", headers=_CSV_HEADERS))},
        "/healthz": {"get": _operation("healthz", "Liveness", "service", _ok("Alive.", "Health"))},
        "/readyz": {"get": _operation("readyz", "Readiness: does the job store answer?", "service",
                                      {**_ok("Ready.", "Ready"), **_errors(503)})},
        "/metrics": {"get": _operation("metrics", "Prometheus metrics, summed over every worker", "service",
                                       {**_text("Prometheus text exposition format.", "text/plain"), **_errors(401)},
                                       description="With BULKPROC_METRICS_TOKEN set, it needs "
                                                   "`Authorization: Bearer <that token>`; the API token does not open it.")},
        "/openapi.json": {"get": _operation("openapi", "This document", "service",
                                            {"200": {"description": "OpenAPI 3.1.",
                                                     "content": _json_content({"type": "object"})}})},
        "/docs": {"get": _operation("docs", "An interactive explorer of this document", "service",
                                    _text("Swagger UI, served entirely by the service.", "text/html"))},
    }


def document(*, token_required: bool = False) -> Json:
    """The OpenAPI document; with `token_required`, the protected operations require the bearer token."""
    paths = {**_open_paths(), **_batch_paths(), **_import_paths()}
    # Without a token the operations are open: an empty requirement says "or nothing at all".
    security = [{"bearerAuth": []}] if token_required else [{"bearerAuth": []}, {}]
    for path, item in paths.items():
        if path.startswith(PROTECTED_PREFIXES):
            for key, operation in item.items():
                if key != "parameters":
                    operation["security"] = security
        else:
            for key, operation in item.items():
                operation["security"] = []
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "bulkproc: Hospital Bulk Processor", "version": "1.0.0",
                 "description": "Bulk creation of hospitals in the Hospital Directory from CSV files. "
                                "Every error answers `{\"error\", \"details\": [{\"row\", \"column\", "
                                "\"message\"}]}`."},
        "tags": [{"name": "batches", "description": "Up to BULKPROC_MAX_ROWS rows at once."},
                 {"name": "imports", "description": "Files of any size, split into batches."},
                 {"name": "service", "description": "Open to everyone, token or not."},
                 {"name": "webhooks", "description": "What the service POSTs to BULKPROC_WEBHOOK_URL."}],
        "paths": paths,
        "webhooks": WEBHOOKS,
        "components": {"schemas": _schemas(), "parameters": PARAMETERS, "headers": HEADERS,
                       "responses": RESPONSES, "links": LINKS,
                       "securitySchemes": {"bearerAuth": {
                           "type": "http", "scheme": "bearer",
                           "description": "BULKPROC_API_TOKEN, when the service has one."}}},
    }
