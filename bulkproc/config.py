"""Turn the environment into typed settings; a bad value names its variable."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_UPSTREAM = "https://hospital-directory.onrender.com"
# The upstream's cap on the rows of one batch: a larger MAX_ROWS would race past it.
UPSTREAM_BATCH_CAP = 20
MIN_TOKEN_LENGTH = 16
# Creations in flight at once when no create-rate limit paces them.
UNLIMITED_CONCURRENCY = 20


class ConfigError(ValueError):
    """A configuration variable holds a value bulkproc cannot use."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError
    return value


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError
    return text.rstrip("/")


def _rate(text: str) -> tuple[int, float] | None:
    """Parse `N/S` (N requests in any S seconds) or `0` (no limit)."""
    if text.strip() == "0":
        return None
    count, _, seconds = text.partition("/")
    return _positive_int(count), _positive_float(seconds)


def _batch_rows(text: str) -> int:
    value = _positive_int(text)
    if value > UPSTREAM_BATCH_CAP:
        raise ValueError
    return value


def _database_url(text: str) -> str:
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError from None
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql", "postgres"):
        raise ValueError
    # libpq would quietly try a local socket: a URL without a host is a mistake, not a choice.
    if backend != "sqlite" and not (url.host or url.query.get("host")):
        raise ValueError
    if backend == "sqlite" and not url.database:
        raise ValueError  # an in-memory store would lose every batch, and each worker has its own
    return text


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


def _token(text: str) -> str:
    # Blank is refused, never read as "no token": an unset variable is the only way to have none.
    if len(text) < MIN_TOKEN_LENGTH or any(c.isspace() for c in text):
        raise ValueError
    return text


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError
    return value


def _webhook_secret(text: str) -> str:
    """A Standard Webhooks secret: `whsec_` and the key in base64 (padding optional, as its libraries read it)."""
    key = text.removeprefix("whsec_")
    if key == text or not key:
        raise ValueError
    try:
        base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
    except binascii.Error:
        raise ValueError from None
    return text


def _log_format(text: str) -> str:
    if text.lower() not in ("text", "json"):
        raise ValueError
    return text.lower()


# variable -> (default text, parser, what a good value looks like); the app.config key is the
# variable without its BULKPROC_ prefix.
VARIABLES: dict[str, tuple[str | None, Callable[[str], Any], str]] = {
    "HOSPITAL_API_BASE_URL": (DEFAULT_UPSTREAM, _url, "an http(s) URL"),
    "DATABASE_URL": (None, _database_url, "sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DATABASE"),
    "BULKPROC_MAX_ROWS": ("20", _batch_rows, "a whole number from 1 to 20 (the upstream's batch cap)"),
    "BULKPROC_MAX_UPLOAD_BYTES": ("1048576", _positive_int, "a whole number of bytes"),
    # Unset: the create rate's N, so that one window's creations go at once; 20 with no limiter.
    "BULKPROC_CONCURRENCY": (None, _positive_int, "a whole number of at least 1"),
    "BULKPROC_CREATE_RATE": ("30/60", _rate, "N/S, such as 30/60, or 0 for no limit"),
    "BULKPROC_READ_RATE": ("50/60", _rate, "N/S, such as 50/60, or 0 for no limit"),
    "BULKPROC_CONNECT_TIMEOUT": ("5", _positive_float, "a number of seconds above 0"),
    "BULKPROC_READ_TIMEOUT": ("90", _positive_float, "a number of seconds above 0"),
    "BULKPROC_MAX_ATTEMPTS": ("5", _positive_int, "a whole number of at least 1"),
    "BULKPROC_LEASE_SECONDS": ("10", _positive_float, "a number of seconds above 0"),
    "BULKPROC_API_TOKEN": (None, _token, "at least 16 characters without spaces (unset it for no token)"),
    "BULKPROC_OUTAGE_GRACE": ("120", _non_negative_float, "a number of seconds, 0 or more"),
    "BULKPROC_MAX_IMPORT_ROWS": ("1000", _positive_int, "a whole number of at least 1"),
    "BULKPROC_MAX_STREAMS": ("8", _count, "a whole number (0 refuses every event stream)"),
    "BULKPROC_LOG_FORMAT": ("text", _log_format, "text or json"),
    "BULKPROC_STORE_WAIT": ("30", _non_negative_float, "a number of seconds, 0 or more"),
    "BULKPROC_METRICS_TOKEN": (None, _token, "at least 16 characters without spaces (unset it for open metrics)"),
    "BULKPROC_WEBHOOK_URL": (None, _url, "an http(s) URL"),
    "BULKPROC_WEBHOOK_SECRET": (None, _webhook_secret, "whsec_ followed by a base64 key"),
    "WEB_CONCURRENCY": ("2", _positive_int, "a whole number of at least 1"),
    "GUNICORN_THREADS": ("16", _positive_int, "a whole number of at least 1"),
    "PORT": ("8000", _port, "a port number from 1 to 65535"),
    # Beyond the contract's table: tuning that rarely needs touching.
    "BULKPROC_BATCH_DEADLINE": ("900", _positive_float, "a number of seconds above 0"),
    "BULKPROC_WAKE_TIMEOUT": ("90", _positive_float, "a number of seconds above 0"),
    "BULKPROC_BACKOFF_SECONDS": ("0.5", _positive_float, "a number of seconds above 0"),
    "BULKPROC_RATE_LIMIT_PAUSE": ("60", _positive_float, "a number of seconds above 0"),
}


