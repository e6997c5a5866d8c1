"""Server-side sessions of a backend for frontend: what a browser's cookie stands for.

The browser holds an opaque random id (32 bytes from ``secrets``, base64url, 43 characters).
Stores never see it: they key sessions by its *handle*, the SHA-256 of the id, so a dump of
the store (or a look at Redis) gives no cookie that would log anyone in.

A session is its claims (who logged in, shown by ``/user``), its absolute end and its idle
deadline, which every use pushes forward; and its tokens, in a [`TokenStore`][freshtoken.TokenStore]
of its own ([`SessionStore.token_store()`][SessionStore.token_store]) that a
[`TokenManager`][freshtoken.TokenManager] keeps fresh, single-flighted across workers.

* [`MemorySessionStore`][freshtoken.bff.MemorySessionStore] (``_memory_sessions``): one
  process. A cap (``max_sessions``) with least-recently-used eviction, so a flood of logins
  costs bounded memory; expired sessions go first.
* [`RedisSessionStore`][freshtoken.bff.RedisSessionStore] (``_redis_sessions``): any number
  of workers, on a plain Redis, a Sentinel-managed master or a Redis Cluster. One hash per
  session holds the claims (sealed), the absolute end, the idle deadline and the tokens (a
  [`RedisStore`][freshtoken.RedisStore] on the same key, sealed too); the hash's TTL follows
  the idle deadline, so Redis forgets abandoned sessions by itself. Keys are
  ``<prefix>{<handle>}``: hash-tagged, so a session's hash and lock share a cluster slot.
  A record that none of the BFF's keys opens (sealed under a key since dropped, or altered)
  is no session: it is deleted, and the browser logs in again.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UnreadableSession
from ..stores._base import TokenStore

__all__ = [
    "Session",
    "SessionStore",
    "UnreadableSession",
    "handle_of",
    "new_session_id",
    "valid_session_id",
]

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")


def new_session_id() -> str:
    """A new opaque session id: 256 random bits, base64url (43 characters)."""
    return secrets.token_urlsafe(32)


def valid_session_id(text: str) -> bool:
    """Whether ``text`` looks like an id [`new_session_id()`][new_session_id] made (checked before
    any lookup, so a forged cookie costs no store call)."""
    return _SESSION_ID.fullmatch(text) is not None


def handle_of(session_id: str) -> str:
    """The store key of a session: SHA-256 of its id, hex."""
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """A live session, as a request sees it. Holds no token."""

    handle: str
    created_at: float
    expires_at: float  # the absolute end, whatever the activity
    claims: Mapping[str, Any]

    def __repr__(self) -> str:
        return f"Session(handle={self.handle[:8]}..., expires_at={self.expires_at:.0f})"


class SessionStore(abc.ABC):
    """Where sessions live. All times are epoch seconds from the BFF's clock."""

    @abc.abstractmethod
    async def create(
        self, handle: str, claims: Mapping[str, Any], *, now: float, idle: float, absolute: float
    ) -> Session:
        """Start a session (replacing any under ``handle``), with no tokens yet."""

    @abc.abstractmethod
    async def get(self, handle: str, *, now: float, idle: float) -> Session | None:
        """The session if it lives, its idle deadline moved to ``now + idle``; else None (an
        expired one is removed)."""

    async def alive(self, handle: str, *, now: float, idle: float) -> bool:
        """Whether the session lives, its idle deadline moved as [`get()`][get] moves it: what
        a proxied call asks, which needs no claims. By default, ``get() is not None``."""
        return await self.get(handle, now=now, idle=idle) is not None

    @abc.abstractmethod
    async def delete(self, handle: str) -> None:
        """End a session and forget its tokens. Deleting twice is harmless."""

    @abc.abstractmethod
    def token_store(self, handle: str) -> TokenStore:
        """The session's tokens, as a TokenStore for its TokenManager."""

    def use_key(self, key: bytes) -> None:  # noqa: B027 - optional hook
        """The BFF's 32-byte key, for stores that seal what they keep."""

    def use_keys(self, key: bytes, previous: Sequence[bytes]) -> None:
        """The BFF's current key and its previous ones (called once): stores that seal what
        they keep seal with ``key`` and open with any. By default, [`use_key()`][use_key]."""
        self.use_key(key)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
