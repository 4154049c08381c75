"""The API token: a `before_request` hook any blueprint registers to need `Authorization: Bearer <token>`."""

from __future__ import annotations

import hashlib
import hmac

from flask import current_app, request

from ..errors import TokenRequired

__all__ = ["require_token", "token_matches"]


def require_token() -> None:
    """Refuse the request with TokenRequired when a token is configured and the request lacks it."""
    token = current_app.config.get("API_TOKEN")
    if token and not token_matches(request.headers.get("Authorization", ""), token):
        raise TokenRequired("Send the API token as 'Authorization: Bearer <token>'.")


def token_matches(authorization: str, token: str) -> bool:
    """Whether an Authorization header value carries `token` as a Bearer token, compared in constant time."""
    # WSGI hands header values over as latin-1 decoded text: encoding them back gives the bytes
    # the client sent, which for a non-ASCII token are UTF-8.
    try:
        sent = authorization.encode("latin-1")
    except UnicodeEncodeError:
        return False
    scheme, _, given = sent.strip().partition(b" ")
    # Digests of equal length, so that not even the token's length shows in the time taken.
    given_digest = hashlib.sha256(given.strip()).digest()
    wanted_digest = hashlib.sha256(token.encode("utf-8")).digest()
    return hmac.compare_digest(given_digest, wanted_digest) and scheme.lower() == b"bearer"
