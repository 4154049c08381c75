"""How an exchange with the upstream failed, read off the requests exception or the answer."""

from __future__ import annotations

import requests
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError


def never_connected(exc: requests.ConnectionError) -> bool:
    """True when the connection was never established, so the request cannot have been seen."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError, NameResolutionError))


def failure_kind(exc: requests.RequestException) -> str:
    """How an exchange failed, as /metrics labels it in place of an HTTP status."""
    if isinstance(exc, requests.ConnectionError) and never_connected(exc):
        return "connect_error"
    if isinstance(exc, requests.Timeout):
        return "timeout"
    if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        return "connection_error"
    return "error"


def message(response: requests.Response) -> str:
    """The upstream's own words from an error body, whatever its shape."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    detail = body.get("detail", body.get("error")) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                         for d in detail if isinstance(d, dict)) or str(detail)
    return str(detail)

