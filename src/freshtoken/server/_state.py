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

Every method takes one ``threading.Lock``: the app calls them from uvicorn's event loop
thread, tests call them from their own threads. None of them awaits or does I/O while
holding it.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from .._clock import Clock, system_clock
from ._config import Client, FaultKind, Faults, Grant, ServerConfig, TokenFault
from ._keys import SigningKey

__all__ = ["BearerError", "Issued", "OAuthError", "Principal", "ServerState"]

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_PRUNE_EVERY = 1024
_MAX_ITEMS = 10_000
_MAX_FAULTS = 10_000


class OAuthError(Exception):
    """An error answer of a token endpoint (RFC 6749 section 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


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


@dataclass
class _Family:
    id: str
    username: str | None  # None for client_credentials
    client_id: str
    scope: frozenset[str]  # what the login granted; refreshes may ask for less
    created_at: float
    last_active_at: float
    revoked: bool = False


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


def _zero_stats() -> dict[str, Any]:
    return {
        "token_requests": 0,
        "token_requests_by_grant": {
            "password": 0,
            "refresh_token": 0,
            "client_credentials": 0,
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
    }


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


class ServerState:
    def __init__(self, config: ServerConfig, *, clock: Clock = system_clock, issuer: str) -> None:
        self._lock = threading.Lock()
        self._config = config
        self.clock = clock
        self.issuer = issuer
        self.key = SigningKey(issuer=issuer, audience=config.audience)
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
        self.arm(config.faults)

    # -- configuration and clock ---------------------------------------------------------

    @property
    def config(self) -> ServerConfig:
        with self._lock:
            return self._config

    def configure(self, **changes: Any) -> ServerConfig:
        """Change the lifecycle at run time; tokens already issued keep their expiry."""
        if "audience" in changes:
            raise ValueError("the audience is fixed once the signing key exists")
        with self._lock:
            self._config = dataclasses.replace(self._config, **changes)
            return self._config

    def now(self) -> float:
        return self.clock() + self._config.clock_offset

    # -- clients and grants --------------------------------------------------------------

    def authenticate_client(self, client_id: str, secret: str | None) -> Client:
        """client_secret_basic, client_secret_post, or a public client sending no secret."""
        client = self._config.client(client_id)
        if client is None:
            raise OAuthError("invalid_client", "unknown client", 401)
        if client.secret is None:
            if secret is not None:
                raise OAuthError("invalid_client", "a public client has no secret", 401)
            return client
        if secret is None:
            raise OAuthError("invalid_client", "client authentication is required", 401)
        if not secrets.compare_digest(secret.encode(), client.secret.encode()):
            raise OAuthError("invalid_client", "wrong client secret", 401)
        return client

    def password_grant(
        self, client: Client, username: str, password: str, scope: frozenset[str] | None
    ) -> Issued:
        self._require_grant(client, "password")
        user = self._config.user(username)
        if user is None or not secrets.compare_digest(password.encode(), user.password.encode()):
            raise self._invalid_grant("wrong username or password")
        granted = self._narrow(user.scopes, scope)
        with self._lock:
            now = self.now()
            family = self._new_family(user.username, client.client_id, granted, now)
            self._stats["logins"] += 1
            return self._issue(family, granted, now, with_refresh=True)

    def client_credentials_grant(self, client: Client, scope: frozenset[str] | None) -> Issued:
        self._require_grant(client, "client_credentials")
        if client.secret is None:
            raise OAuthError("unauthorized_client", "a public client has no credentials")
        granted = self._narrow(client.scopes, scope)
        with self._lock:
            now = self.now()
            family = self._new_family(None, client.client_id, granted, now)
            return self._issue(family, granted, now, with_refresh=False)

    def refresh_grant(
        self, client: Client, refresh_token: str, scope: frozenset[str] | None
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
            if family.revoked:
                raise self._invalid_grant("the session was revoked")
            if now >= family.created_at + config.refresh_ttl:
                raise self._invalid_grant("the session expired (refresh_ttl)")
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
            if not config.rotation:
                # RFC 6749 section 6: the client keeps its refresh token; none is returned.
                return self._issue(family, granted, now)
            issued = self._issue(family, granted, now, with_refresh=True)
            record.retired_at = now
            record.successor = issued
            self._stats["rotations"] += 1
            return issued

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

    def authenticate(self, token: str, required_scope: str | None) -> Principal:
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
            if record.revoked or family.revoked:
                raise self._unauthorized("the access token was revoked")
            if record.seq < self._expired_before_seq or self.now() >= record.expires_at:
                raise self._unauthorized("the access token expired")
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
            )

    def count(self, counter: str) -> None:
        with self._lock:
            self._stats[counter] += 1

    def count_token_request(self, grant: str) -> None:
        with self._lock:
            self._stats["token_requests"] += 1
            by_grant = self._stats["token_requests_by_grant"]
            by_grant[grant if grant in by_grant else "other"] += 1

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

    def faults(self) -> dict[str, Any]:
        with self._lock:
            queued: dict[str, int] = collections.Counter(f.kind for f in self._token_faults)
            return {"latency": self._latency, "token_failures": queued, "fail_api": self._fail_api}

    # -- counters ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats = dict(self._stats)
            stats["token_requests_by_grant"] = dict(stats["token_requests_by_grant"])
            return stats

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = _zero_stats()

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
    ) -> Issued:
        seq = next(self._seq)
        if seq % _PRUNE_EVERY == 0:
            self._prune(now)
        jti = secrets.token_urlsafe(16)
        subject = family.username or family.client_id
        expires_at = now + self._config.access_ttl
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self._config.audience,
            # Whole seconds, rounded towards the past: a client reading them never believes a
            # token lives longer than the server (which keeps the exact expiry) lets it.
            "iat": int(now),
            "exp": int(expires_at),
            "jti": jti,
            "scope": format_scope(scope),
            "client_id": family.client_id,
        }
        access_token = self.key.sign(claims)
        self._access[jti] = _AccessToken(family.id, subject, expires_at, scope, seq)
        refresh_token = None
        if with_refresh:
            refresh_token = secrets.token_urlsafe(32)
            self._refresh[refresh_token] = _RefreshToken(family.id)
        return Issued(access_token, expires_at, self._config.access_ttl, scope, refresh_token)

    def _prune(self, now: float) -> None:
        """Forget access tokens an hour past expiry; they then read as 'not ours'."""
        dead = [jti for jti, t in self._access.items() if t.expires_at < now - 3600]
        for jti in dead:
            del self._access[jti]

    def __repr__(self) -> str:
        return f"ServerState(issuer={self.issuer!r}, families={len(self._families)})"
