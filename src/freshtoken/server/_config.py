"""What a reference server is: its clients, users, token lifetimes and start-up faults.

Everything here is a frozen value with no I/O, importable without the ``server`` extra.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

__all__ = [
    "DEMO_CLIENTS",
    "DEMO_USERS",
    "DEVICE_CODE_GRANT",
    "JWT_BEARER_GRANT",
    "LOOPBACK_REDIRECT_URIS",
    "TOKEN_EXCHANGE_GRANT",
    "Client",
    "DPoPConfig",
    "FaultKind",
    "Faults",
    "ServerConfig",
    "TokenFault",
    "User",
]

DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 3.4
JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"  # RFC 7523 2.1
TOKEN_EXCHANGE_GRANT: Final = "urn:ietf:params:oauth:grant-type:token-exchange"  # RFC 8693 2.1
Grant = Literal[
    "password",
    "refresh_token",
    "client_credentials",
    "authorization_code",
    "urn:ietf:params:oauth:grant-type:device_code",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "urn:ietf:params:oauth:grant-type:token-exchange",
]
ALL_GRANTS: frozenset[Grant] = frozenset(get_args(Grant))
# A public client has no credentials to act with, for itself or for others.
USER_GRANTS: frozenset[Grant] = ALL_GRANTS - {
    "client_credentials",
    JWT_BEARER_GRANT,
    TOKEN_EXCHANGE_GRANT,
}

# RFC 8252 section 7.3: a loopback redirect URI matches whatever port the client listens on.
LOOPBACK_REDIRECT_URIS = (
    "http://127.0.0.1/callback",
    "http://[::1]/callback",
    "http://localhost/callback",
)

FaultKind = Literal[
    "status_500",  # 500 {"error": "server_error"}
    "status_503",  # 503 {"error": "temporarily_unavailable"}, Retry-After if retry_after is set
    "status_429",  # 429 {"error": "slow_down"} with Retry-After: retry_after (default 1)
    "malformed_json",  # 200, application/json, a body cut off mid-object
    "html_502",  # 502 text/html, the page a proxy shows
    "drop_connection",  # the socket is closed without any answer (nothing was processed)
    # The request is processed (a refresh rotates, a login starts a session, the counters
    # count it), then the socket is closed without an answer: the client's answer is lost.
    "drop_after_processing",
]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
_ISSUER_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")


@dataclass(frozen=True)
class Client:
    """An OAuth client.

    With ``secret`` it authenticates with client_secret_basic or client_secret_post; with
    ``public_key`` (a PEM public key: RSA, EC or Ed25519) with private_key_jwt (RFC 7523);
    with neither it is public and sends only its ``client_id`` (and must use PKCE).
    ``redirect_uris`` are matched exactly, except that a loopback one accepts any port.

    A client with a ``public_key`` and the JWT bearer grant trades assertions it signed (its
    ``client_id`` as ``iss``) for tokens: for itself (no ``sub``, or its own id), or for the
    user its ``sub`` names. A client with the token exchange grant trades this server's access
    tokens for new ones (RFC 8693).
    """

    client_id: str
    secret: str | None
    grants: frozenset[Grant]
    # What client_credentials grants, and its default when no scope is asked for. Password
    # grants are bounded by the user's scopes instead.
    scopes: frozenset[str] = frozenset({"read", "write"})
    redirect_uris: tuple[str, ...] = LOOPBACK_REDIRECT_URIS
    public_key: str | None = None

    def __post_init__(self) -> None:
        if self.secret is not None and self.public_key is not None:
            raise ValueError("a client has a secret or a public key, not both")

    @property
    def is_public(self) -> bool:
        return self.secret is None and self.public_key is None

    def __repr__(self) -> str:
        kind = "public" if self.is_public else "confidential"
        if self.public_key is not None:
            kind = "private_key_jwt"
        return f"Client({self.client_id!r}, {kind})"


@dataclass(frozen=True)
class User:
    username: str
    password: str
    scopes: frozenset[str] = frozenset({"read", "write"})

    def __repr__(self) -> str:
        return f"User({self.username!r}, scopes={' '.join(sorted(self.scopes))!r})"


DEMO_CLIENTS: tuple[Client, ...] = (
    Client("demo", "demo-secret", ALL_GRANTS),
    Client("demo-public", None, USER_GRANTS),
)
DEMO_USERS: tuple[User, ...] = (
    User("demo", "demo"),
    User("alice", "alice"),
    User("admin", "admin", frozenset({"read", "write", "admin"})),
)


@dataclass(frozen=True)
class TokenFault:
    """One queued failure of the token endpoints, served ``count`` times in a row."""

    kind: FaultKind
    count: int = 1
    retry_after: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if self.count < 1:
            raise ValueError("a fault is served at least once")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after is a number of seconds >= 0")


@dataclass(frozen=True)
class Faults:
    """Faults armed when the server starts; the same ones can be armed at run time."""

    latency: float = 0.0  # seconds added to every token endpoint answer (real time)
    token_failures: tuple[TokenFault, ...] = ()
    fail_api: int = 0  # the next K protected API calls answer 401 invalid_token

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency) and self.latency >= 0):
            raise ValueError("latency is a finite number of seconds >= 0")
        if self.fail_api < 0:
            raise ValueError("fail_api counts calls, >= 0")


@dataclass(frozen=True)
class DPoPConfig:
    """How the server treats DPoP proofs (RFC 9449); a request with a proof gets DPoP-bound
    tokens, one without gets Bearer tokens.

    ``nonces`` makes every proof carry the server's current nonce, replaced every
    ``nonce_ttl`` seconds. A proof's ``iat`` may be ``iat_window`` seconds away from the
    server's clock; ``algorithms`` are the signature algorithms accepted.
    """

    nonces: bool = False
    nonce_ttl: float = 300.0
    iat_window: float = 60.0
    algorithms: tuple[str, ...] = ("ES256", "ES384", "EdDSA", "RS256", "PS256")

    def __post_init__(self) -> None:
        for name in ("nonce_ttl", "iat_window"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"dpop {name} must be a finite number of seconds > 0")
        if not self.algorithms or {"none", "HS256", "HS384", "HS512"} & set(self.algorithms):
            raise ValueError("dpop algorithms must be asymmetric signature algorithms")


@dataclass(frozen=True)
class ServerConfig:
    """The token lifecycle of one server. All durations are in seconds of the server's clock.

    ``refresh_ttl`` is absolute, counted from the login that started a token family; a
    family idle (no refresh) for ``refresh_idle_ttl`` also ends (``None`` turns that off).

    With ``rotation``, each refresh returns a new refresh token and retires the one presented.
    With ``reuse_detection``, presenting a retired refresh token revokes its whole family:
    every refresh token and every access token it produced. During ``reuse_grace`` seconds
    after its rotation, a retired refresh token is still accepted once more or several times,
    and answers with the very tokens its rotation produced, so that two racing clients end
    up holding the same pair.

    The server's clock is the clock it was given plus ``clock_offset``, to simulate skew.
    ``refresh_in``, when set, adds ``"refresh_in": refresh_in`` to token responses.

    ``admin`` adds the ``/admin`` routes (stats, faults); it is read once, when the app is
    made. ``max_body`` bounds every request body (413 beyond it).

    ``issuer_path`` gives the issuer a path (``/tenant``): the issuer is the server's URL
    plus it, the OAuth endpoints move under it, and the metadata is served where RFC 8414
    (``/.well-known/oauth-authorization-server/tenant``) and OpenID Connect Discovery
    (``/tenant/.well-known/openid-configuration``) put it; ``oauth_metadata`` and
    ``openid_metadata`` switch either document off. ``authorization_response_iss`` sends
    ``iss`` with every authorization response (RFC 9207) and says so in the metadata.
    An authorization code lives ``code_ttl`` seconds, a device code ``device_code_ttl``;
    ``device_interval`` is the polling interval the device flow asks for (0 in tests).
    ``dpop`` says how DPoP proofs are checked (see [`DPoPConfig`][]).

    ``personality`` makes the server answer as a real provider does (``"github"``...: see
    ``freshtoken.server._personalities``; [`ServerConfig.as_provider()`][ServerConfig.as_provider]
    sets it with the provider's lifetimes and rotation rules). ``revoke_access_on_refresh``
    revokes a family's earlier access tokens at each refresh (Notion, GitHub, Ory Hydra);
    ``id_token_claims`` are added to every ID token (Entra's ``tid``).
    ``registration`` serves dynamic client registration (RFC 7591) at ``/oauth/register``.
    A grant authorized for a ``resource`` (RFC 8707) gets access tokens for it alone; with
    ``strict_resource`` its refreshes must name it too (``invalid_target`` otherwise), as
    strict servers do. The API under ``/api`` publishes its protected resource metadata
    (RFC 9728) and names it in its challenges.
    """

    access_ttl: float = 300.0
    refresh_ttl: float = 86_400.0
    refresh_idle_ttl: float | None = 3_600.0
    rotation: bool = True
    reuse_detection: bool = True
    reuse_grace: float = 0.0
    clock_offset: float = 0.0
    refresh_in: float | None = None
    admin: bool = False
    audience: str = "freshtoken-api"
    realm: str = "freshtoken"
    json_client_id: str = "demo-public"  # the client /auth/login and /auth/refresh act as
    max_body: int = 64 * 1024
    clients: tuple[Client, ...] = DEMO_CLIENTS
    users: tuple[User, ...] = DEMO_USERS
    faults: Faults = field(default_factory=Faults)
    issuer_path: str = ""
    oauth_metadata: bool = True
    openid_metadata: bool = True
    authorization_response_iss: bool = True
    code_ttl: float = 60.0
    device_code_ttl: float = 600.0
    device_interval: float = 5.0
    dpop: DPoPConfig = field(default_factory=DPoPConfig)
    personality: str | None = None
    revoke_access_on_refresh: bool = False
    id_token_claims: tuple[tuple[str, str], ...] = ()
    registration: bool = True
    strict_resource: bool = False

    def __post_init__(self) -> None:
        if self.issuer_path and not _ISSUER_PATH.fullmatch(self.issuer_path):
            raise ValueError("issuer_path is empty or '/segment[/segment...]' (no trailing '/')")
        if not (math.isfinite(self.device_interval) and self.device_interval >= 0):
            raise ValueError("device_interval must be a finite number of seconds >= 0")
        for name in ("access_ttl", "refresh_ttl", "code_ttl", "device_code_ttl"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number of seconds > 0")
        if self.refresh_idle_ttl is not None and not self.refresh_idle_ttl > 0:
            raise ValueError("refresh_idle_ttl must be > 0 or None")
        if not (math.isfinite(self.reuse_grace) and self.reuse_grace >= 0):
            raise ValueError("reuse_grace must be a finite number of seconds >= 0")
        if not math.isfinite(self.clock_offset):
            raise ValueError("clock_offset must be finite")
        if self.refresh_in is not None and not self.refresh_in >= 0:
            raise ValueError("refresh_in must be >= 0 or None")
        if self.max_body < 1024:
            raise ValueError("max_body below 1 KiB would refuse ordinary requests")

    def replace(self, **changes: object) -> ServerConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def as_provider(self, name: str, **changes: object) -> ServerConfig:
        """This configuration answering as the provider ``name`` (``github``, ``google``...),
        with its documented lifetimes and rules, then ``changes``."""
        from ._personalities import configure  # the personalities read this module

        return configure(self, name).replace(**changes)

    def client(self, client_id: str) -> Client | None:
        return next((c for c in self.clients if c.client_id == client_id), None)

    def user(self, username: str) -> User | None:
        return next((u for u in self.users if u.username == username), None)
