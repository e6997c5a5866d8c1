"""One authorization code request (RFC 6749 section 4.1), sans I/O: the pieces a browser
login and a backend-for-frontend share.

1. [`AuthorizationRequest.start()`][AuthorizationRequest.start] makes the URL to send the browser
   to, with PKCE S256 (RFC 7636), a ``state`` and, for OpenID Connect, a ``nonce``, and remembers
   them;
2. [`code_from()`][AuthorizationRequest.code_from] checks the answer the browser brings back to the
   redirect URI: the state, the ``iss`` parameter (RFC 9207: whenever it is sent, and always
   when the server promises it), an error, the code;
3. [`token_request()`][AuthorizationRequest.token_request] and
   [`tokens_from()`][AuthorizationRequest.tokens_from] are the code exchange, which
   [`exchange()`][AuthorizationRequest.exchange] (or ``aexchange``) sends. The ID token, if any,
   must be this login's: issuer, audience, expiry, nonce.

A request is a frozen value; [`to_dict()`][AuthorizationRequest.to_dict] and ``from_dict`` keep it
between the two halves of the login (a server's session), and its repr shows no secret.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from base64 import urlsafe_b64encode
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx

from .._core.clock import Clock, system_clock
from .._core.tokens import TokenResponseError, TokenSet
from .._oauth.client_auth import ClientAuth
from .._oauth.discovery import TENANT_PLACEHOLDER, ServerMetadata, issuer_matches
from .._oauth.dpop import DPoPKey
from .._oauth.http import Flow, Verify, adrive, blocking
from .._oauth.id_tokens import check_id_token_claims
from ..errors import LoginFailed
from .token_endpoint import token_flow, tokens_from

__all__ = ["AuthorizationRequest", "default_scope", "pkce_challenge"]

_RESERVED = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    }
)
_KNOWN_ERRORS = {
    "access_denied": "the user or the server refused access",
    "login_required": "the user must sign in",
    "consent_required": "the user must consent",
    "interaction_required": "the user must act at the server",
    "temporarily_unavailable": "the server is busy; try again",
}


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 section 4.2, S256: base64url(SHA-256(verifier)), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _one_tenant_of(issuer: str, iss: str) -> bool:
    """Whether ``iss`` is one tenant of a multi-tenant ``{tenantid}`` issuer."""
    return TENANT_PLACEHOLDER in issuer and issuer_matches(issuer, iss)


def with_default_lifetime(tokens: TokenSet, metadata: ServerMetadata) -> TokenSet:
    """``tokens`` with the expiry the provider's quirks assume when the answer gave none."""
    lifetime = None if metadata.quirks is None else metadata.quirks.default_lifetime
    if tokens.expires_at is not None or lifetime is None or tokens.obtained_at is None:
        return tokens
    return dataclasses.replace(tokens, expires_at=tokens.obtained_at + lifetime)


