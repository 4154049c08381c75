"""What both API blueprints read from a request alike, and answer alike: the upload, how to read it
and its key, a listing's limit, a JSON body, a document, a validation, and CSV files."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from flask import Response, jsonify, request
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError
from werkzeug.exceptions import RequestEntityTooLarge

from ..contract import Validation
from ..errors import MalformedRequest
from ..files.headers import FIELDS, IGNORE
from ..files.problems import MAX_LISTED_PROBLEMS, quoted
from ..files.reading import ReadOptions
from ..files.rules import HospitalRow, Inspection
from ..files.text import charset, unknown_encoding_message

MAX_LIST_LIMIT = 100
# The contract: no answer about a refused file exceeds 64 KiB; its rows are left out when they would.
MAX_REFUSAL_BYTES = 64 * 1024
# The contract: a JSON body over 64 KiB is refused with 413.
MAX_JSON_BODY_BYTES = 64 * 1024
# A fix is a flat object; anything deeper is refused before the parser can recurse into it.
MAX_JSON_DEPTH = 32
MAX_FIELD_CHARACTERS = 200
MAX_COLUMNS_FIELD_BYTES = 16 * 1024
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Outside strings, a bracket opens or closes a level; a string (with its escapes) is skipped whole.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def uploaded_csv() -> bytes:
    """The bytes of the `file` part of a multipart request, or MalformedRequest."""
    if request.mimetype != "multipart/form-data":
        raise MalformedRequest("Send the CSV as multipart/form-data in a field named 'file' "
                               "(curl -F file=@hospitals.csv).")
    upload = request.files.get("file")
    if upload is None:
        raise MalformedRequest("The request has no 'file' part; send the CSV in a field named 'file'.")
    if not upload.filename:
        raise MalformedRequest("The 'file' part has no file name; choose a CSV file to upload.")
    return upload.read()


def read_options() -> ReadOptions:
    """How the form says to read the upload (`encoding`, `sheet`, `columns`), or MalformedRequest naming the field."""
    encoding = _form_text("encoding")
    if encoding is not None and charset(encoding) is None:
        raise _bad_field("encoding", unknown_encoding_message(encoding))
    columns_text = _form_text("columns", MAX_COLUMNS_FIELD_BYTES)
    return ReadOptions(encoding=encoding, sheet=_form_text("sheet"),
                       columns=None if columns_text is None else _columns(columns_text))


def _form_text(name: str, limit: int = MAX_FIELD_CHARACTERS) -> str | None:
    """A form (or query) field's text, None when absent or blank."""
    value = request.values.get(name)
    if value is None or not value.strip():
        return None
    if len(value) > limit or (name != "columns" and _CONTROL.search(value)):
        raise _bad_field(name, f"The {name} field must be at most {limit} printable characters.")
    return value.strip() if name != "columns" else value


def _columns(text: str) -> dict[str, str]:
    example = '{"Facility": "name", "Street": "address", "Notes": "ignore"}'
    value = parse_json(text.encode(), what="The columns field")
    if not isinstance(value, dict) or not all(isinstance(target, str) for target in value.values()):
        raise _bad_field("columns", f"The columns field must be a JSON object from header cell to field, such as {example}.")
    if len(value) > MAX_LISTED_PROBLEMS:
        raise _bad_field("columns", f"The columns field may name at most {MAX_LISTED_PROBLEMS} columns.")
    unknown = next((target for target in value.values() if target not in (*FIELDS, IGNORE)), None)
    if unknown is not None:
        raise _bad_field("columns", f"The columns field maps a column to {quoted(unknown)}, which is not a field; "
                                    f"use one of {', '.join(FIELDS)} or {IGNORE}.")
    return value


def _bad_field(name: str, message: str) -> MalformedRequest:
    return MalformedRequest(f"The form field {name} cannot be used.", [{"row": None, "column": name, "message": message}])


def json_object_body() -> dict[str, Any]:
    """The request's body as one JSON object: 413 over 64 KiB, MalformedRequest when it is anything else."""
    value = parse_json(_body_at_most(MAX_JSON_BODY_BYTES), what="The body")
    if not isinstance(value, dict):
        raise MalformedRequest('The body must be a JSON object, such as {"phone": "555-0100"}.',
                               [{"row": None, "column": None, "message": f"The body is a JSON {_kind(value)}."}])
    return value


def _body_at_most(limit: int) -> bytes:
    """The request body; RequestEntityTooLarge (413, stating `limit`) when it is longer, chunked or not."""
    # Werkzeug refuses a longer Content-Length at once, but stops a chunked body at the limit without
    # a word: reading one byte more is how a longer one shows. Nothing past that byte is read.
    request.max_content_length = limit + 1
    try:
        data = request.get_data(cache=False)
        if len(data) > limit:
            raise RequestEntityTooLarge()
    except RequestEntityTooLarge:
        request.max_content_length = limit  # the answer states this limit
        raise
    return data


