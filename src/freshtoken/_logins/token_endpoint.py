"""A login's token request: sent once, its answer read as a TokenSet or a LoginFailed.

The answer is read exactly as a refresh's is
([`read_token_answer()`][freshtoken._oauth.token_answers.read_token_answer]: the same validation,
the same redaction of secrets), then any failure is reported as a failed login:
``invalid_grant`` after a wrong password is not a session that expired.
"""

from __future__ import annotations

import httpx

from .._core.clock import Clock
from .._core.policy import check_transport, origin_of
from .._core.tokens import TokenSet
from .._oauth.discovery import ServerMetadata
from .._oauth.dpop import DPoP, DPoPKey
from .._oauth.http import Flow
from .._oauth.token_answers import read_token_answer
from ..errors import DPoPError, LoginFailed, RefreshFailed, SessionExpired

__all__ = [
    "check_login_transport",
    "require_grant",
    "token_endpoint_of",
    "token_flow",
    "tokens_from",
]


def check_login_transport(url: str, *, allow_insecure_http: bool) -> None:
    """Credentials go over https, or plain http to loopback (or when explicitly allowed)."""
    try:
        origin = origin_of(url)
    except ValueError:
        raise LoginFailed("invalid_request", f"not an http(s) URL: {url!r}") from None
    check_transport(origin, allow_insecure_http=allow_insecure_http, what="credentials")


def token_endpoint_of(metadata: ServerMetadata) -> str:
    """The metadata's token endpoint; a login cannot go on without one."""
    if metadata.token_endpoint is None:
        raise LoginFailed("discovery_failed", f"{metadata.issuer} names no token_endpoint")
    return metadata.token_endpoint


def require_grant(metadata: ServerMetadata | None, grant: str, name: str) -> None:
    # The server would refuse anyway; asking first keeps a password from being sent at all.
    listed = metadata is not None and "grant_types_supported" in metadata.raw
    if metadata is not None and listed and grant not in metadata.grant_types_supported:
        offered = ", ".join(metadata.grant_types_supported) or "none"
        raise LoginFailed(
            "unsupported_grant_type",
            f"{metadata.issuer} does not offer the {name} grant (it offers: {offered})",
        )


def tokens_from(
    response: httpx.Response,
    *,
    sent_at: float,
    secrets: tuple[str, ...] = (),
    dpop: DPoPKey | None = None,
) -> TokenSet:
    """The TokenSet of a token endpoint's answer (bound to ``dpop``, the key that signed the
    request); raises LoginFailed for anything else."""
    try:
        return read_token_answer(response, sent_at=sent_at, secrets=secrets, dpop_key=dpop)
    except (SessionExpired, RefreshFailed, DPoPError) as error:
        raise LoginFailed(error.error, error.description, status=error.status) from None


def token_flow(
    request: httpx.Request,
    *,
    clock: Clock,
    secrets: tuple[str, ...] = (),
    allow_insecure_http: bool = False,
    dpop: DPoPKey | None = None,
) -> Flow[TokenSet]:
    """Send ``request`` to a token endpoint; return its TokenSet, timed from the sending.
    With ``dpop`` the request carries a proof of that key (once more with the server's new
    nonce if it demands one) and the tokens are bound to it."""
    check_login_transport(str(request.url), allow_insecure_http=allow_insecure_http)
    sent_at = clock()
    if dpop is None:
        response: httpx.Response = yield request
    else:
        response = yield from DPoP(dpop).token_request(request, dpop, clock)
    return tokens_from(response, sent_at=sent_at, secrets=secrets, dpop=dpop)
