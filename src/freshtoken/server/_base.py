"""What every part of the server's state shares: its lock, its records, its
configuration and clock, issuing tokens and counting. ``_state`` composes the jobs
built on it."""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import itertools
import secrets
import threading
from typing import Any

from .._core.clock import Clock, system_clock
from ._config import (
    Client,
    Grant,
    ServerConfig,
    TokenFault,
    User,
)
from ._dpop import DPoPVerifier
from ._keys import SigningKey
from ._records import (
    _GRANT_COUNTERS,
    _MAX_ACTORS,
    _PRUNE_EVERY,
    IDENTITY_SCOPES,
    BearerError,
    Issued,
    LoginRejected,
    OAuthError,
    PendingAuthorization,
    _AccessToken,
    _check_client_keys,
    _Code,
    _DeviceCode,
    _Family,
    _RefreshToken,
    _zero_stats,
    format_scope,
)
from ._registration import check_resources


class StateBase:
    """The lock, the records and the configuration; issuing tokens and counting. Each
    mixin of ``ServerState`` adds one job on top."""

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

    def client(self, client_id: str) -> Client | None:
        """A configured client, or one registered at run time (RFC 7591)."""
        configured = self._config.client(client_id)
        if configured is not None:
            return configured
        registered = self._registered.get(client_id)
        return None if registered is None else registered[0]

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

    def _alive(self, family: _Family) -> bool:
        """Not revoked, nor is any family it was exchanged from."""
        for _ in range(_MAX_ACTORS + 2):
            if family.revoked:
                return False
            if family.parent is None:
                return True
            family = self._families[family.parent]
        return False

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
