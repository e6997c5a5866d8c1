"""What a reference server is: its clients, users, token lifetimes and start-up faults.

Everything here is a frozen value with no I/O, importable without the ``server`` extra.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal, get_args

__all__ = [
    "DEMO_CLIENTS",
    "DEMO_USERS",
    "Client",
    "FaultKind",
    "Faults",
    "ServerConfig",
    "TokenFault",
    "User",
]

Grant = Literal["password", "refresh_token", "client_credentials"]
ALL_GRANTS: frozenset[Grant] = frozenset(get_args(Grant))

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


@dataclass(frozen=True)
class Client:
    """An OAuth client; ``secret=None`` makes it public (it sends only its ``client_id``)."""

    client_id: str
    secret: str | None
    grants: frozenset[Grant]
    # What client_credentials grants, and its default when no scope is asked for. Password
    # grants are bounded by the user's scopes instead.
    scopes: frozenset[str] = frozenset({"read", "write"})

    def __repr__(self) -> str:
        kind = "public" if self.secret is None else "confidential"
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
    Client("demo-public", None, frozenset({"password", "refresh_token"})),
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

    def __post_init__(self) -> None:
        for name in ("access_ttl", "refresh_ttl"):
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

    def client(self, client_id: str) -> Client | None:
        return next((c for c in self.clients if c.client_id == client_id), None)

    def user(self, username: str) -> User | None:
        return next((u for u in self.users if u.username == username), None)