# Their values never reach a log line: a refusal says how long the value was instead.
SECRETS = {"BULKPROC_API_TOKEN", "BULKPROC_METRICS_TOKEN", "BULKPROC_WEBHOOK_SECRET"}


def _shown(variable: str, text: str) -> str:
    """`variable` and its value as a refusal shows them: secrets by length, passwords masked."""
    if variable in SECRETS:
        return f"{variable} ({len(text)} characters{', blank' if not text.strip() else ''})"
    if variable == "DATABASE_URL":
        try:
            text = make_url(text).render_as_string(hide_password=True)
        except ArgumentError:
            pass
    return f"{variable}={text!r}"


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read every setting from `environ` (default: os.environ); raise ConfigError naming a bad variable."""
    environ = os.environ if environ is None else environ
    settings: dict[str, Any] = {}
    for variable, (default, parse, expected) in VARIABLES.items():
        key = variable.removeprefix("BULKPROC_")
        text = environ.get(variable, default)
        if text is None:
            settings[key] = None
            continue
        try:
            settings[key] = parse(text.strip())
        except ValueError:
            raise ConfigError(f"{_shown(variable, text)} is not valid: expected {expected}") from None
    if settings["CONCURRENCY"] is None:
        settings["CONCURRENCY"] = settings["CREATE_RATE"][0] if settings["CREATE_RATE"] else UNLIMITED_CONCURRENCY
    _check_together(settings, environ)
    return settings


def _check_together(settings: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Raise ConfigError for settings that are good alone but not with each other."""
    streams, threads = settings["MAX_STREAMS"], settings["GUNICORN_THREADS"]
    if streams >= threads:
        raise ConfigError(f"BULKPROC_MAX_STREAMS={environ.get('BULKPROC_MAX_STREAMS', '8')!r} is not valid: "
                          f"expected fewer than GUNICORN_THREADS ({threads}), so that threads stay free "
                          f"for everything but event streams")
    if (settings["WEBHOOK_URL"] is None) != (settings["WEBHOOK_SECRET"] is None):
        given, missing = (("URL", "SECRET") if settings["WEBHOOK_SECRET"] is None else ("SECRET", "URL"))
        raise ConfigError(f"BULKPROC_WEBHOOK_{missing} is not set: expected it with BULKPROC_WEBHOOK_{given}")
