"""Turn the environment into typed settings; a bad value names its variable."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_UPSTREAM = "https://hospital-directory.onrender.com"
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


def _database_url(text: str) -> str:
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError from None
    if url.get_backend_name() not in ("sqlite", "postgresql", "postgres"):
        raise ValueError
    return text


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError
    return value


def _token(text: str) -> str | None:
    return text or None


def _log_format(text: str) -> str:
    if text.lower() not in ("text", "json"):
        raise ValueError
    return text.lower()


def _optional_url(text: str) -> str | None:
    return _url(text) if text else None


def _webhook_secret(text: str) -> str | None:
    """A Standard Webhooks secret: `whsec_` and the key in base64."""
    if not text:
        return None
    key = text.removeprefix("whsec_")
    # Padding is optional, as the Standard Webhooks libraries read it.
    if key == text or not base64.b64decode(key + "=" * (-len(key) % 4), validate=True):
        raise ValueError
    return text


# variable -> (default text, parser, what a good value looks like); the app.config key is the
# variable without its BULKPROC_ prefix.
VARIABLES: dict[str, tuple[str | None, Callable[[str], Any], str]] = {
    "HOSPITAL_API_BASE_URL": (DEFAULT_UPSTREAM, _url, "an http(s) URL"),
    "DATABASE_URL": (None, _database_url, "a sqlite:/// or postgresql:// URL"),
    "BULKPROC_MAX_ROWS": ("20", _positive_int, "a whole number of at least 1"),
    "BULKPROC_MAX_UPLOAD_BYTES": ("1048576", _positive_int, "a whole number of bytes"),
    # Unset: the create rate's N, so that one window's creations go at once; 20 with no limiter.
    "BULKPROC_CONCURRENCY": (None, _positive_int, "a whole number of at least 1"),
    "BULKPROC_CREATE_RATE": ("30/60", _rate, "N/S, such as 30/60, or 0 for no limit"),
    "BULKPROC_READ_RATE": ("50/60", _rate, "N/S, such as 50/60, or 0 for no limit"),
    "BULKPROC_CONNECT_TIMEOUT": ("5", _positive_float, "a number of seconds above 0"),
    "BULKPROC_READ_TIMEOUT": ("90", _positive_float, "a number of seconds above 0"),
    "BULKPROC_MAX_ATTEMPTS": ("5", _positive_int, "a whole number of at least 1"),
    "BULKPROC_LEASE_SECONDS": ("10", _positive_float, "a number of seconds above 0"),
    "BULKPROC_API_TOKEN": ("", _token, "any text"),
    "BULKPROC_OUTAGE_GRACE": ("120", _non_negative_float, "a number of seconds, 0 or more"),
    "BULKPROC_MAX_IMPORT_ROWS": ("1000", _positive_int, "a whole number of at least 1"),
    "BULKPROC_MAX_STREAMS": ("8", _count, "a whole number (0 refuses every event stream)"),
    "BULKPROC_LOG_FORMAT": ("text", _log_format, "text or json"),
    "BULKPROC_WEBHOOK_URL": ("", _optional_url, "an http(s) URL"),
    "BULKPROC_WEBHOOK_SECRET": ("", _webhook_secret, "whsec_ followed by the key in base64"),
    "WEB_CONCURRENCY": ("2", _positive_int, "a whole number of at least 1"),
    "GUNICORN_THREADS": ("16", _positive_int, "a whole number of at least 1"),
    # Beyond the contract's table: tuning that rarely needs touching.
    "BULKPROC_BATCH_DEADLINE": ("900", _positive_float, "a number of seconds above 0"),
    "BULKPROC_WAKE_TIMEOUT": ("90", _positive_float, "a number of seconds above 0"),
    "BULKPROC_BACKOFF_SECONDS": ("0.5", _positive_float, "a number of seconds above 0"),
    "BULKPROC_RATE_LIMIT_PAUSE": ("60", _positive_float, "a number of seconds above 0"),
}


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
            shown = "(hidden)" if variable.endswith("_SECRET") else repr(text)  # never a secret in a log
            raise ConfigError(f"{variable}={shown} is not valid: expected {expected}") from None
    if settings["WEBHOOK_URL"] and not settings["WEBHOOK_SECRET"]:
        raise ConfigError("BULKPROC_WEBHOOK_URL is set but BULKPROC_WEBHOOK_SECRET is not: webhooks are signed")
    if settings["CONCURRENCY"] is None:
        settings["CONCURRENCY"] = settings["CREATE_RATE"][0] if settings["CREATE_RATE"] else UNLIMITED_CONCURRENCY
    return settings
