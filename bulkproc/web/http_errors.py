"""The one table from domain exceptions to HTTP statuses, and the handlers that render every failure as JSON."""

from __future__ import annotations

import logging

from flask import Flask, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..contract import Error, ErrorDetail
from ..errors import (
    BatchConflict,
    BatchNotFound,
    DomainError,
    IdempotencyMismatch,
    ImportNotFound,
    MalformedRequest,
    RowRefused,
    StoreRefusedValue,
    StoreUnavailable,
    TokenRequired,
    TooManyStreams,
    UpstreamUnavailable,
)
from ..files.rules import CsvRejected
from ..logs import in_batch_context
from .requests import answer

log = logging.getLogger(__name__)

STATUSES: dict[type[Exception], int] = {
    MalformedRequest: 400,
    TokenRequired: 401,
    BatchNotFound: 404,
    ImportNotFound: 404,
    BatchConflict: 409,
    CsvRejected: 422,
    IdempotencyMismatch: 422,
    RowRefused: 422,
    StoreRefusedValue: 422,
    UpstreamUnavailable: 502,
    TooManyStreams: 503,
    StoreUnavailable: 503,
}

# Headers that go with a status: how to authenticate (RFC 6750), when to come back.
HEADERS: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": 'Bearer realm="bulkproc"'},
    503: {"Retry-After": "5"},
}


def error_document(message: str, details: list[dict] | None = None) -> Error:
    """The contract's error document; built, not validated: an error must always be answerable."""
    return Error.model_construct(error=message, details=[ErrorDetail.model_construct(**d) for d in details or []])


def _size(limit: int) -> str:
    """A byte count as people read it: `1048576 bytes (1 MiB)`."""
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if limit >= scale:
            return f"{limit} bytes ({limit / scale:.3g} {unit})"
    return f"{limit} bytes"


def _http_message(exc: HTTPException) -> str:
    if isinstance(exc, RequestEntityTooLarge):
        return f"The upload is too large: the limit is {_size(request.max_content_length or 0)}."
    if exc.code == 404:
        return "There is nothing at this address."
    if exc.code == 405:
        return "This address does not accept that method."
    return exc.description or exc.name


def _store_failure(exc: StoreUnavailable) -> StoreUnavailable:
    """The failure naming its batch (from the address when the exception does not), logged with it."""
    batch_id = exc.batch_id or (request.view_args or {}).get("batch_id")
    if batch_id and not exc.batch_id:
        exc = exc.about(batch_id)
    in_batch_context(batch_id or "-", log.error)("answered 503: the job store is unavailable (%s)", exc.reason)
    return exc


def register(app: Flask) -> None:
    """Install handlers so that every error, expected or not, answers JSON without internals."""

    def domain_error(exc: DomainError | CsvRejected):
        status = next(code for kind, code in STATUSES.items() if isinstance(exc, kind))
        if isinstance(exc, StoreUnavailable):
            exc = _store_failure(exc)
        response = answer(error_document(exc.message, exc.details), status)
        response.headers.update(HEADERS.get(status, {}))
        return response

    for exception in STATUSES:
        app.register_error_handler(exception, domain_error)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        response = answer(error_document(_http_message(exc)), exc.code or 500)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return answer(error_document("Something went wrong on our side; the error is logged."), 500)
