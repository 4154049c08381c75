"""How an exchange with the upstream failed, read off the requests exception or the answer, and
how an answer is checked to be the JSON its call expects."""

from __future__ import annotations

import re
from typing import Any

import requests
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError


def never_connected(exc: requests.ConnectionError) -> bool:
    """True when the connection was never established, so the request cannot have been seen."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError, NameResolutionError))


def not_connected_reason(exc: requests.ConnectionError) -> str:
    """Why a connection was never made, in words: a failed name lookup is not a refused connection."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, NameResolutionError):
        return f"could not look up the directory's host name ({reason._reason})"
    return f"could not connect to the directory ({type(exc).__name__})"


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



class Malformed(ValueError):
    """An answer that is not the JSON its call expects (wrong type, missing fields, not JSON at all)."""


def json_body(response: requests.Response) -> Any:
    """The answer's JSON; raises Malformed when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        raise Malformed(f"HTTP {response.status_code} with a body that is not JSON") from None


def as_id(value: object) -> int:
    """A hospital id as a number, whatever JSON type carries it ("7" and 7 are one id); raises Malformed."""
    if isinstance(value, bool):
        raise Malformed(f"the id {value!r} is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise Malformed(f"the id {value!r} is not a whole number")


def field(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """`data[name]` when it has the JSON type `kind`; raises Malformed."""
    value = data.get(name, _MISSING)
    if value is _MISSING:
        raise Malformed(f"no {name!r} in the answer")
    if not isinstance(value, kind):
        raise Malformed(f"{name!r} is {type(value).__name__}, not {_names(kind)}")
    return value


_MISSING = object()


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