def default_scope(metadata: ServerMetadata) -> str | None:
    """``openid`` (an ID token) and ``offline_access`` (a refresh token), where offered, and
    the scope a provider's quirks name for a refresh token (``offline_scope``)."""
    supported = metadata.scopes_supported
    if supported is None:
        wanted = ["openid"] if metadata.id_token_signing_alg_values_supported else []
    else:
        wanted = [scope for scope in ("openid", "offline_access") if scope in supported]
    offline = None if metadata.quirks is None else metadata.quirks.offline_scope
    if offline and offline not in wanted:
        wanted.append(offline)
    return " ".join(wanted) or None


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class AuthorizationRequest:
    """An authorization code request in flight: ``url`` is where the browser goes."""

    url: str
    issuer: str
    client_id: str
    redirect_uri: str
    token_endpoint: str
    state: str
    code_verifier: str
    nonce: str | None
    scope: str | None
    iss_required: bool

    @classmethod
    def start(
        cls,
        metadata: ServerMetadata,
        *,
        client_id: str,
        redirect_uri: str,
        scope: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> AuthorizationRequest:
        """A new request. ``scope`` defaults to `default_scope()`; ``params`` are added to
        the URL (``prompt``, ``login_hint``, ``audience``, ``access_type``...)."""
        if metadata.authorization_endpoint is None:
            raise LoginFailed(
                "unsupported_flow",
                f"{metadata.issuer} has no authorization_endpoint: use a device or password login",
            )
        if metadata.token_endpoint is None:
            raise LoginFailed("unsupported_flow", f"{metadata.issuer} has no token_endpoint")
        if params and (clash := sorted(_RESERVED & set(params))):
            raise ValueError(f"these parameters are set by freshtoken itself: {clash}")
        scope = default_scope(metadata) if scope is None else scope
        if metadata.quirks is not None and metadata.quirks.authorization_params:
            params = {**metadata.quirks.authorization_params, **dict(params or {})}
        verifier = secrets.token_urlsafe(64)  # 86 characters: RFC 7636 asks for 43 to 128
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32) if scope and "openid" in scope.split() else None
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
            **dict(params or {}),
        }
        if scope:
            query["scope"] = scope
        if nonce is not None:
            query["nonce"] = nonce
        endpoint = metadata.authorization_endpoint
        separator = "&" if "?" in endpoint else "?"
        return cls(
            url=f"{endpoint}{separator}{urlencode(query)}",
            issuer=metadata.issuer,
            client_id=client_id,
            redirect_uri=redirect_uri,
            token_endpoint=metadata.token_endpoint,
            state=state,
            code_verifier=verifier,
            nonce=nonce,
            scope=scope,
            iss_required=metadata.authorization_response_iss_parameter_supported,
        )

    # -- the answer at the redirect URI -------------------------------------------------------

    def code_from(self, params: Mapping[str, str]) -> str:
        """The code of the authorization response ``params`` (the redirect's query); raises
        [`LoginFailed`][freshtoken.LoginFailed] if the answer is an error or not this login's."""
        state = params.get("state")
        if state is None:
            raise LoginFailed("state_mismatch", "the answer carries no state")
        if not secrets.compare_digest(state.encode(), self.state.encode()):
            raise LoginFailed(
                "state_mismatch",
                "the answer belongs to another login (its state differs): start again",
            )
        iss = params.get("iss")
        if iss is not None and iss != self.issuer and not _one_tenant_of(self.issuer, iss):
            raise LoginFailed(
                "issuer_mismatch",
                f"the answer comes from {_printable(iss, 120)!r}, not {self.issuer!r} (RFC 9207)",
            )
        if iss is None and self.iss_required:
            raise LoginFailed(
                "issuer_mismatch", "the answer lacks the iss parameter its server promises"
            )
        error = params.get("error")
        if error is not None:
            error = _printable(error, 100) or "invalid_request"
            description = _printable(params.get("error_description") or "", 200)
            raise LoginFailed(error, description or _KNOWN_ERRORS.get(error))
        code = params.get("code")
        if not code:
            raise LoginFailed("invalid_request", "the answer carries neither a code nor an error")
        return code

    # -- the code exchange ---------------------------------------------------------------------

    def token_request(
        self, code: str, client: ClientAuth, params: Mapping[str, str] | None = None
    ) -> httpx.Request:
        """The token request that redeems ``code`` (RFC 6749 section 4.1.3, with the verifier);
        ``params`` are added to the form (the ``resource`` of RFC 8707)."""
        if client.client_id != self.client_id:
            raise ValueError("the code was requested for another client_id")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": self.code_verifier,
            **dict(params or {}),
        }
        return client.request(self.token_endpoint, form, {})

    def tokens_from(
        self, response: httpx.Response, *, sent_at: float, sent_secrets: tuple[str, ...] = ()
    ) -> TokenSet:
        """Read the token endpoint's answer to [`token_request()`][token_request]; ``sent_secrets``
        (the code, the client's secret) are kept out of any error."""
        tokens = tokens_from(response, sent_at=sent_at, secrets=(self.code_verifier, *sent_secrets))
        return self.checked(tokens, now=sent_at)

    def checked(self, tokens: TokenSet, *, now: float) -> TokenSet:
        """``tokens`` if their ID token (required when ``openid`` was asked and granted) is
        this login's; raises ``LoginFailed("invalid_id_token")`` otherwise."""
        asked = self.scope is not None and "openid" in self.scope.split()
        granted = tokens.scope is None or "openid" in tokens.scope.split()
        if tokens.id_token is None:
            if asked and granted:
                raise LoginFailed("invalid_id_token", "openid was asked for, but no id_token came")
            return tokens
        try:
            claims = tokens.id_claims()
        except TokenResponseError as error:
            raise LoginFailed("invalid_id_token", str(error)) from None
        check_id_token_claims(
            claims, issuer=self.issuer, client_id=self.client_id, nonce=self.nonce, now=now
        )
        return tokens

    def exchange_flow(
        self,
        code: str,
        client: ClientAuth,
        *,
        allow_insecure_http: bool = False,
        clock: Clock = system_clock,
        dpop: DPoPKey | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Flow[TokenSet]:
        """The code exchange as a sans-I/O flow (see `freshtoken._oauth.http`); with ``dpop``
        the tokens are bound to that key (RFC 9449); ``params`` go on the token request."""
        tokens = yield from token_flow(
            self.token_request(code, client, params),
            clock=clock,
            secrets=(code, self.code_verifier, *client.secrets()),
            allow_insecure_http=allow_insecure_http,
            dpop=dpop,
        )
        return self.checked(tokens, now=tokens.obtained_at or clock())

    async def aexchange(
        self,
        code: str,
        client: ClientAuth,
        *,
        verify: Verify = True,
        allow_insecure_http: bool = False,
        clock: Clock = system_clock,
        dpop: DPoPKey | None = None,
    ) -> TokenSet:
        """Redeem ``code`` at the token endpoint (in async code: asyncio or trio)."""
        flow = self.exchange_flow(
            code, client, allow_insecure_http=allow_insecure_http, clock=clock, dpop=dpop
        )
        return await adrive(flow, verify=verify)

    exchange = blocking(aexchange)
    """[`aexchange()`][aexchange] from synchronous code: redeem ``code`` at the token endpoint."""

    # -- keeping it between requests -----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, secrets (verifier, state, nonce) included: keep it server-side
        or sealed, never in a URL or a plain cookie."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuthorizationRequest:
        names = {field.name: field for field in dataclasses.fields(cls)}
        if not isinstance(data, Mapping) or set(data) != set(names):
            raise ValueError("not a saved AuthorizationRequest")
        for name, value in data.items():
            expected: tuple[type, ...] = (str,)
            if name in ("nonce", "scope"):
                expected = (str, type(None))
            elif name == "iss_required":
                expected = (bool,)
            if not isinstance(value, expected):
                raise TypeError(f"a saved AuthorizationRequest's {name} has the wrong type")
        return cls(**dict(data))

    def __repr__(self) -> str:
        return (
            f"AuthorizationRequest(issuer={self.issuer!r}, client_id={self.client_id!r}, "
            f"redirect_uri={self.redirect_uri!r}, scope={self.scope!r})"
        )


def _printable(text: str, limit: int) -> str:
    """A server's text from a URL, safe for a one-line message."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."
