"""What both API blueprints read from a request alike, and answer alike: the upload and its key,
a listing's limit, a validation, and CSV files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from flask import Response, request

from ..errors import MalformedRequest
from ..files.rules import Inspection

MAX_LIST_LIMIT = 100
# The contract: no answer about a refused file exceeds 64 KiB; its rows are left out when they would.
MAX_REFUSAL_BYTES = 64 * 1024


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
        raise MalformedRequest("existing must be 'create' (every row is created) or 'skip' (rows already "
                               "in the directory are not).",
                               [{"row": None, "column": "existing", "message": f"{choice[:20]!r} is not allowed."}])
    return choice


def upload_fingerprint(data: bytes, existing: str) -> str:
    """What an Idempotency-Key is bound to: the file, and `existing` when it is not the default, so
    that the same key with another `existing` is another request (422) rather than a repeat."""
    digest = hashlib.sha256(data)
    if existing != "create":
        digest.update(f"\0existing={existing}".encode())
    return digest.hexdigest()


def mark_in_directory(document: dict[str, Any], found: dict[int, int] | None) -> dict[str, Any]:
    """A validation answer whose rows each say `already_in_directory` (the hospital id, or null); as it
    is when the directory was not asked (`found` None)."""
    if found is not None:
        for hospital in document["hospitals"]:
            hospital["already_in_directory"] = found.get(hospital["row"])
    return document


def list_limit(default: int = 20) -> int:
    """A listing's `?limit=`, 1 to MAX_LIST_LIMIT, or MalformedRequest."""
    text = request.args.get("limit", str(default))
    # str.isdigit() also takes "²" and other digits int() refuses, and int() refuses over 4300 digits.
    if not (text.isascii() and text.isdigit() and len(text) <= 3) or not 1 <= int(text) <= MAX_LIST_LIMIT:
        raise MalformedRequest(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}.",
                               [{"row": None, "column": "limit", "message": f"{text[:20]!r} is not allowed."}])
    return int(text)


def validation_document(inspection: Inspection) -> dict[str, Any]:
    """The answer of a validation: every data row counted, the problems, and the rows as they would be created."""
    document = {
        "valid": inspection.valid,
        "total_hospitals": inspection.total,
        "errors": [p.as_dict() for p in inspection.problems],
        "hospitals": [{"row": r.row, "name": r.name, "address": r.address, "phone": r.phone}
                      for r in inspection.rows],
    }
    if not inspection.valid and len(json.dumps(document)) > MAX_REFUSAL_BYTES:
        document["hospitals"] = []
    return document


def csv_file(lines: Iterator[str], filename: str) -> Response:
    """A text/csv download of `lines`, streamed."""
    return Response(lines, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
