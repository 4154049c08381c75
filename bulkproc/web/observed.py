"""What operators see of the HTTP face: requests counted and timed by route template, and /metrics's token."""

from __future__ import annotations

import time

from flask import Flask, Response, current_app, g, request

from .. import metrics
from ..errors import TokenRequired
from .auth import token_matches

METRICS_ENDPOINT = "pages.metrics_text"


def register(app: Flask) -> None:
    """Count every answered request in /metrics, and make /metrics need BULKPROC_METRICS_TOKEN when set."""

    @app.before_request
    def start_clock() -> None:
        g.observed_since = time.monotonic()
        if request.endpoint == METRICS_ENDPOINT:
            require_metrics_token()

    @app.after_request
    def count_request(response: Response) -> Response:
        started = g.get("observed_since", time.monotonic())
        # The rule's template (`/hospitals/bulk/<batch_id>`), never the path: one series per route.
        route = request.url_rule.rule if request.url_rule is not None else None
        metrics.observe_http(request.method, route, response.status_code, time.monotonic() - started)
        return response


def require_metrics_token() -> None:
    """Refuse the request with TokenRequired when a metrics token is configured and not sent."""
    token = current_app.config.get("METRICS_TOKEN")
    if token and not token_matches(request.headers.get("Authorization", ""), token):
        raise TokenRequired("Send the metrics token as 'Authorization: Bearer <token>'.")
