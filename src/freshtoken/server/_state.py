"""The server's memory and its decisions: token families, faults and counters, with no I/O.

Rules of the token families:

- A login (password grant) starts a *family*: one session of one user with one client. Every
  access token and refresh token it ever produces belongs to it; revoking the family kills
  them all at once.
- With rotation, a refresh *retires* the refresh token presented and issues its *successor*.
  A retired token presented again within ``reuse_grace`` seconds of its retirement answers
  with its successor (the same strings, expires_in recomputed). Later it is a *reuse*: with
  reuse detection it revokes the family, without it is simply refused.
- An access token is accepted while its family is alive, it was not revoked itself, it was
  issued after the last "expire every access token now", and the server's clock is before
  its expiry. The server's clock is ``clock() + clock_offset``.
- An authorization code is redeemed once. Presenting it again revokes the family its first
  redemption started (RFC 6749 section 4.1.2: the code may have leaked). A code bound to a
  PKCE challenge is redeemed only with the matching verifier; a verifier without a challenge
  is refused too (no downgrade). Public clients must use PKCE.
- A device code (RFC 8628) is pending until the user approves or denies it on the device
  page, or until it expires. A poll sooner than ``interval`` after the previous one answers
  ``slow_down`` and adds 5 seconds to the interval for good.
- Identity scopes (``openid``, ``profile``, ``email``, ``offline_access``) are granted to
  any user who asks at login; they do not narrow the API scopes (asking only for ``openid``
  grants the user's API scopes too). A family whose scope has ``openid`` gets an ``id_token``
  with every token response, the first one carrying the authorization request's ``nonce``.

Every method takes one ``threading.Lock``: the app calls them from uvicorn's event loop
thread, tests call them from their own threads. None of them awaits or does I/O while
holding it.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import itertools
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import jwt

from .._core.clock import Clock, system_clock
from ._config import (
    DEVICE_CODE_GRANT,
    JWT_BEARER_GRANT,
    TOKEN_EXCHANGE_GRANT,
    Client,
    FaultKind,
    Faults,
    Grant,
    ServerConfig,
    TokenFault,
    User,
)
from ._dpop import DPoPVerifier
from ._keys import SigningKey, client_key, looks_like_jwt
from ._pkce import s256 as pkce_challenge  # the server's own, not the client's
from ._registration import RegistrationRefused, check_resources, register

__all__ = [
    "AuthorizationRefused",
    "BearerError",
    "DeviceGrant",
    "Issued",
    "LoginRejected",
    "OAuthError",
    "PendingAuthorization",
    "Principal",
    "ServerState",
]

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


class ServerState:
    def __init__(self, config: ServerConfig, *, clock: Clock = system_clock, url: str) -> None:
        _check_client_keys(config)
        self._lock = threading.Lock()
        self._config = config
        self.clock = clock
        self.url = url
        self.issuer = url + config.issuer_path
        self.key = SigningKey(issuer=self.issuer, audience=config.audience)
        self._pending: dict[str, PendingAuthorization] = {}
        self._codes: dict[str, _Code] = {}
        self._device_codes: dict[str, _DeviceCode] = {}
        self._user_codes: dict[str, str] = {}  # normalized user code -> device code
        self._assertion_ids: dict[str, float] = {}  # jti -> exp, against replays
        self._families: dict[str, _Family] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._access: dict[str, _AccessToken] = {}
        self._seq = itertools.count()
        self._expired_before_seq = 0
        self._stats = _zero_stats()
        self._items: dict[int, dict[str, Any]] = {}
        self._item_ids = itertools.count(1)
        self._token_faults: collections.deque[TokenFault] = collections.deque()
        self._latency = 0.0
        self._fail_api = 0
        self._registered: dict[str, tuple[Client, str]] = {}  # RFC 7591: client, access token
        self.dpop = DPoPVerifier(lambda: self._config.dpop, self.now)
        self.arm(config.faults)

    # -- configuration and clock ---------------------------------------------------------

    @property
    def config(self) -> ServerConfig:
        with self._lock:
            return self._config

    def configure(self, **changes: Any) -> ServerConfig:
        """Change the lifecycle at run time; tokens already issued keep their expiry."""
        if "audience" in changes or "issuer_path" in changes:
            raise ValueError("the audience and the issuer are fixed once the signing key exists")
        with self._lock:
            config = dataclasses.replace(self._config, **changes)
            _check_client_keys(config)
            self._config = config
            return self._config

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/oauth/token"

    def rotate_signing_key(self) -> str:
        """New tokens are signed with a new key (new ``kid``); old ones still verify."""
        return self.key.rotate()

    def now(self) -> float:
        return self.clock() + self._config.clock_offset

    # -- clients and grants --------------------------------------------------------------

    def client(self, client_id: str) -> Client | None:
        """A configured client, or one registered at run time (RFC 7591)."""
        configured = self._config.client(client_id)
        if configured is not None:
            return configured
        registered = self._registered.get(client_id)
        return None if registered is None else registered[0]

    def register_client(self, body: Mapping[str, Any], client_uri_base: str) -> dict[str, Any]:
        """Dynamic client registration (RFC 7591); raises RegistrationRefused."""
        scopes = frozenset(s for u in self._config.users for s in u.scopes) | frozenset(
            {"openid", "profile", "email", "offline_access"}
        )
        registered = register(body, scopes=scopes, now=self.now(), client_uri_base=client_uri_base)
        with self._lock:
            if len(self._registered) >= _MAX_PENDING:
                raise RegistrationRefused("invalid_client_metadata", "too many registrations")
            client = registered.client
            self._registered[client.client_id] = (client, registered.registration_access_token)
            self._stats["registrations"] += 1
        return registered.answer

    def registered_client(self, client_id: str, access_token: str) -> Client | None:
        """RFC 7592 read: the client whose registration access token this is."""
        with self._lock:
            registered = self._registered.get(client_id)
        if registered is None or not secrets.compare_digest(
            access_token.encode(), registered[1].encode()
        ):
            return None
        return registered[0]

    def authenticate_client(self, client_id: str, secret: str | None) -> Client:
        """client_secret_basic, client_secret_post, or a public client sending no secret."""
        client = self.client(client_id)
        if client is None:
            raise OAuthError("invalid_client", "unknown client", 401)
        if client.public_key is not None:
            raise OAuthError(
                "invalid_client", "this client authenticates with private_key_jwt", 401
            )
        if client.secret is None:
            if secret is not None:
                raise OAuthError("invalid_client", "a public client has no secret", 401)
            return client
        if secret is None:
            raise OAuthError("invalid_client", "client authentication is required", 401)
        if not secrets.compare_digest(secret.encode(), client.secret.encode()):
            raise OAuthError("invalid_client", "wrong client secret", 401)
        return client

    def authenticate_assertion(
        self, client_id: str | None, assertion_type: str, assertion: str, endpoint: str
    ) -> Client:
        """private_key_jwt (RFC 7523 section 2.2): a JWT signed with the client's key, whose
        ``iss`` and ``sub`` are the client, ``aud`` this server (issuer, token endpoint or the
        endpoint called), with an ``exp`` and a ``jti`` never seen before."""
        if assertion_type != _JWT_BEARER:
            raise OAuthError("invalid_client", f"client_assertion_type must be {_JWT_BEARER}", 401)
        if not looks_like_jwt(assertion):
            raise OAuthError("invalid_client", "the client assertion is not a JWT", 401)
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", "the client assertion is not a JWT", 401) from exc
        subject = unverified.get("sub")
        client = self.client(subject) if isinstance(subject, str) else None
        if client is None or client.public_key is None:
            raise OAuthError("invalid_client", "no client with a public key is the subject", 401)
        if client_id is not None and client_id != client.client_id:
            raise OAuthError("invalid_client", "client_id is not the assertion's subject", 401)
        key, algorithms = client_key(client.public_key)
        audiences = [self.issuer, self.token_endpoint, endpoint]
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=list(algorithms),
                audience=audiences,
                issuer=client.client_id,
                options={
                    "require": ["iss", "sub", "aud", "exp", "jti"],
                    # Time is the server's clock, checked below.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", f"client assertion refused: {exc}", 401) from exc
        exp, jti = claims["exp"], claims["jti"]
        if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not isinstance(jti, str):
            raise OAuthError("invalid_client", "exp must be a number and jti a string", 401)
        with self._lock:
            now = self.now()
            if exp <= now:
                raise OAuthError("invalid_client", "the client assertion expired", 401)
            if exp - now > _MAX_ASSERTION_LIFETIME:
                raise OAuthError("invalid_client", "the client assertion lives too long", 401)
            if len(self._assertion_ids) >= _MAX_PENDING:
                self._assertion_ids = {j: e for j, e in self._assertion_ids.items() if e > now}
            if jti in self._assertion_ids or len(self._assertion_ids) >= _MAX_PENDING:
                raise OAuthError("invalid_client", "the client assertion was replayed", 401)
            self._assertion_ids[jti] = float(exp)
        return client

    def password_grant(
        self,
        client: Client,
        username: str,
        password: str,
        scope: frozenset[str] | None,
        *,
        jkt: str | None = None,
    ) -> Issued:
        self._require_grant(client, "password")
        user = self._config.user(username)
        if user is None or not secrets.compare_digest(password.encode(), user.password.encode()):
            raise self._invalid_grant("wrong username or password")
        granted = self._narrow_login(user, scope)
        with self._lock:
            now = self.now()
            family = self._new_family(user.username, client.client_id, granted, now)
            family.jkt = _refresh_binding(client, jkt)
            self._stats["logins"] += 1
            return self._issue(family, granted, now, with_refresh=True, jkt=jkt)

    def client_credentials_grant(
        self, client: Client, scope: frozenset[str] | None, *, jkt: str | None = None
    ) -> Issued:
        self._require_grant(client, "client_credentials")
        if client.is_public:
            raise OAuthError("unauthorized_client", "a public client has no credentials")
        granted = self._narrow(client.scopes, scope)
        with self._lock:
            now = self.now()
            family = self._new_family(None, client.client_id, granted, now)
            return self._issue(family, granted, now, with_refresh=False, jkt=jkt)

    def refresh_grant(
        self,
        client: Client,
        refresh_token: str,
        scope: frozenset[str] | None,
        *,
        jkt: str | None = None,
        resource: list[str] | None = None,
    ) -> Issued:
        self._require_grant(client, "refresh_token")
        with self._lock:
            config = self._config
            now = self.now()
            record = self._refresh.get(refresh_token)
            if record is None:
                raise self._invalid_grant("unknown refresh token")
            family = self._families[record.family_id]
            if family.client_id != client.client_id:
                raise self._invalid_grant("the refresh token was issued to another client")
            if family.resource and not resource:
                self._stats["refreshes_without_resource"] += 1
                if config.strict_resource:
                    # As strict servers do: the grant was for a resource, so must its refresh be.
                    self._stats["invalid_target"] += 1
                    raise OAuthError("invalid_target", "this grant needs its resource parameter")
            self._granted_resource(family.resource, resource)
            if family.revoked:
                raise self._invalid_grant("the session was revoked")
            if now >= family.created_at + config.refresh_ttl:
                raise self._invalid_grant("the session expired (refresh_ttl)")
            if family.jkt is not None and jkt != family.jkt:
                raise self._invalid_grant(
                    "the refresh token is bound to a DPoP key: sign with that key"
                )
            if record.retired_at is not None:
                if now - record.retired_at < config.reuse_grace and record.successor:
                    self._stats["refreshes"] += 1
                    self._stats["grace_replays"] += 1
                    successor = record.successor
                    return dataclasses.replace(successor, expires_in=successor.expires_at - now)
                if config.reuse_detection:
                    self._stats["reuse_detections"] += 1
                    self._revoke_family(family)
                    raise self._invalid_grant(
                        "refresh token reuse detected; the session was revoked"
                    )
                raise self._invalid_grant("the refresh token was already used")
            if (
                config.refresh_idle_ttl is not None
                and now >= family.last_active_at + config.refresh_idle_ttl
            ):
                raise self._invalid_grant("the session was idle too long (refresh_idle_ttl)")
            granted = self._narrow(family.scope, scope)
            family.last_active_at = now
            self._stats["refreshes"] += 1
            if config.revoke_access_on_refresh:
                for token in self._access.values():
                    if token.family_id == family.id:
                        token.revoked = True
            if not config.rotation:
                # RFC 6749 section 6: the client keeps its refresh token; none is returned.
                return self._issue(family, granted, now, jkt=jkt)
            issued = self._issue(family, granted, now, with_refresh=True, jkt=jkt)
            record.retired_at = now
            record.successor = issued
            self._stats["rotations"] += 1
            return issued

    # -- JWT bearer (RFC 7523 section 2.1) and token exchange (RFC 8693) ------------------

    def jwt_bearer_grant(
        self,
        client: Client | None,
        assertion: str,
        scope: frozenset[str] | None,
        endpoint: str,
        *,
        jkt: str | None = None,
    ) -> Issued:
        """Trade an assertion signed by a registered client's key for an access token.

        ``iss`` names the client (which must hold the grant and a public key; when the request
        authenticated a client, the same one); ``aud`` this server (issuer, token endpoint or
        the endpoint called); ``exp`` within ten minutes; ``jti`` never seen before from that
        issuer; ``nbf`` and ``iat`` not ahead of the server's clock. ``sub`` is the client
        itself when absent or equal to ``iss``, else a user of this server to act for. The
        scope is the form's, else the assertion's ``scope`` claim (as Google reads it), within
        what the client (or the user) may have. Every refusal is ``invalid_grant`` (RFC 7523
        section 3.1); no refresh token is issued.
        """
        claims, issuer = self._verified_assertion(assertion, endpoint)
        if client is not None and client.client_id != issuer.client_id:
            raise self._invalid_grant("the assertion was issued by another client")
        self._require_grant(issuer, JWT_BEARER_GRANT)
        subject = claims.get("sub", issuer.client_id)
        if scope is None:
            claimed = claims.get("scope")
            if claimed is not None and not isinstance(claimed, str):
                raise self._invalid_grant("the assertion's scope claim is not a string")
            scope = parse_scope(claimed)
        user = None
        if subject != issuer.client_id:
            user = self._config.user(subject) if isinstance(subject, str) else None
            if user is None:
                raise self._invalid_grant("the assertion's sub is no user of this server")
        granted = self._narrow(issuer.scopes if user is None else user.scopes, scope)
        with self._lock:
            now = self.now()
            username = None if user is None else user.username
            family = self._new_family(username, issuer.client_id, granted, now)
            return self._issue(family, granted, now, jkt=jkt)

    def _verified_assertion(self, assertion: str, endpoint: str) -> tuple[dict[str, Any], Client]:
        if not looks_like_jwt(assertion):
            raise self._invalid_grant("the assertion is not a JWT")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise self._invalid_grant("the assertion is not a JWT") from None
        issuer_id = unverified.get("iss")
        issuer = self.client(issuer_id) if isinstance(issuer_id, str) else None
        if issuer is None or issuer.public_key is None:
            raise self._invalid_grant("the assertion's iss is no client with a public key")
        key, algorithms = client_key(issuer.public_key)
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion,
                key,
                algorithms=list(algorithms),
                audience=[self.issuer, self.token_endpoint, endpoint],
                issuer=issuer.client_id,
                options={
                    "require": ["iss", "aud", "exp", "jti"],
                    # Time is the server's clock, checked below.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise self._invalid_grant(f"assertion refused: {exc}") from None
        exp, jti = claims["exp"], claims["jti"]
        if not _is_time(exp) or not isinstance(jti, str):
            raise self._invalid_grant("exp must be a number and jti a string")
        for name in ("nbf", "iat"):
            if name in claims and not _is_time(claims[name]):
                raise self._invalid_grant(f"{name} must be a number")
        with self._lock:
            now = self.now()
            if exp <= now:
                raise self._invalid_grant("the assertion expired")
            if exp - now > _MAX_ASSERTION_LIFETIME:
                raise self._invalid_grant("the assertion lives too long (ten minutes at most)")
            if any(claims.get(name, now) > now + _CLOCK_LEEWAY for name in ("nbf", "iat")):
                raise self._invalid_grant("the assertion is not valid yet")
            seen = f"{issuer.client_id} {jti}"
            if len(self._assertion_ids) >= _MAX_PENDING:
                self._assertion_ids = {j: e for j, e in self._assertion_ids.items() if e > now}
            if seen in self._assertion_ids or len(self._assertion_ids) >= _MAX_PENDING:
                raise self._invalid_grant("the assertion was replayed")
            self._assertion_ids[seen] = float(exp)
        return claims, issuer

    def token_exchange_grant(
        self,
        client: Client,
        form: Mapping[str, str],
        audiences: list[str],
        resources: list[str],
        scope: frozenset[str] | None,
        *,
        jkt: str | None = None,
    ) -> Issued:
        """RFC 8693: trade a valid access token of this server (the subject) for a new one
        issued to ``client``, for the same subject, narrowed to ``scope``.

        With an actor token (also one of ours) the new token says who acts: ``act`` holds the
        actor's subject, with the subject token's own ``act`` nested inside (section 4.1), up
        to a chain of eight. ``audience`` may only name this server's audience and
        ``resource`` URLs of this server (else ``invalid_target``); the requested token type
        is an access token (``access_token`` or ``jwt``). An invalid or unsupported subject or
        actor token is ``invalid_request`` (section 2.2.2). Revoking the subject token's
        session revokes what was exchanged for it.
        """
        self._require_grant(client, TOKEN_EXCHANGE_GRANT)
        requested = form.get("requested_token_type", _TOKEN_TYPE + "access_token")
        if requested not in _EXCHANGEABLE:
            raise OAuthError("invalid_request", "this server issues access tokens only")
        for audience in audiences:
            if audience != self._config.audience:
                raise OAuthError("invalid_target", "an audience this server does not serve")
        for resource in resources:
            if not (resource == self.url or resource.startswith(self.url + "/")):
                raise OAuthError("invalid_target", "a resource this server does not serve")
        actor_token, actor_type = form.get("actor_token"), form.get("actor_token_type")
        if (actor_token is None) != (actor_type is None):
            raise OAuthError("invalid_request", "actor_token and actor_token_type go together")
        subject = self._exchangeable(
            _required_field(form, "subject_token"),
            _required_field(form, "subject_token_type"),
            "subject",
        )
        actor = None
        if actor_token is not None and actor_type is not None:
            actor = self._exchangeable(actor_token, actor_type, "actor")
        with self._lock:
            record, source = subject
            granted = self._narrow(record.scope, scope)
            act = source.act
            if actor is not None:
                act = {"sub": actor[0].subject}
                if source.act is not None:
                    act["act"] = source.act
                if _depth(act) > _MAX_ACTORS:
                    raise OAuthError("invalid_request", "the delegation chain is too long")
            now = self.now()
            family = self._new_family(source.username, client.client_id, granted, now)
            family.subject, family.act, family.parent = record.subject, act, source.id
            issued = self._issue(family, granted, now, jkt=jkt)
        return dataclasses.replace(issued, issued_token_type=requested)

    def _exchangeable(self, token: str, kind: str, role: str) -> tuple[_AccessToken, _Family]:
        """A subject or actor token: one of this server's live access tokens."""
        if kind not in _EXCHANGEABLE:
            raise OAuthError("invalid_request", f"unsupported {role}_token_type")
        jti = self.key.verified_jti(token)
        with self._lock:
            record = self._access.get(jti) if jti else None
            family = None if record is None else self._families[record.family_id]
            if record is None or family is None:
                raise OAuthError("invalid_request", f"the {role}_token is not one of ours")
            if record.revoked or not self._alive(family):
                raise OAuthError("invalid_request", f"the {role}_token was revoked")
            if record.seq < self._expired_before_seq or self.now() >= record.expires_at:
                raise OAuthError("invalid_request", f"the {role}_token expired")
            return record, family

    def _alive(self, family: _Family) -> bool:
        """Not revoked, nor is any family it was exchanged from."""
        for _ in range(_MAX_ACTORS + 2):
            if family.revoked:
                return False
            if family.parent is None:
                return True
            family = self._families[family.parent]
        return False

    # -- authorization code (RFC 6749 section 4.1, RFC 7636, RFC 9207) --------------------

    def authorization_request(self, params: Mapping[str, str]) -> PendingAuthorization:
        """Validate an authorization request; the login form then carries the result's id."""
        client_id = params.get("client_id")
        client = self.client(client_id) if client_id else None
        if client is None:
            raise AuthorizationRefused("invalid_request", "unknown or missing client_id")
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is None:
            raise AuthorizationRefused("invalid_request", "redirect_uri is required")
        if not redirect_uri_allowed(client, redirect_uri):
            raise AuthorizationRefused(
                "invalid_request", "redirect_uri is not registered for this client"
            )
        state = params.get("state")
        if state is not None and len(state) > _MAX_PARAMETER:
            state = None  # not echoed: too long to carry around

        def refused(error: str, description: str) -> AuthorizationRefused:
            return AuthorizationRefused(error, description, redirect_uri=redirect_uri, state=state)

        if state is None and "state" in params:
            raise refused("invalid_request", f"state is limited to {_MAX_PARAMETER} characters")
        if params.get("response_type") != "code":
            raise refused("unsupported_response_type", "only response_type=code is supported")
        if "authorization_code" not in client.grants:
            raise refused("unauthorized_client", "this client may not use authorization codes")
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if challenge is None:
            if client.is_public:
                raise refused("invalid_request", "public clients must send a PKCE code_challenge")
            if method is not None:
                raise refused("invalid_request", "code_challenge_method without code_challenge")
        elif method != "S256":
            raise refused("invalid_request", "code_challenge_method must be S256")
        elif not _PKCE_CHALLENGE.fullmatch(challenge):
            raise refused("invalid_request", "code_challenge is not a base64url SHA-256")
        nonce = params.get("nonce")
        if nonce is not None and len(nonce) > _MAX_PARAMETER:
            raise refused("invalid_request", f"nonce is limited to {_MAX_PARAMETER} characters")
        if params.get("prompt") == "none":
            # OpenID Connect Core 3.1.2.6: nobody is signed in here without the form.
            raise refused("login_required", "no user is signed in")
        try:
            scope = parse_scope(params.get("scope"))
        except OAuthError as error:
            raise refused(error.error, error.description) from None
        resource = (params["resource"],) if params.get("resource") else ()
        if (problem := check_resources(list(resource))) is not None:
            raise refused("invalid_target", problem)
        with self._lock:
            now = self.now()
            self._prune_pending(now)
            if len(self._pending) >= _MAX_PENDING:
                raise refused("temporarily_unavailable", "too many sign-ins in progress")
            pending = PendingAuthorization(
                secrets.token_urlsafe(24),
                client.client_id,
                redirect_uri,
                scope,
                state,
                nonce,
                challenge,
                now,
                resource,
            )
            self._pending[pending.id] = pending
            return pending

    def pending_authorization(self, request_id: str) -> PendingAuthorization:
        with self._lock:
            pending = self._pending.get(request_id)
            if pending is None or self.now() >= pending.created_at + _PENDING_TTL:
                raise AuthorizationRefused(
                    "invalid_request", "this sign-in page expired: start again from the app"
                )
            return pending

    def complete_authorization(
        self, request_id: str, username: str | None, password: str | None, *, approve: bool
    ) -> str:
        """The login form's answer: the redirect URI with a code, or with the error."""
        pending = self.pending_authorization(request_id)
        user = None
        if approve:
            user = self._check_password(username, password)
        with self._lock:
            if self._pending.pop(request_id, None) is None:
                raise AuthorizationRefused(
                    "invalid_request", "this sign-in was already answered: start again"
                )
            if user is None:
                self._stats["consents_denied"] += 1
                return self._redirect(pending, error="access_denied", error_description="denied")
            try:
                scope = self._narrow_login(user, pending.scope)
            except OAuthError as error:
                return self._redirect(
                    pending, error=error.error, error_description=error.description
                )
            now = self.now()
            if len(self._codes) >= _MAX_PENDING:
                self._codes = {c: r for c, r in self._codes.items() if r.expires_at > now}
            if len(self._codes) >= _MAX_PENDING:
                return self._redirect(pending, error="temporarily_unavailable")
            code = secrets.token_urlsafe(32)
            self._codes[code] = _Code(
                pending.client_id,
                pending.redirect_uri,
                user.username,
                scope,
                pending.code_challenge,
                pending.nonce,
                now,
                now + self._config.code_ttl,
                resource=pending.resource,
            )
            self._stats["authorization_codes"] += 1
            return self._redirect(pending, code=code)

    def authorization_code_grant(
        self,
        client: Client,
        code: str,
        redirect_uri: str | None,
        code_verifier: str | None,
        *,
        jkt: str | None = None,
        resource: list[str] | None = None,
    ) -> Issued:
        self._require_grant(client, "authorization_code")
        with self._lock:
            record = self._codes.get(code)
            if record is None:
                raise self._invalid_grant("unknown authorization code")
            if record.used:
                self._stats["code_replays"] += 1
                family = self._families.get(record.family_id or "")
                if family is not None:
                    self._revoke_family(family)
                raise self._invalid_grant(
                    "the authorization code was already used; its tokens are revoked"
                )
            record.used = True  # whatever follows: a code gets one attempt
            now = self.now()
            if now >= record.expires_at:
                raise self._invalid_grant("the authorization code expired")
            if record.client_id != client.client_id:
                raise self._invalid_grant("the code was issued to another client")
            if redirect_uri != record.redirect_uri:
                raise self._invalid_grant("redirect_uri differs from the authorization request")
            if record.code_challenge is None:
                if code_verifier is not None:
                    raise self._invalid_grant("code_verifier sent, but no code_challenge was")
            elif code_verifier is None or not _PKCE_VERIFIER.fullmatch(code_verifier):
                raise self._invalid_grant("a valid code_verifier is required (PKCE)")
            elif not secrets.compare_digest(pkce_challenge(code_verifier), record.code_challenge):
                raise self._invalid_grant("code_verifier does not match the code_challenge")
            family = self._new_family(record.username, client.client_id, record.scope, now)
            family.resource = self._granted_resource(record.resource, resource)
            family.auth_time = record.auth_time
            family.jkt = _refresh_binding(client, jkt)
            record.family_id = family.id
            self._stats["logins"] += 1
            return self._issue(
                family, record.scope, now, with_refresh=True, nonce=record.nonce, jkt=jkt
            )

    # -- device authorization (RFC 8628) --------------------------------------------------

    def device_authorization(self, client: Client, scope: frozenset[str] | None) -> DeviceGrant:
        self._require_grant(client, DEVICE_CODE_GRANT)
        with self._lock:
            config = self._config
            now = self.now()
            if len(self._device_codes) >= _MAX_PENDING:
                for device_code, record in list(self._device_codes.items()):
                    if record.expires_at <= now:
                        self._forget_device_code(device_code)
            if len(self._device_codes) >= _MAX_PENDING:
                raise OAuthError("temporarily_unavailable", "too many device logins in progress")
            device_code = secrets.token_urlsafe(32)
            user_code = self._new_user_code()
            self._device_codes[device_code] = _DeviceCode(
                client.client_id,
                user_code,
                scope,
                now + config.device_code_ttl,
                config.device_interval,
            )
            self._user_codes[normalize_user_code(user_code)] = device_code
            self._stats["device_codes"] += 1
            return DeviceGrant(
                device_code, user_code, config.device_code_ttl, config.device_interval
            )

    def complete_device(
        self, user_code: str, username: str | None, password: str | None, *, approve: bool
    ) -> Literal["approved", "denied"]:
        """The device page's answer. Raises LoginRejected for an unknown or expired code and
        for a wrong password (the page is shown again)."""
        user = self._check_password(username, password) if approve else None
        with self._lock:
            device_code = self._user_codes.get(normalize_user_code(user_code), "")
            record = self._device_codes.get(device_code)
            if record is None or record.status != "pending" or self.now() >= record.expires_at:
                raise LoginRejected("that code is unknown, already used or expired")
            if user is None:
                record.status = "denied"
                self._stats["consents_denied"] += 1
                return "denied"
            try:
                record.scope = self._narrow_login(user, record.requested_scope)
            except OAuthError:
                record.status = "denied"
                raise LoginRejected(
                    "the device asked for scopes this user does not have; it was denied"
                ) from None
            record.status = "approved"
            record.username = user.username
            record.auth_time = self.now()
            self._stats["device_approvals"] += 1
            return "approved"

    def device_code_grant(
        self, client: Client, device_code: str, *, jkt: str | None = None
    ) -> Issued:
        self._require_grant(client, DEVICE_CODE_GRANT)
        with self._lock:
            record = self._device_codes.get(device_code)
            if record is None or record.client_id != client.client_id:
                raise self._invalid_grant("unknown device code")
            now = self.now()
            if now >= record.expires_at:
                self._forget_device_code(device_code)
                raise OAuthError("expired_token", "the device code expired: start again")
            if record.last_poll is not None and now - record.last_poll < record.interval:
                record.interval += _SLOW_DOWN
                record.last_poll = now
                raise OAuthError(
                    "slow_down", f"poll at most every {record.interval:g} seconds from now"
                )
            record.last_poll = now
            if record.status == "pending":
                raise OAuthError("authorization_pending", "the user has not answered yet")
            self._forget_device_code(device_code)
            if record.status == "denied":
                raise OAuthError("access_denied", "the user denied access")
            assert record.username is not None
            family = self._new_family(record.username, client.client_id, record.scope, now)
            family.auth_time = record.auth_time
            family.jkt = _refresh_binding(client, jkt)
            self._stats["logins"] += 1
            return self._issue(family, record.scope, now, with_refresh=True, jkt=jkt)

    def revoke_token(self, client: Client, token: str) -> None:
        """RFC 7009: unknown tokens and other clients' tokens are silently ignored."""
        jti = self.key.verified_jti(token)
        with self._lock:
            self._stats["revocation_requests"] += 1
            record = self._refresh.get(token)
            if record is not None:
                family = self._families[record.family_id]
                if family.client_id == client.client_id:
                    self._revoke_family(family)
                return
            access = self._access.get(jti) if jti else None
            if access and self._families[access.family_id].client_id == client.client_id:
                access.revoked = True

    # -- the protected API ---------------------------------------------------------------

    def authenticate(
        self,
        token: str,
        required_scope: str | None,
        *,
        resource: str | None = None,
        strict_resource: bool = False,
    ) -> Principal:
        """Who ``token`` speaks for. A token issued for resources (RFC 8707) is good only at
        them: ``resource`` is where it is presented; ``strict_resource`` refuses tokens issued
        for no resource at all (an MCP server's audience check)."""
        with self._lock:
            if self._fail_api > 0:
                self._fail_api -= 1
                self._stats["faults_served"] += 1
                raise self._unauthorized("injected failure (fail_api)")
        jti = self.key.verified_jti(token)  # outside the lock: it may verify a signature
        with self._lock:
            record = self._access.get(jti) if jti else None
            if jti is None or record is None:
                raise self._unauthorized("the access token is malformed or not ours")
            family = self._families[record.family_id]
            if record.revoked or not self._alive(family):
                raise self._unauthorized("the access token was revoked")
            if record.seq < self._expired_before_seq or self.now() >= record.expires_at:
                raise self._unauthorized("the access token expired")
            bound = record.resource or strict_resource
            if resource is not None and bound and not _names(record.resource, resource):
                raise self._unauthorized("the access token is for another resource")
            if required_scope is not None and required_scope not in record.scope:
                self._stats["forbidden_403"] += 1
                raise BearerError(
                    403, "insufficient_scope", f"needs scope {required_scope}", required_scope
                )
            return Principal(
                record.subject,
                family.username,
                family.client_id,
                record.scope,
                jti,
                record.expires_at,
                record.jkt,
                family.act,
                record.resource,
            )

    def count(self, counter: str) -> None:
        with self._lock:
            self._stats[counter] += 1

    def count_token_request(self, grant: str) -> None:
        with self._lock:
            self._stats["token_requests"] += 1
            by_grant = self._stats["token_requests_by_grant"]
            grant = _GRANT_COUNTERS.get(grant, grant)
            by_grant[grant if grant in by_grant else "other"] += 1

    def token_request_began(self) -> None:
        """A token request arrived: counted in flight until it is answered (for a client's
        concurrency cap to be seen from the server's side)."""
        with self._lock:
            stats = self._stats
            stats["token_requests_in_flight"] += 1
            stats["most_token_requests_in_flight"] = max(
                stats["most_token_requests_in_flight"], stats["token_requests_in_flight"]
            )

    def token_request_ended(self) -> None:
        with self._lock:
            self._stats["token_requests_in_flight"] -= 1

    def count_token_error(self, error: str) -> None:
        with self._lock:
            self._stats["token_errors"] += 1
            if error in ("invalid_grant", "invalid_client"):
                self._stats[error] += 1

    def add_item(self, owner: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if len(self._items) >= _MAX_ITEMS:
                raise BearerError(400, None, "the demo store is full")
            item_id = next(self._item_ids)
            item = {**body, "id": item_id, "owner": owner}
            self._items[item_id] = item
            return item

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.values())

    def item(self, item_id: int) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(item_id)

    # -- faults --------------------------------------------------------------------------

    def arm(self, faults: Faults) -> None:
        for fault in faults.token_failures:
            self.inject(fault.kind, fault.count, retry_after=fault.retry_after)
        if faults.latency:
            self.set_latency(faults.latency)
        if faults.fail_api:
            self.fail_api(faults.fail_api)

    def inject(self, kind: FaultKind, count: int = 1, *, retry_after: int | None = None) -> None:
        """Queue ``count`` failures of the next token requests (after any already queued)."""
        fault = TokenFault(kind, 1, retry_after)
        with self._lock:
            if len(self._token_faults) + count > _MAX_FAULTS:
                raise ValueError(f"at most {_MAX_FAULTS} queued faults")
            if count < 1:
                raise ValueError("a fault is served at least once")
            self._token_faults.extend(itertools.repeat(fault, count))

    def take_token_fault(self) -> TokenFault | None:
        with self._lock:
            if not self._token_faults:
                return None
            self._stats["faults_served"] += 1
            return self._token_faults.popleft()

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    def set_latency(self, seconds: float) -> None:
        Faults(latency=seconds)  # validates
        with self._lock:
            self._latency = seconds

    def fail_api(self, calls: int) -> None:
        Faults(fail_api=calls)  # validates
        with self._lock:
            self._fail_api = calls

    def expire_access_tokens(self) -> None:
        with self._lock:
            self._expired_before_seq = next(self._seq)

    def revoke_user(self, username: str) -> int:
        """Revoke every live family of ``username``; returns how many."""
        with self._lock:
            families = [
                f for f in self._families.values() if f.username == username and not f.revoked
            ]
            for family in families:
                self._revoke_family(family)
            return len(families)

    def clear_faults(self) -> None:
        with self._lock:
            self._token_faults.clear()
            self._latency = 0.0
            self._fail_api = 0
        self.dpop.demand_new_nonce(0)

    def faults(self) -> dict[str, Any]:
        with self._lock:
            queued: dict[str, int] = collections.Counter(f.kind for f in self._token_faults)
            return {"latency": self._latency, "token_failures": queued, "fail_api": self._fail_api}

    # -- counters ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats = dict(self._stats)
            stats["token_requests_by_grant"] = dict(stats["token_requests_by_grant"])
        return {**stats, **self.dpop.stats()}

    def reset_stats(self) -> None:
        with self._lock:
            in_flight = self._stats["token_requests_in_flight"]  # still to be answered
            self._stats = _zero_stats()
            self._stats["token_requests_in_flight"] = in_flight
            self._stats["most_token_requests_in_flight"] = in_flight
        self.dpop.reset_stats()

    # -- internals (the lock is held by the caller where it matters) ---------------------

    def _require_grant(self, client: Client, grant: Grant) -> None:
        if grant not in client.grants:
            raise OAuthError("unauthorized_client", f"this client may not use the {grant} grant")

    @staticmethod
    def _narrow(allowed: frozenset[str], requested: frozenset[str] | None) -> frozenset[str]:
        if requested is None:
            return allowed
        if not requested <= allowed:
            raise OAuthError("invalid_scope", "the scope exceeds what may be granted")
        return requested

    @staticmethod
    def _narrow_login(user: User, requested: frozenset[str] | None) -> frozenset[str]:
        """A login's scope: identity scopes as asked, API scopes as asked or else all."""
        if requested is None:
            return user.scopes
        api = requested - IDENTITY_SCOPES
        if not api <= user.scopes:
            raise OAuthError("invalid_scope", "the scope exceeds what may be granted")
        return (api or user.scopes) | (requested & IDENTITY_SCOPES)

    def _check_password(self, username: str | None, password: str | None) -> User:
        user = self._config.user(username) if username else None
        expected = user.password if user is not None else "\x00 no such user"
        if not secrets.compare_digest((password or "").encode(), expected.encode()) or not user:
            raise LoginRejected("wrong username or password")
        return user

    def _redirect(self, pending: PendingAuthorization, **params: str | None) -> str:
        params["state"] = pending.state
        if self._config.authorization_response_iss:
            params["iss"] = self.issuer
        return _add_query(pending.redirect_uri, params)

    def _prune_pending(self, now: float) -> None:
        if len(self._pending) >= _MAX_PENDING:
            self._pending = {
                i: p for i, p in self._pending.items() if now < p.created_at + _PENDING_TTL
            }

    def _new_user_code(self) -> str:
        while True:
            raw = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
            if raw not in self._user_codes:
                return f"{raw[:4]}-{raw[4:]}"

    def _forget_device_code(self, device_code: str) -> None:
        record = self._device_codes.pop(device_code, None)
        if record is not None:
            self._user_codes.pop(normalize_user_code(record.user_code), None)

    @staticmethod
    def _granted_resource(authorized: tuple[str, ...], asked: list[str] | None) -> tuple[str, ...]:
        """RFC 8707 2.2: a token request may name the authorized resources or fewer."""
        if not asked:
            return authorized
        if (problem := check_resources(asked)) is not None:
            raise OAuthError("invalid_target", problem)
        if authorized and not set(asked) <= set(authorized):
            raise OAuthError("invalid_target", "a resource the grant was not authorized for")
        return tuple(dict.fromkeys(asked))

    def _invalid_grant(self, description: str) -> OAuthError:
        return OAuthError("invalid_grant", description)

    def _unauthorized(self, description: str) -> BearerError:
        self._stats["unauthorized_401"] += 1
        return BearerError(401, "invalid_token", description)

    def _new_family(
        self, username: str | None, client_id: str, scope: frozenset[str], now: float
    ) -> _Family:
        family = _Family(secrets.token_urlsafe(12), username, client_id, scope, now, now)
        self._families[family.id] = family
        return family

    def _revoke_family(self, family: _Family) -> None:
        if not family.revoked:
            family.revoked = True
            self._stats["family_revocations"] += 1

    def _issue(
        self,
        family: _Family,
        scope: frozenset[str],
        now: float,
        *,
        with_refresh: bool = False,
        nonce: str | None = None,
        jkt: str | None = None,
    ) -> Issued:
        seq = next(self._seq)
        if seq % _PRUNE_EVERY == 0:
            self._prune(now)
        jti = secrets.token_urlsafe(16)
        subject = family.subject or family.username or family.client_id
        expires_at = now + self._config.access_ttl
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            # A resource's tokens name it too (RFC 8707); the server's own audience stays so
            # that it still reads them, and authenticate() checks where they are presented.
            "aud": [self._config.audience, *family.resource]
            if family.resource
            else self._config.audience,
            # Whole seconds, rounded towards the past: a client reading them never believes a
            # token lives longer than the server (which keeps the exact expiry) lets it.
            "iat": int(now),
            "exp": int(expires_at),
            "jti": jti,
            "scope": format_scope(scope),
            "client_id": family.client_id,
        }
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}  # RFC 9449 section 6.1
        if family.act is not None:
            claims["act"] = family.act  # RFC 8693 section 4.1
        access_token = self.key.sign(claims)
        self._access[jti] = _AccessToken(
            family.id, subject, expires_at, scope, seq, jkt=jkt, resource=family.resource
        )
        refresh_token = None
        if with_refresh:
            refresh_token = secrets.token_urlsafe(32)
            self._refresh[refresh_token] = _RefreshToken(family.id)
        id_token = None
        if "openid" in scope and family.username is not None:
            id_token = self._id_token(family, access_token, now, expires_at, nonce)
        return Issued(
            access_token,
            expires_at,
            self._config.access_ttl,
            scope,
            refresh_token,
            id_token,
            jkt,
        )

    def _id_token(
        self, family: _Family, access_token: str, now: float, expires_at: float, nonce: str | None
    ) -> str:
        """OpenID Connect Core 2 and 3.1.3.6; a refresh's has no nonce (section 12.2)."""
        digest = hashlib.sha256(access_token.encode("ascii")).digest()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": family.username,
            "aud": family.client_id,
            "azp": family.client_id,
            "iat": int(now),
            "exp": int(expires_at),
            "auth_time": int(family.auth_time if family.auth_time is not None else now),
            "at_hash": base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii"),
            "preferred_username": family.username,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        claims.update(self._config.id_token_claims)
        return self.key.sign(claims)

    def _prune(self, now: float) -> None:
        """Forget access tokens an hour past expiry; they then read as 'not ours'."""
        dead = [jti for jti, t in self._access.items() if t.expires_at < now - 3600]
        for jti in dead:
            del self._access[jti]

    def __repr__(self) -> str:
        return f"ServerState(issuer={self.issuer!r}, families={len(self._families)})"


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
