"""The one table from domain exceptions to HTTP statuses, and the handlers that render every failure as JSON."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .csv_input import CsvRejected
from .exceptions import (
    BatchConflict, BatchNotFound, DomainError, IdempotencyMismatch, MalformedRequest, TokenRequired,
    UpstreamUnavailable,
)

log = logging.getLogger(__name__)

STATUSES: dict[type[Exception], int] = {
    MalformedRequest: 400,
    TokenRequired: 401,
    BatchNotFound: 404,
    BatchConflict: 409,
    CsvRejected: 422,
    IdempotencyMismatch: 422,
    UpstreamUnavailable: 502,
}


def error_body(message: str, details: list[dict] | None = None) -> dict:
    """The contract's error document."""
    return {"error": message, "details": details or []}


def _http_message(exc: HTTPException) -> str:
    if isinstance(exc, RequestEntityTooLarge):
        return "The upload is too large."
    if exc.code == 404:
        return "There is nothing at this address."
    if exc.code == 405:
        return "This address does not accept that method."
    return exc.description or exc.name


def register(app: Flask) -> None:
    """Install handlers so that every error, expected or not, answers JSON without internals."""

    def domain_error(exc: DomainError | CsvRejected):
        status = next(code for kind, code in STATUSES.items() if isinstance(exc, kind))
        return jsonify(error_body(exc.message, exc.details)), status

    for exception in STATUSES:
        app.register_error_handler(exception, domain_error)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        response = jsonify(error_body(_http_message(exc)))
        response.status_code = exc.code or 500
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return jsonify(error_body("Something went wrong on our side; the error is logged.")), 500
