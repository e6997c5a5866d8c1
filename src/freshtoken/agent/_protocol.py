"""The agent's HTTP API, as values: what a token answer holds, and how a client reads it.

``GET /v1/token?profile=NAME`` answers:

    {"profile": "work", "access_token": "...", "token_type": "Bearer",
     "token_id": "<32 hex>",            # names this access token; send it back as stale=
     "expires_at": "2024-05-01T12:00:00.000Z", "expires_in": 299,
     "issued_at": "...", "refresh_at": "...",   # come back at refresh_at for a new one
     "scope": "read write"}

``stale=<token_id>`` says "the token with this id was rejected": the agent refreshes if it
is still the current one, and answers with the current one otherwise. Errors are
``{"error": "...", "error_description": "..."}``: 400 ``invalid_request``, 403
``forbidden`` (another user), 404 ``unknown_profile`` / ``not_found``, 408 ``timeout`` (the
request was too slow to arrive), 409 ``session_expired`` (log in again; ``reason`` holds
the token endpoint's code), 413 / 431 (too large), 500 ``store_error``, 502
``refresh_failed`` (the token endpoint failed; ``Retry-After`` when known), 504
``refresh_pending`` (the refresh outlasted ``wait``; ask again).

A refresh token has no field here, by construction: answers are built field by field.
"""

from __future__ import annotations

import datetime
import hashlib
import math
from collections.abc import Mapping
from typing import Any

from .._core.clock import rfc3339
from .._core.tokens import TokenResponseError, TokenSet

__all__ = ["parse_instant", "token_document", "token_id", "tokens_from_document"]


def token_id(access_token: str) -> str:
    """A short digest naming an access token without revealing it."""
    return hashlib.sha256(access_token.encode()).hexdigest()[:32]


def token_document(
    profile: str, tokens: TokenSet, *, now: float, refresh_due_at: float | None
) -> dict[str, Any]:
    def instant(value: float | None) -> str | None:
        return None if value is None else rfc3339(value, fraction=True)

    expires_at = tokens.expires_at
    return {
        "profile": profile,
        "access_token": tokens.access_token,
        "token_type": tokens.token_type,
        "token_id": token_id(tokens.access_token),
        "expires_at": instant(expires_at),
        "expires_in": None if expires_at is None else max(0, math.floor(expires_at - now)),
        "issued_at": instant(tokens.obtained_at),
        "refresh_at": instant(refresh_due_at),
        "scope": tokens.scope,
    }


def parse_instant(text: object) -> float | None:
    """An RFC 3339 instant as epoch seconds (None for None); ValueError if malformed."""
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > 40:
        raise ValueError("an instant must be an RFC 3339 string")
    # datetime.fromisoformat reads "Z" only from Python 3.11 on.
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("an instant must carry its UTC offset")
    return moment.timestamp()


def tokens_from_document(document: object) -> TokenSet:
    """The TokenSet an agent's token answer describes; TokenResponseError if it is not one."""
    if not isinstance(document, Mapping):
        raise TokenResponseError("the agent's answer is not a JSON object")
    try:
        expires_at = parse_instant(document.get("expires_at"))
        issued_at = parse_instant(document.get("issued_at"))
        refresh_at = parse_instant(document.get("refresh_at"))
    except ValueError as error:
        raise TokenResponseError(f"the agent's answer has a malformed instant: {error}") from None
    token_type = document.get("token_type", "Bearer")
    scope = document.get("scope")
    if not isinstance(token_type, str) or (scope is not None and not isinstance(scope, str)):
        raise TokenResponseError("the agent's answer has a malformed token_type or scope")
    access_token = document.get("access_token")
    if not isinstance(access_token, str):
        raise TokenResponseError("the agent's answer has no access_token string")
    return TokenSet(
        access_token=access_token,
        token_type=token_type,
        expires_at=expires_at,
        obtained_at=issued_at,
        refresh_at=refresh_at,
        scope=scope,
    )
