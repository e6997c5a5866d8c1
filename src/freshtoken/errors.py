"""Every error freshtoken raises on purpose, under one base class.

    AuthError
    ├── LoginFailed             a login gave no tokens (wrong password, denied, unreachable...)
    ├── SessionExpired          refresh is impossible: tokens cleared, the user must log in again
    ├── RefreshFailed           transient failure (network, 5xx, 429, bad body): tokens kept
    ├── TokenResponseError      a token answer that is not a usable one (also a ValueError)
    ├── InsecureTransportError  a token would have crossed plain HTTP to a non-loopback host
    ├── StoreError              a token store cannot be read or written (names the store)
    │   ├── LockTimeout         the cross-process refresh lock was not acquired in time
    │   ├── GenerationConflict  a fenced save found a newer generation: nothing was written
    │   └── UnreadableSession   a BFF session's tokens that none of its keys opens
    ├── ReplayError             a request that got a 401 has a body that cannot be re-sent
    ├── DPoPError               DPoP cannot be done as configured (tokens kept, not retried)
    └── LoginRequired           the BFF has no session that can be refreshed: log in again

Messages carry the token endpoint's error code and description, a status and a store's name,
never a token. Programming errors (a wrong argument type, a misconfigured value) are the
built-in ``TypeError`` and ``ValueError``; the reference server (``freshtoken.server``), a
test tool, has errors of its own that never reach a client.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "DPoPError",
    "GenerationConflict",
    "InsecureTransportError",
    "LockTimeout",
    "LoginFailed",
    "LoginRequired",
    "RefreshFailed",
    "ReplayError",
    "SessionExpired",
    "StoreError",
    "TokenResponseError",
    "UnreadableSession",
]


class AuthError(Exception):
    """Base class of every freshtoken error."""


class LoginFailed(AuthError):
    """A login gave no tokens. Nothing was stored; fix the cause and log in again.

    ``error`` is the server's RFC 6749 error code when it gave one (``invalid_grant`` for a
    wrong password, ``access_denied`` for denied consent, ``unsupported_grant_type``,
    ``expired_token``...) or freshtoken's own: ``network_error`` (the server cannot be
    reached), ``timeout`` (nobody finished the login in time), ``state_mismatch`` and
    ``issuer_mismatch`` (an answer that is not this login's), ``discovery_failed``,
    ``invalid_id_token``, ``browser_unavailable``. ``description`` says more; neither ever
    holds a secret. ``status`` is the HTTP status of the server's answer, if there was one.
    """

    def __init__(
        self, error: str, description: str | None = None, *, status: int | None = None
    ) -> None:
        self.error = error
        self.description = description
        self.status = status
        super().__init__(_describe("login failed", error, description, status))


class SessionExpired(AuthError):
    """The session cannot be refreshed any more: log in again.

    ``error`` and ``description`` are the token endpoint's RFC 6749 section 5.2 ``error`` and
    ``error_description`` when the server gave them (``invalid_grant``, ``invalid_client``...),
    or freshtoken's own code (``no_tokens``, ``no_refresh_token``) when no server was asked.
    """

    def __init__(
        self, error: str, description: str | None = None, *, status: int | None = None
    ) -> None:
        self.error = error
        self.description = description
        self.status = status
        super().__init__(_describe("session expired, log in again", error, description, status))


class RefreshFailed(AuthError):
    """A refresh failed for a reason that may go away: the stored tokens were kept.

    ``retry_after`` is the server's Retry-After in seconds, when it sent one. ``answer_lost``
    says the request may have reached the server (a read timeout or a dropped connection), so
    the server may already have rotated the refresh token.
    """

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        answer_lost: bool = False,
    ) -> None:
        self.error = error
        self.description = description
        self.status = status
        self.retry_after = retry_after
        self.answer_lost = answer_lost
        super().__init__(_describe("token refresh failed", error, description, status))


class TokenResponseError(AuthError, ValueError):
    """A token response that is not a usable RFC 6749 section 5.1 answer (says why, no token).

    ``error`` is the code a refresher reports it under: ``malformed_response``, or
    ``unsupported_token_type`` for a token freshtoken cannot send. It is a ``ValueError`` too,
    as it was before it joined the tree.
    """

    def __init__(self, message: str, *, error: str = "malformed_response") -> None:
        super().__init__(message)
        self.error = error


class InsecureTransportError(AuthError):
    """A token would have been sent over plain HTTP to a host that is not loopback."""


class StoreError(AuthError):
    """A token store cannot be read or written; the message names the store and the fix."""


class LockTimeout(StoreError):
    """The cross-process refresh lock was not acquired within the configured timeout."""


class GenerationConflict(StoreError):
    """A fenced save found a newer generation than the one it was given: nothing was written."""


class UnreadableSession(StoreError):
    """A session's stored tokens that none of the BFF's keys opens, or that are not what
    freshtoken writes: the session is over, and its user must log in again."""


class ReplayError(AuthError):
    """A request answered 401 cannot be retried because its body was a one-shot stream."""


class DPoPError(AuthError):
    """DPoP (RFC 9449) cannot be done as configured; the stored tokens were kept.

    ``error`` says why: ``dpop_key_mismatch`` (the stored tokens are bound to another key
    than the one given), ``dpop_not_configured`` (they are bound to a key but the manager has
    no ``dpop``), ``dpop_unsupported`` (the refresher cannot send proofs), ``use_dpop_nonce``
    (the token endpoint demanded a new nonce again after one retry). Messages name keys by
    their public thumbprint only.
    """

    def __init__(
        self, error: str, description: str | None = None, *, status: int | None = None
    ) -> None:
        self.error = error
        self.description = description
        self.status = status
        super().__init__(_describe("DPoP failed", error, description, status))


class LoginRequired(AuthError):
    """No session, or one that can no longer be refreshed: the browser must log in again.

    Raised by [`BFF.user_client()`][freshtoken.bff.BFF.user_client];
    [`BFF.install()`][freshtoken.bff.BFF.install] turns it into the BFF's 401."""


def _describe(summary: str, error: str, description: str | None, status: int | None) -> str:
    text = f"{summary}: {error}"
    if description:
        text += f" ({description})"
    if status is not None:
        text += f" [HTTP {status}]"
    return text
