"""Reading a token endpoint's answer: one reader for a refresh and for a login.

[`read_token_answer()`][read_token_answer] turns an ``httpx.Response`` into a
[`TokenSet`][freshtoken.TokenSet] or raises [`SessionExpired`][freshtoken.SessionExpired],
[`RefreshFailed`][freshtoken.RefreshFailed] or [`DPoPError`][freshtoken.DPoPError], nothing
else, whatever the answer holds; the secrets that went out are cut out of any error text. A
failure to read a 2xx answer is marked ``answer_lost`` (the server may have spent a refresh
token): what that means for a rotating refresh token is the refresher's to decide
([`HTTPRefresher.parse_response()`][freshtoken.refreshers.HTTPRefresher.parse_response]); a login
reports every failure as a failed login.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from .._core.policy import interpret_token_response, parse_retry_after
from .._core.quirks import Quirks
from .._core.tokens import TokenResponseError, TokenSet, _jwt_claims
from ..errors import DPoPError, RefreshFailed

if TYPE_CHECKING:
    from .dpop import DPoPKey

__all__ = ["read_token_answer"]


def _as_is(document: Mapping[str, Any]) -> Mapping[str, Any]:
    return document


def read_token_answer(
    response: httpx.Response,
    *,
    sent_at: float,
    previous: TokenSet | None = None,
    secrets: tuple[str, ...] = (),
    dpop_key: DPoPKey | None = None,
    quirks: Quirks = Quirks(),  # noqa: B008 - frozen, shared
    translate: Callable[[Mapping[str, Any]], Mapping[str, Any]] = _as_is,
) -> TokenSet:
    """The TokenSet of ``response`` (a token request sent at ``sent_at``, renewing
    ``previous`` if any); ``translate`` maps an endpoint's own field names onto RFC 6749's.
    ``dpop_key`` is the key the request was signed with: ``DPoP`` tokens are accepted, bound
    to it."""
    retry_after = parse_retry_after(response.headers.get("Retry-After"), sent_at)
    if previous is not None:
        secrets += (previous.refresh_token or "", previous.access_token)
    # A 2xx the server sent may carry a rotated refresh token we cannot read: call the
    # answer lost, so that the retry comes at once (a reuse grace period may save it).
    success = 200 <= response.status_code < 300
    try:
        document = interpret_token_response(
            response.status_code, response.content, retry_after=retry_after, secrets=secrets
        )
    except RefreshFailed as error:
        error.answer_lost = success and error.error == "malformed_response"
        if dpop_key is not None and error.error == "use_dpop_nonce":
            # Asked again after the retry with its nonce: retrying later would not help.
            raise DPoPError(
                "use_dpop_nonce",
                "the token endpoint demanded a new DPoP nonce again after one retry with "
                "the nonce it gave (or gave none that can be used)",
                status=error.status,
            ) from None
        raise
    try:
        tokens = TokenSet.from_response(
            translate(document),
            sent_at=sent_at,
            date_header=response.headers.get("Date"),
            previous=previous,
            token_types=("Bearer",) if dpop_key is None else ("Bearer", "DPoP"),
            dpop_key=dpop_key,
            default_lifetime=quirks.default_lifetime,
            keep_alive=quirks.keep_alive,
        )
    except TokenResponseError as error:
        raise RefreshFailed(
            error.error, str(error), status=response.status_code, answer_lost=success
        ) from None
    if dpop_key is not None:
        _check_confirmation(tokens, dpop_key, response.status_code)
    return tokens


def _check_confirmation(tokens: TokenSet, key: DPoPKey, status: int) -> None:
    """A JWT access token that names its key (``cnf.jkt``, RFC 9449 6.1) must name ours: a
    token bound to another key would be refused everywhere, or be someone else's."""
    confirmation = _jwt_claims(tokens.access_token).get("cnf")
    jkt = confirmation.get("jkt") if isinstance(confirmation, dict) else None
    if jkt is not None and jkt != key.thumbprint:
        raise RefreshFailed(
            "invalid_dpop_binding",
            "the token endpoint bound the access token to another DPoP key than the one that "
            "signed the request",
            status=status,
        )