def parse_json(data: bytes, *, what: str) -> Any:
    """Parse JSON text so that no input can raise past this (deep nesting, huge numbers, lone surrogates
    are values or MalformedRequest); numbers come back as Decimal, duplicate keys are refused."""
    hint = 'send a JSON object such as {"phone": "555-0100"} with Content-Type: application/json.'
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest(f"{what} is not JSON in UTF-8; {hint}") from None
    if _depth(text) > MAX_JSON_DEPTH:
        raise MalformedRequest(f"{what} is not JSON this service reads: it nests more than {MAX_JSON_DEPTH} levels deep.")
    try:
        return json.loads(text, parse_int=Decimal, parse_float=Decimal, parse_constant=Decimal,
                          object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise MalformedRequest(f"{what} names the field {quoted(exc.key)} twice; send it once.") from None
    except (ValueError, RecursionError):
        raise MalformedRequest(f"{what} is not JSON; {hint}") from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKey(key)
        found[key] = value
    return found


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text, in one linear pass."""
    depth = deepest = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    return "null" if value is None else "number" if isinstance(value, Decimal) else "value"


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header, if any; MalformedRequest when it is not 1-200 printable characters."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 200 or not key.isprintable():
        raise MalformedRequest("The Idempotency-Key header must be 1 to 200 printable characters.")
    return key


EXISTING_CHOICES = ("create", "skip")


def existing_choice() -> str:
    """The form (or query) field `existing`: `create` (the default) or `skip`; MalformedRequest otherwise."""
    choice = request.values.get("existing", "create").strip().lower() or "create"
    if choice not in EXISTING_CHOICES:
        raise _not_allowed("existing", choice, "existing must be 'create' (every row is created) or 'skip' "
                                               "(rows already in the directory are not).")
    return choice


def upload_fingerprint(data: bytes, existing: str, options: ReadOptions) -> str:
    """What an Idempotency-Key is bound to: the file, how it is read (`encoding`, `sheet`, `columns`)
    and `existing` when they are not the defaults, so that the same key with other choices is
    another request (422) rather than a repeat."""
    digest = hashlib.sha256(data)
    if existing != "create":
        digest.update(f"\0existing={existing}".encode())
    if options != ReadOptions():
        choices = {"encoding": options.encoding, "sheet": options.sheet, "columns": options.columns}
        digest.update(b"\0read=" + json.dumps(choices, sort_keys=True).encode())
    return digest.hexdigest()


def list_limit(default: int = 20) -> int:
    """A listing's `?limit=`, 1 to MAX_LIST_LIMIT, or MalformedRequest."""
    text = request.args.get("limit", str(default))
    # str.isdigit() also takes "²" and other digits int() refuses, and int() refuses over 4300 digits.
    if not (text.isascii() and text.isdigit() and len(text) <= 3) or not 1 <= int(text) <= MAX_LIST_LIMIT:
        raise _not_allowed("limit", text, f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}.")
    return int(text)


def query_flag(name: str) -> bool:
    """A yes-or-no `?name=` of a listing: `true` or `false` (the default), or MalformedRequest."""
    text = request.args.get(name, "false")
    if text not in ("true", "false"):
        raise _not_allowed(name, text, f"{name} must be true or false.")
    return text == "true"


def _not_allowed(name: str, value: str, rule: str) -> MalformedRequest:
    """A refused field or parameter: its rule, and the value (cut short) it was given."""
    return MalformedRequest(rule, [{"row": None, "column": name, "message": f"{value[:20]!r} is not allowed."}])


def validation_document(inspection: Inspection, found: dict[int, int] | None) -> Validation:
    """The answer of a validation: every data row counted, the problems, the rows as they would be
    created (each saying `already_in_directory`, the hospital id or null, when the directory was
    asked: `found` not None), and how the file was read."""
    document = Validation(valid=inspection.valid, total_hospitals=inspection.total,
                          errors=[p.as_dict() for p in inspection.problems],
                          hospitals=[_validation_row(r, found) for r in inspection.rows], file=inspection.file)
    if not inspection.valid and len(json.dumps(document.model_dump(mode="json"))) > MAX_REFUSAL_BYTES:
        document = document.model_copy(update={"hospitals": []})
    return document


def _validation_row(row: HospitalRow, found: dict[int, int] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"row": row.row, "name": row.name, "address": row.address, "phone": row.phone}
    if found is not None:
        fields["already_in_directory"] = found.get(row.row)
    return fields


def answer(document: BaseModel, status: int = 200) -> Response:
    """A JSON response of one of the contract's documents."""
    try:
        # Written by the model itself, as jsonify writes it (ASCII, compact, a newline): through a dict and
        # json.dumps, an import's document at 10,000 rows held ~1 MB of pieces, at every read of it.
        body = document.model_dump_json(ensure_ascii=True) + "\n"
    except PydanticSerializationError:
        # A lone surrogate (a hostile body's, echoed in its refusal), which pydantic does not write and
        # json.dumps escapes.
        response = jsonify(document.model_dump(mode="json"))
        response.status_code = status
        return response
    return Response(body, status=status, mimetype="application/json")


def csv_file(lines: Iterator[str], filename: str) -> Response:
    """A text/csv download of `lines`, streamed."""
    return Response(lines, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
