"""A login's token request: sent once, its answer read as a TokenSet or a LoginFailed.

The answer is read exactly as a refresh's is (:meth:`HTTPRefresher.parse_response`: the same
validation, the same redaction of secrets), then any failure is reported as a failed login:
``invalid_grant`` after a wrong password is not a session that expired.
"""

from __future__ import annotations

import httpx

from ._clock import Clock
from ._http import Verify, asend, send
from ._policy import check_transport, origin_of
from ._tokens import TokenSet
from .errors import LoginFailed, RefreshFailed, SessionExpired

__all__ = ["arequest_tokens", "check_login_transport", "request_tokens", "tokens_from"]


def check_login_transport(url: str, *, allow_insecure_http: bool) -> None:
    """Credentials go over https, or plain http to loopback (or when explicitly allowed)."""
    try:
        origin = origin_of(url)
    except ValueError:
        raise LoginFailed("invalid_request", f"not an http(s) URL: {url!r}") from None
    check_transport(origin, allow_insecure_http=allow_insecure_http, what="credentials")


def tokens_from(
    response: httpx.Response, *, sent_at: float, secrets: tuple[str, ...] = ()
) -> TokenSet:
    """The TokenSet of a token endpoint's answer; raises LoginFailed for anything else."""
    from .refreshers import HTTPRefresher  # here: refreshers imports the login modules

    parser = HTTPRefresher(str(response.request.url))
    try:
        return parser.parse_response(response, sent_at=sent_at, current=None, sent_secrets=secrets)
    except (SessionExpired, RefreshFailed) as error:
        raise LoginFailed(error.error, error.description, status=error.status) from None


def request_tokens(
    request: httpx.Request,
    *,
    clock: Clock,
    secrets: tuple[str, ...] = (),
    verify: Verify = True,
    allow_insecure_http: bool = False,
) -> TokenSet:
    check_login_transport(str(request.url), allow_insecure_http=allow_insecure_http)
    sent_at = clock()
    response = send(request, verify=verify)
    return tokens_from(response, sent_at=sent_at, secrets=secrets)


async def arequest_tokens(
    request: httpx.Request,
    *,
    clock: Clock,
    secrets: tuple[str, ...] = (),
    verify: Verify = True,
    allow_insecure_http: bool = False,
) -> TokenSet:
    check_login_transport(str(request.url), allow_insecure_http=allow_insecure_http)
    sent_at = clock()
    response = await asend(request, verify=verify)
    return tokens_from(response, sent_at=sent_at, secrets=secrets)
