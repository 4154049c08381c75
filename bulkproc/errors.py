"""The ApiError family and the handlers that render every failure as one JSON shape."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A failure the client should see: a status, one sentence, and optional details."""

    status = 400

    def __init__(self, message: str, details: list[dict] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class BatchNotFound(ApiError):
    status = 404

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"No batch with id {batch_id!r}.")


class BatchConflict(ApiError):
    status = 409


class CsvRefused(ApiError):
    status = 422


class UpstreamUnavailable(ApiError):
    status = 502


class TooManyStreams(ApiError):
    status = 503


# Headers that go with a status: how to authenticate (RFC 6750), when to come back.
HEADERS: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": 'Bearer realm="bulkproc"'},
    503: {"Retry-After": "5"},
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

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return jsonify(error_body(exc.message, exc.details)), exc.status, HEADERS.get(exc.status, {})

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
