"""The server's records and answers: errors, issued tokens, families and codes, the
scope and redirect rules. Values and pure functions; the state keeps and changes them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from ._config import (
    DEVICE_CODE_GRANT,
    JWT_BEARER_GRANT,
    TOKEN_EXCHANGE_GRANT,
    Client,
    ServerConfig,
)
from ._keys import client_key

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_PKCE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of a SHA-256, unpadded
_PKCE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 section 4.1
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 section 6.1: no vowels, no look-alikes
_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:"
# The subject and actor token types a token exchange takes: this server's access tokens.
_EXCHANGEABLE = frozenset({_TOKEN_TYPE + "access_token", _TOKEN_TYPE + "jwt"})
_GRANT_COUNTERS = {
    DEVICE_CODE_GRANT: "device_code",
    JWT_BEARER_GRANT: "jwt_bearer",
    TOKEN_EXCHANGE_GRANT: "token_exchange",
}
_MAX_ACTORS = 8  # nested act claims: a longer delegation chain is refused
_CLOCK_LEEWAY = 60.0  # seconds an assertion's nbf or iat may lie ahead of the server's clock
IDENTITY_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
_PRUNE_EVERY = 1024
_MAX_ITEMS = 10_000
_MAX_FAULTS = 10_000
_MAX_PENDING = 10_000  # authorization requests, codes, device codes, assertion ids: each
_MAX_PARAMETER = 1024  # state, nonce: echoed back, so bounded
_PENDING_TTL = 900.0  # an unanswered login form
_MAX_ASSERTION_LIFETIME = 600.0
_SLOW_DOWN = 5.0  # RFC 8628 section 3.5


class OAuthError(Exception):
    """An error answer of a token endpoint (RFC 6749 section 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


class AuthorizationRefused(Exception):
    """An authorization request refused.

    With ``redirect_uri`` the client hears of it through a redirect (RFC 6749 section
    4.1.2.1); without, the request could not be trusted to name where to go, so only the
    user is told.
    """

    def __init__(
        self,
        error: str,
        description: str,
        *,
        redirect_uri: str | None = None,
        state: str | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state


class LoginRejected(Exception):
    """A login form's answer refused (wrong password, unknown code): show the form again."""


class BearerError(Exception):
    """An error answer of the protected API (RFC 6750 section 3.1)."""

    def __init__(
        self, status: int, error: str | None, description: str, scope: str | None = None
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.scope = scope


@dataclass(frozen=True)
class Issued:
    access_token: str
    expires_at: float
    expires_in: float  # seconds left when answered: access_ttl, or less on a grace replay
    scope: frozenset[str]
    refresh_token: str | None
    id_token: str | None = None
    jkt: str | None = None  # the DPoP key the access token is bound to (cnf.jkt)
    issued_token_type: str | None = None  # RFC 8693 2.2.1, for a token exchange's answer

    def __repr__(self) -> str:
        return f"Issued(expires_at={self.expires_at:.3f}, scope={format_scope(self.scope)!r})"


@dataclass(frozen=True)
class Principal:
    """Who a valid access token speaks for."""

    subject: str
    username: str | None
    client_id: str
    scope: frozenset[str]
    jti: str
    expires_at: float
    jkt: str | None = None  # the token's DPoP binding: the app checks the proof's key
    act: dict[str, Any] | None = None  # RFC 8693 4.1: who acts for the subject, if anyone
    resource: tuple[str, ...] = ()  # RFC 8707: where the token may be used (empty: anywhere)

    def serves(self, resource: str) -> bool:
        """Whether the token may be presented at ``resource``."""
        return not self.resource or _names(self.resource, resource)


@dataclass(frozen=True)
class PendingAuthorization:
    """A valid authorization request waiting for its login form (``id`` is in the form)."""

    id: str
    client_id: str
    redirect_uri: str
    scope: frozenset[str] | None
    state: str | None
    nonce: str | None
    code_challenge: str | None
    created_at: float
    resource: tuple[str, ...] = ()  # RFC 8707: what the tokens will be for


@dataclass(frozen=True)
class DeviceGrant:
    """The answer of the device authorization endpoint (RFC 8628 section 3.2)."""

    device_code: str
    user_code: str
    expires_in: float
    interval: float


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    username: str
    scope: frozenset[str]
    code_challenge: str | None
    nonce: str | None
    auth_time: float
    expires_at: float
    family_id: str | None = None  # the family its redemption started
    used: bool = False
    resource: tuple[str, ...] = ()


@dataclass
class _DeviceCode:
    client_id: str
    user_code: str
    requested_scope: frozenset[str] | None
    expires_at: float
    interval: float
    status: Literal["pending", "approved", "denied"] = "pending"
    last_poll: float | None = None
    username: str | None = None
    scope: frozenset[str] = frozenset()
    auth_time: float = 0.0


@dataclass
class _Family:
    id: str
    username: str | None  # None for client_credentials
    client_id: str
    scope: frozenset[str]  # what the login granted; refreshes may ask for less
    created_at: float
    last_active_at: float
    revoked: bool = False
    auth_time: float | None = None  # when the user typed the password, if not created_at
    jkt: str | None = None  # a public client's refresh tokens are bound to its DPoP key
    # Token exchange: the subject when it is another client, the actor chain, and the family
    # of the subject token (revoking it revokes what was exchanged for it).
    subject: str | None = None
    act: dict[str, Any] | None = None
    parent: str | None = None
    resource: tuple[str, ...] = ()  # RFC 8707: the audience of its access tokens


@dataclass
class _RefreshToken:
    family_id: str
    retired_at: float | None = None
    successor: Issued | None = None


@dataclass
class _AccessToken:
    family_id: str
    subject: str
    expires_at: float
    scope: frozenset[str]
    seq: int
    revoked: bool = False
    jkt: str | None = None
    resource: tuple[str, ...] = ()


def _zero_stats() -> dict[str, Any]:
    return {
        "token_requests": 0,
        "token_requests_in_flight": 0,
        "most_token_requests_in_flight": 0,
        "token_requests_by_grant": {
            "password": 0,
            "refresh_token": 0,
            "client_credentials": 0,
            "authorization_code": 0,
            "device_code": 0,
            "jwt_bearer": 0,
            "token_exchange": 0,
            "other": 0,
        },
        "logins": 0,
        "refreshes": 0,
        "rotations": 0,
        "grace_replays": 0,
        "reuse_detections": 0,
        "family_revocations": 0,
        "revocation_requests": 0,
        "token_errors": 0,
        "invalid_grant": 0,
        "invalid_client": 0,
        "unauthorized_401": 0,
        "forbidden_403": 0,
        "api_ok": 0,
        "faults_served": 0,
        "authorization_codes": 0,
        "code_replays": 0,
        "consents_denied": 0,
        "device_codes": 0,
        "device_approvals": 0,
        "registrations": 0,
        "refreshes_without_resource": 0,
        "invalid_target": 0,
    }


def _refresh_binding(client: Client, jkt: str | None) -> str | None:
    """RFC 9449 section 5: a public client's refresh tokens are bound to its DPoP key (a
    confidential client's are bound to its authentication already)."""
    return jkt if client.secret is None and client.public_key is None else None


def parse_scope(text: str | None) -> frozenset[str] | None:
    """RFC 6749 section 3.3: space-delimited scope tokens; ``None`` when absent or blank."""
    if text is None or not text.strip(" "):
        return None
    tokens = text.split(" ")
    if not all(_SCOPE_TOKEN.fullmatch(t) for t in tokens):
        raise OAuthError("invalid_scope", "scope must be scope tokens separated by one space")
    return frozenset(tokens)


def format_scope(scope: frozenset[str]) -> str:
    return " ".join(sorted(scope))


def redirect_uri_allowed(client: Client, uri: str) -> bool:
    """Exact match, or a loopback ``http`` URI whose registered form has no port (RFC 8252
    section 7.3: native apps listen on whatever port is free)."""
    if uri in client.redirect_uris:
        return True
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return False
    host = parts.hostname
    if parts.scheme != "http" or host not in ("127.0.0.1", "::1", "localhost"):
        return False
    if parts.username is not None or parts.password is not None or parts.fragment:
        return False
    portless = f"http://{'[::1]' if host == '::1' else host}{parts.path}"
    if parts.query:
        portless += f"?{parts.query}"
    return portless in client.redirect_uris


def _add_query(uri: str, params: Mapping[str, str | None]) -> str:
    query = urlencode({name: value for name, value in params.items() if value is not None})
    return f"{uri}{'&' if '?' in uri else '?'}{query}"


def normalize_user_code(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


def _names(resources: tuple[str, ...], resource: str) -> bool:
    return resource.rstrip("/") in {r.rstrip("/") for r in resources}


def _check_client_keys(config: ServerConfig) -> None:
    for client in config.clients:
        if client.public_key is not None:
            try:
                client_key(client.public_key)
            except ValueError as exc:
                raise ValueError(f"client {client.client_id!r}: bad public_key: {exc}") from None


def _is_time(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _depth(act: Mapping[str, Any] | None) -> int:
    depth = 0
    while isinstance(act, Mapping):
        depth += 1
        act = act.get("act")
    return depth


def _required_field(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise OAuthError("invalid_request", f"{name} is required")
    return value
