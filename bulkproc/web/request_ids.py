"""X-Request-ID: taken from the request when usable or made, returned on every response, and carried into
the log lines of the request and of the batch work it starts."""

from __future__ import annotations

import uuid

from flask import Flask, Response, g, request

from .. import logs

HEADER = "X-Request-ID"
MAX_LENGTH = 200


def request_id(given: str | None) -> str:
    """The client's request id when it is 1-200 printable characters, else a new one (uuid4 hex)."""
    if given and len(given) <= MAX_LENGTH and given.isprintable():
        return given
    return uuid.uuid4().hex


def register(app: Flask) -> None:
    """Give every request an id, in its log context and in its response's X-Request-ID header."""

    @app.before_request
    def take_request_id() -> None:
        g.request_id = request_id(request.headers.get(HEADER))
        g.request_id_token = logs.current_request.set(g.request_id)

    @app.after_request
    def return_request_id(response: Response) -> Response:
        if "request_id" not in g:  # a failure before any before_request function ran
            g.request_id = request_id(request.headers.get(HEADER))
        response.headers[HEADER] = g.request_id
        return response

    @app.teardown_request
    def forget_request_id(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            logs.current_request.reset(token)
