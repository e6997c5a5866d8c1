"""Server-side sessions of a backend for frontend: what a browser's cookie stands for.

The browser holds an opaque random id (32 bytes from ``secrets``, base64url, 43 characters).
Stores never see it: they key sessions by its *handle*, the SHA-256 of the id, so a dump of
the store (or a look at Redis) gives no cookie that would log anyone in.

A session is its claims (who logged in, shown by ``/user``), its absolute end and its idle
deadline, which every use pushes forward; and its tokens, in a [`TokenStore`][freshtoken.TokenStore]
of its own ([`SessionStore.token_store()`][SessionStore.token_store]) that a
[`TokenManager`][freshtoken.TokenManager] keeps fresh, single-flighted across workers.

* [`MemorySessionStore`][]: one process. A cap (``max_sessions``) with least-recently-used
  eviction, so a flood of logins costs bounded memory; expired sessions go first.
* [`RedisSessionStore`][]: any number of workers, on a plain Redis, a Sentinel-managed
  master or a Redis Cluster. One hash per session holds the claims (sealed), the absolute end,
  the idle deadline and the tokens (a [`RedisStore`][freshtoken.RedisStore] on the same key, sealed
  too); the hash's TTL follows the idle deadline, so Redis forgets abandoned sessions by
  itself. Keys are
  ``<prefix>{<handle>}``: hash-tagged, so a session's hash and lock share a cluster slot.
  A record that none of the BFF's keys opens (sealed under a key since dropped, or altered)
  is no session: it is deleted, and the browser logs in again.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import re
import secrets
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import sniffio

from .._core.tokens import TokenSet
from ..errors import LockTimeout, StoreError, UnreadableSession
from ..stores._base import GenerationConflict, StoredTokens, TokenStore, starting_generation
from ..stores._documents import parse_json
from ._keys import KeyRing

if TYPE_CHECKING:
    from ..stores.redis import AsyncClient, RedisStore, SyncClient

__all__ = [
    "MemorySessionStore",
    "RedisSessionStore",
    "Session",
    "SessionStore",
    "UnreadableSession",
    "handle_of",
    "new_session_id",
    "valid_session_id",
]

logger = logging.getLogger("freshtoken.bff")

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


# -- memory ---------------------------------------------------------------------------------


class _Entry:
    """One session in memory: small, since a hundred thousand of them may sit idle."""

    __slots__ = ("claims", "created_at", "expires_at", "generation", "idle_until", "tokens")

    def __init__(self, claims: bytes, created_at: float, expires_at: float, idle_until: float):
        self.claims = claims  # compact JSON: a third of a dict's size
        self.created_at = created_at
        self.expires_at = expires_at
        self.idle_until = idle_until
        self.generation = starting_generation()
        # Compact JSON, not a TokenSet: half the memory, and read only when a manager is made
        # or a refresh runs, never per request (managers keep the TokenSet they use).
        self.tokens: bytes | None = None


_memory_ids = itertools.count(1)


class MemorySessionStore(SessionStore):
    """Sessions in this process's memory, at most ``max_sessions`` of them.

    When full, a new session evicts the least recently used one (expired ones first, since
    they are the least recently used): a flood of logins cannot grow memory past the cap, and
    costs the idlest users their session, not the active ones. One worker only: another
    process cannot see these sessions (use [`RedisSessionStore`][]).
    """

    def __init__(self, *, max_sessions: int = 100_000) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        self._id = next(_memory_ids)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._mutex = threading.Lock()  # request handlers and refresh threads both come here
        # One refresh lock per session that has a refresh in progress or waiting, made on
        # demand and dropped when released with nobody waiting: an idle session costs none,
        # and no session ever waits on another's refresh.
        self._locks: dict[str, _RefreshLock] = {}
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def create(
        self, handle: str, claims: Mapping[str, Any], *, now: float, idle: float, absolute: float
    ) -> Session:
        text = json.dumps(dict(claims), separators=(",", ":")).encode()
        entry = _Entry(text, now, now + absolute, now + idle)
        with self._mutex:
            self._entries.pop(handle, None)
            while len(self._entries) >= self.max_sessions:
                self._entries.popitem(last=False)
                self.evictions += 1
            self._entries[handle] = entry
        return Session(handle, entry.created_at, entry.expires_at, dict(claims))

    async def get(self, handle: str, *, now: float, idle: float) -> Session | None:
        with self._mutex:
            entry = self._entries.get(handle)
            if entry is None:
                return None
            if now >= entry.idle_until or now >= entry.expires_at:
                del self._entries[handle]
                return None
            entry.idle_until = now + idle
            self._entries.move_to_end(handle)
        return Session(handle, entry.created_at, entry.expires_at, json.loads(entry.claims))

    async def alive(self, handle: str, *, now: float, idle: float) -> bool:
        with self._mutex:
            entry = self._entries.get(handle)
            if entry is None:
                return False
            if now >= entry.idle_until or now >= entry.expires_at:
                del self._entries[handle]
                return False
            entry.idle_until = now + idle
            self._entries.move_to_end(handle)
        return True

    async def delete(self, handle: str) -> None:
        with self._mutex:
            self._entries.pop(handle, None)

    def token_store(self, handle: str) -> TokenStore:
        return _MemoryTokens(self, handle)

    def _entry(self, handle: str) -> _Entry | None:
        return self._entries.get(handle)

    def _acquire(self, handle: str) -> _Waiter | None:
        """Take ``handle``'s refresh lock now (None), or queue for it (the waiter)."""
        with self._mutex:
            lock = self._locks.get(handle)
            if lock is None:
                self._locks[handle] = _RefreshLock()
                return None
            waiter = _Waiter()
            lock.waiters.append(waiter)
            return waiter

    def _release(self, handle: str) -> None:
        """Hand ``handle``'s lock to its first waiter still waiting, or drop it."""
        with self._mutex:
            lock = self._locks[handle]
            while lock.waiters:
                if lock.waiters.popleft().grant():
                    return
            del self._locks[handle]

    def _abandon(self, handle: str, waiter: _Waiter) -> bool:
        """A waiter gives up; True if the lock was handed to it meanwhile (it holds it now,
        and must release it)."""
        with self._mutex:
            if waiter.granted:
                return True
            waiter.abandoned = True
            lock = self._locks.get(handle)
            if lock is not None:
                with contextlib.suppress(ValueError):
                    lock.waiters.remove(waiter)
            return False

    @property
    def refresh_locks(self) -> int:
        """Sessions whose refresh lock exists now (held, or waited for)."""
        return len(self._locks)

    def __repr__(self) -> str:
        return f"MemorySessionStore(sessions={len(self._entries)}, max={self.max_sessions})"


class _RefreshLock:
    """A session's refresh lock while it is held: the callers queued for it, first come first
    served. Guarded by the store's mutex."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: collections.deque[_Waiter] = collections.deque()


class _Waiter:
    """One caller queued for a refresh lock, from a thread or an event loop. The lock is
    handed over (``grant``) under the store's mutex, so a waiter that gives up at the same
    moment either gets it (and releases it) or is skipped, never both."""

    __slots__ = ("_wake", "abandoned", "event", "granted")

    def __init__(self) -> None:
        self.granted = False
        self.abandoned = False
        self.event = threading.Event()
        self._wake: Callable[[], None] | None = None

    def on_grant(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def grant(self) -> bool:
        if self.abandoned:
            return False
        self.granted = True
        self.event.set()
        if self._wake is not None:
            # RuntimeError: the waiter's loop closed; it abandons (and releases) on its side.
            with contextlib.suppress(RuntimeError):
                self._wake()
        return True


class _MemoryTokens(TokenStore):
    """One in-memory session's tokens, seen as a TokenStore (a view on its entry).

    The refresh lock is the session's own, made while a refresh holds or awaits it: a
    refresh that hangs, or a caller queued behind it, keeps no other session waiting.
    """

    loads_in_memory = True

    def __init__(self, sessions: MemorySessionStore, handle: str) -> None:
        self._sessions = sessions
        self._handle = handle

    @property
    def key(self) -> Hashable:
        return ("bff-memory", self._sessions._id, self._handle)

    def load(self) -> StoredTokens | None:
        with self._sessions._mutex:
            entry = self._sessions._entry(self._handle)
            if entry is None or entry.tokens is None:
                return None
            raw, generation = entry.tokens, entry.generation
        return StoredTokens(TokenSet.from_dict(json.loads(raw)), generation)

    def save(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        raw = json.dumps(tokens.to_dict(), separators=(",", ":")).encode()
        with self._sessions._mutex:
            entry = self._sessions._entry(self._handle)
            if entry is None:
                # The session ended (logout, expiry, eviction) while this refresh ran: its
                # tokens must not outlive it.
                raise GenerationConflict(f"{self!r}: the session ended")
            current = 0 if entry.tokens is None else entry.generation
            if expected_generation is not None and current != expected_generation:
                raise GenerationConflict(f"{self!r}: the tokens changed since they were read")
            entry.generation += 1
            entry.tokens = raw
            return StoredTokens(tokens, entry.generation)

    def clear(self) -> None:
        with self._sessions._mutex:
            entry = self._sessions._entry(self._handle)
            if entry is not None and entry.tokens is not None:
                entry.tokens = None
                entry.generation += 1

    @contextlib.contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        sessions, handle = self._sessions, self._handle
        waiter = sessions._acquire(handle)
        if (
            waiter is not None
            and not waiter.event.wait(max(timeout, 0.0))
            and not sessions._abandon(handle, waiter)
        ):
            raise self._timed_out(timeout)
        try:
            yield
        finally:
            sessions._release(handle)

    async def aload(self) -> StoredTokens | None:
        return self.load()

    async def asave(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        return self.save(tokens, expected_generation=expected_generation)

    async def aclear(self) -> None:
        self.clear()

    @contextlib.asynccontextmanager
    async def alock(self, timeout: float) -> AsyncIterator[None]:
        sessions, handle = self._sessions, self._handle
        waiter = sessions._acquire(handle)
        if waiter is not None:
            await self._await_grant(waiter, timeout)
        try:
            yield
        finally:
            sessions._release(handle)

    async def _await_grant(self, waiter: _Waiter, timeout: float) -> None:
        """Wait for the lock to be handed to ``waiter``, on this task's loop (no thread)."""
        sessions, handle = self._sessions, self._handle
        try:
            if sniffio.current_async_library() == "asyncio":
                loop = asyncio.get_running_loop()
                woken = loop.create_future()

                def wake() -> None:
                    loop.call_soon_threadsafe(_resolve, woken)

                waiter.on_grant(wake)
                if not waiter.granted:  # granted before the wake was set: nothing to await
                    with anyio.move_on_after(max(timeout, 0.0)):
                        await woken
            else:
                await anyio.to_thread.run_sync(waiter.event.wait, max(timeout, 0.0))
        except BaseException:
            # Cancelled: a lock handed over meanwhile goes on to the next in the queue.
            if sessions._abandon(handle, waiter):
                sessions._release(handle)
            raise
        if not waiter.granted and not sessions._abandon(handle, waiter):
            raise self._timed_out(timeout)

    def _timed_out(self, timeout: float) -> LockTimeout:
        return LockTimeout(f"{self!r}: the refresh lock was not released within {timeout:g} s")

    def __repr__(self) -> str:
        return f"session tokens (memory, session {self._handle[:8]}...)"


# -- Redis ----------------------------------------------------------------------------------

# The session's hash: claims (sealed), expires (absolute end, epoch ms), and RedisStore's
# generation and tokens. Creating replaces whatever was there and sets the idle TTL.
_CREATE = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'session', ARGV[1], 'expires', ARGV[2], 'idle_until', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# Read and slide, on the BFF's clock (ARGV[2], ms): past the idle deadline or the absolute end
# the session is deleted; else the idle deadline moves to now + idle (ARGV[1], ms), and so
# does the TTL, which only collects what nobody reads again (and never outlives the end).
_TOUCH = """
local found = redis.call('HMGET', KEYS[1], 'session', 'expires', 'idle_until')
if not found[1] then return false end
local now = tonumber(ARGV[2])
local left = tonumber(found[2] or '0') - now
if left <= 0 or tonumber(found[3] or '0') <= now then
  redis.call('DEL', KEYS[1])
  return false
end
local ttl = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'idle_until', now + ttl)
if left < ttl then ttl = left end
redis.call('PEXPIRE', KEYS[1], math.floor(ttl))
return {found[1], found[2]}
"""

# Seal a session again under the current key, if it is still the record that was read (not
# one a new login or a logout wrote meanwhile; and a deleted session is not brought back).
_RESEAL = """
if redis.call('HGET', KEYS[1], 'session') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'session', ARGV[2])
  return 1
end
return 0
"""

_SCRIPTS = (_CREATE, _TOUCH, _RESEAL)


class RedisSessionStore(SessionStore):
    """Sessions in Redis, shared by every worker and machine of the app.

    ``client`` is any redis-py client (``Redis``, a Sentinel ``master_for`` client or
    ``RedisCluster``), used by the refresh threads; ``async_client`` (the ``redis.asyncio``
    twin) serves requests without a worker thread. [`from_url()`][from_url] makes both. ``prefix``
    starts every key. ``lease`` is the refresh lock's lease (see
    [`RedisStore`][freshtoken.RedisStore]); ``replicas`` makes writes wait for that many replicas.
    The BFF hands over its keys ([`use_keys()`][use_keys]): claims and tokens are sealed with the
    current one and opened with any, and a session read under a previous key is sealed again
    under the current one (its tokens at their next save).
    """

    def __init__(
        self,
        client: SyncClient,
        *,
        async_client: AsyncClient | None = None,
        prefix: str = "freshtoken:bff:",
        lease: float = 10.0,
        replicas: int = 0,
        owns_clients: bool = False,
    ) -> None:
        from ..stores.redis import _describe_connection, _import_redis, translated_errors

        module = _import_redis()
        if not isinstance(client, (module.Redis, module.cluster.RedisCluster)):
            raise TypeError("client must be a redis.Redis or a redis.cluster.RedisCluster")
        self._translated = translated_errors
        self._errors = module.exceptions
        self._where = _describe_connection(client)
        self.client = client
        self.async_client = async_client
        self.prefix = prefix
        self.lease = lease
        self.replicas = replicas
        self._owns = owns_clients
        self._sealer: KeyRing | None = None
        self._scripts = tuple(client.register_script(source) for source in _SCRIPTS)
        # One pattern subscription for every session of this worker: a session's tokens
        # replaced by another worker are dropped here at once (see _SessionWatcher).
        self._origin = uuid.uuid4().hex
        self._watcher = _SessionWatcher(client, prefix, self._origin, module.exceptions)
        self._async_scripts: tuple[Any, ...] | None = None
        if async_client is not None:
            self._async_scripts = tuple(async_client.register_script(source) for source in _SCRIPTS)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        socket_timeout: float = 5.0,
        max_connections: int = 64,
        **options: Any,
    ) -> RedisSessionStore:
        """Clients for ``url`` (a ``redis://`` URL; with ``cluster=True``, any node of a
        Redis Cluster), sync and async, closed by [`aclose()`][aclose]. At most
        ``max_connections`` per client (per node on a cluster); a request finding them all
        busy waits for one (up to ``socket_timeout``) rather than failing."""
        from ..stores.redis import _import_redis

        module = _import_redis()
        settings: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": min(socket_timeout, 2.0),
        }
        if cluster:
            sync: Any = module.cluster.RedisCluster.from_url(
                url, max_connections=max_connections, **settings
            )
            asynchronous: Any = module.asyncio.cluster.RedisCluster.from_url(
                url, max_connections=max_connections, **settings
            )
        else:
            sync = module.Redis(
                connection_pool=module.BlockingConnectionPool.from_url(
                    url, max_connections=max_connections, timeout=socket_timeout, **settings
                )
            )
            asynchronous = module.asyncio.Redis(
                connection_pool=module.asyncio.BlockingConnectionPool.from_url(
                    url, max_connections=max_connections, timeout=socket_timeout, **settings
                )
            )
        return cls(sync, async_client=asynchronous, owns_clients=True, **options)

    @classmethod
    def from_sentinel(
        cls,
        sentinels: list[tuple[str, int]],
        service: str,
        *,
        socket_timeout: float = 5.0,
        **options: Any,
    ) -> RedisSessionStore:
        """Clients of the master that Sentinel names ``service`` (found again after a
        failover), sync and async."""
        from ..stores.redis import _import_redis

        _import_redis()  # names the extra when redis-py is missing
        import redis.asyncio.sentinel
        import redis.sentinel

        # redis-py 8.2 typed Sentinel; earlier releases did not (hence unused-ignore).
        sync = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            sentinels, socket_timeout=socket_timeout, socket_connect_timeout=2.0
        ).master_for(service)
        asynchronous = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            sentinels, socket_timeout=socket_timeout, socket_connect_timeout=2.0
        ).master_for(service)
        return cls(sync, async_client=asynchronous, owns_clients=True, **options)

    def use_key(self, key: bytes) -> None:
        self.use_keys(key, ())

    def use_keys(self, key: bytes, previous: Sequence[bytes]) -> None:
        self._sealer = KeyRing(key, previous)

    def redis_key(self, handle: str) -> str:
        return f"{self.prefix}{{{handle}}}"

    def token_store(self, handle: str) -> RedisStore:
        keys = self._require_keys()
        store = _session_tokens()(
            self.client,
            self.redis_key(handle),
            async_client=self.async_client,
            encryption_key=keys.current,
            lease=self.lease,
            replicas=self.replicas,
            watch=False,
        )
        store._sealer = keys  # seal with the current key, open with any (key rotation)
        # Saves of this worker say so (its own watcher ignores them); changes are heard
        # through the worker's one subscription, not a thread per session.
        store._origin = self._origin
        store._session_watch = (self._watcher, handle)  # type: ignore[attr-defined]
        return store

    async def create(
        self, handle: str, claims: Mapping[str, Any], *, now: float, idle: float, absolute: float
    ) -> Session:
        key = self.redis_key(handle)
        sealed = self._seal(handle, {"claims": dict(claims), "created_at": now})
        args = [
            sealed,
            str(_ms(now + absolute)),
            str(max(1, _ms(min(idle, absolute)))),
            str(_ms(now + idle)),
        ]
        await self._call("start a session", _CREATE, key, args)
        return Session(handle, now, now + absolute, dict(claims))

    async def get(self, handle: str, *, now: float, idle: float) -> Session | None:
        key = self.redis_key(handle)
        found = await self._call("read a session", _TOUCH, key, [str(_ms(idle)), str(_ms(now))])
        if not found:
            return None
        raw, expires = found
        where = f"session {handle[:8]}... in Redis"
        try:
            document, aged = self._open(handle, raw, where)
        except StoreError as error:
            # Not a session any key of ours can read: waiting will not make it readable, so
            # it ends now and its user logs in again (a new login is never blocked by it).
            logger.warning("bff: %s; the session is ended", error)
            await self.delete(handle)
            return None
        if aged:  # sealed under a previous key: sealed again under the current one
            resealed = self._seal(handle, document)
            await self._call("seal a session again", _RESEAL, key, [raw, resealed])
        return Session(
            handle, float(document["created_at"]), int(expires) / 1000, document["claims"]
        )

    async def delete(self, handle: str) -> None:
        key = self.redis_key(handle)
        with self._translate("end a session"):
            if self._async_ready():
                assert self.async_client is not None
                await self.async_client.delete(key)
            else:
                await anyio.to_thread.run_sync(self.client.delete, key)

    async def aclose(self) -> None:
        self._watcher.stop()
        if self._owns:
            if self.async_client is not None:
                await self.async_client.aclose()
            self.client.close()
            pool = getattr(self.client, "connection_pool", None)
            if pool is not None:
                pool.disconnect()

    # -- helpers --------------------------------------------------------------------------

    def _async_ready(self) -> bool:
        return self.async_client is not None and sniffio.current_async_library() == "asyncio"

    async def _call(self, action: str, source: str, key: str, args: Sequence[str | bytes]) -> Any:
        which = _SCRIPTS.index(source)
        with self._translate(action):
            if self._async_ready():
                assert self._async_scripts is not None
                return await self._async_scripts[which](keys=[key], args=args)
            script = self._scripts[which]
            return await anyio.to_thread.run_sync(lambda: script(keys=[key], args=args))

    def _translate(self, action: str) -> contextlib.AbstractContextManager[None]:
        from ..stores.redis import _describe_connection, translated_errors

        return translated_errors(
            self._errors, f"cannot {action}", _describe_connection(self.client)
        )

    def _require_keys(self) -> KeyRing:
        if self._sealer is None:
            raise StoreError("RedisSessionStore has no key: give it to a BFF first")
        return self._sealer

    def _seal(self, handle: str, document: Mapping[str, Any]) -> str:
        plain = json.dumps(document, separators=(",", ":")).encode()
        return json.dumps(
            self._require_keys().seal(plain, context=f"freshtoken bff session {handle}"),
            separators=(",", ":"),
        )

    def _open(self, handle: str, raw: bytes | str, where: str) -> tuple[dict[str, Any], bool]:
        """The session's document (its claims and created_at checked), and whether a previous
        key sealed it."""
        keys = self._require_keys()
        fix = "log in again"
        sealed = parse_json(raw, where, fix)
        if not isinstance(sealed, dict):
            raise StoreError(f"{where} is not what freshtoken writes; {fix}")
        context = f"freshtoken bff session {handle}"
        plain, aged = keys.open_aged(sealed, context=context, where=where)
        document = parse_json(plain, where, fix)
        if (
            not isinstance(document, dict)
            or not isinstance(document.get("claims"), dict)
            or not isinstance(document.get("created_at"), (int, float))
        ):
            raise StoreError(f"{where} is not what freshtoken writes; {fix}")
        return document, aged

    def __repr__(self) -> str:
        return f"RedisSessionStore(prefix={self.prefix!r})"


_WATCH_POLL = 0.2  # seconds the subscriber blocks on its socket before it checks for stop()
_WATCH_BACKOFF = (0.05, 2.0)  # first and longest pause between reconnection attempts


class _SessionWatcher:
    """One worker's subscription to every session's change channel (``PSUBSCRIBE
    <prefix>{*}:changed``; each token save publishes ``<generation> <origin>`` there): when
    another worker replaced a session's tokens, the managers of that session here drop what
    they cached, so this worker never sends a token another one already replaced.

    A daemon thread, started with the first session watched, reconnecting with backoff; after
    each (re)subscription every session watched is told to re-read (a change may have gone
    unheard meanwhile). Callbacks are held weakly: a session's manager dropped from the BFF's
    warm set costs nothing here.
    """

    def __init__(self, client: Any, prefix: str, origin: str, errors: Any) -> None:
        self._client = client
        self._errors = errors
        self._prefix = prefix
        self._pattern = _glob_escaped(prefix) + "{*}:changed"
        self._origin = origin.encode()
        self._callbacks: dict[str, list[Callable[[], Callable[[], None] | None]]] = {}
        self._mutex = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, handle: str, callback: Callable[[], None]) -> None:
        reference = _weakly(callback)
        with self._mutex:
            if self._stopped.is_set():
                return
            self._callbacks.setdefault(handle, []).append(reference)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="freshtoken-bff-sessions-watch", daemon=True
                )
                self._thread.start()

    def remove(self, handle: str, callback: Callable[[], None]) -> None:
        with self._mutex:
            kept = [ref for ref in self._callbacks.get(handle, []) if ref() not in (None, callback)]
            if kept:
                self._callbacks[handle] = kept
            else:
                self._callbacks.pop(handle, None)

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        pause = _WATCH_BACKOFF[0]
        while not self._stopped.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(self._pattern)
                self._notify(None)  # whatever changed before (or between) subscriptions
                pause = _WATCH_BACKOFF[0]
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=_WATCH_POLL)
                    if message is not None and message.get("type") == "pmessage":
                        self._on_message(message.get("channel"), message.get("data"))
            except self._errors.RedisError as error:
                logger.warning(
                    "bff: session change notifications interrupted (%s); reconnecting",
                    type(error).__name__,
                )
            finally:
                with contextlib.suppress(self._errors.RedisError, OSError):
                    pubsub.close()
            if self._stopped.wait(pause):
                return
            pause = min(pause * 2, _WATCH_BACKOFF[1])

    def _on_message(self, channel: object, data: object) -> None:
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        if not isinstance(channel, str) or not isinstance(data, bytes):
            return
        start = len(self._prefix) + 1
        handle = channel[start : channel.find("}", start)]
        if data.partition(b" ")[2] == self._origin:
            return  # this worker's own save: its managers already hold those tokens
        self._notify(handle)

    def _notify(self, handle: str | None) -> None:
        """Tell ``handle``'s managers (every session's, for None) to re-read."""
        with self._mutex:
            if handle is None:
                found = [ref for refs in self._callbacks.values() for ref in refs]
            else:
                found = list(self._callbacks.get(handle, ()))
        for reference in found:
            callback = reference()
            if callback is None:
                continue
            try:
                callback()
            except Exception:
                logger.exception("bff: a session change callback raised")
        if handle is not None and any(reference() is None for reference in found):
            with self._mutex:  # managers collected since: forget them
                kept = [ref for ref in self._callbacks.get(handle, []) if ref() is not None]
                if kept:
                    self._callbacks[handle] = kept
                else:
                    self._callbacks.pop(handle, None)


def _weakly(callback: Callable[[], None]) -> Callable[[], Callable[[], None] | None]:
    """A weak reference to a bound method (a credential's ``invalidate``), else a strong one."""
    if hasattr(callback, "__self__") and hasattr(callback, "__func__"):
        return weakref.WeakMethod(callback)
    return lambda: callback


def _glob_escaped(text: str) -> str:
    """``text`` matched literally in a Redis glob pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


@functools.cache
def _session_tokens() -> type[RedisStore]:
    """A RedisStore whose unreadable tokens are an [`UnreadableSession`][] (a session to
    end), told apart from Redis being unreachable (a StoreError to wait out). Made on first
    use: redis-py is an optional dependency."""
    from ..stores.redis import RedisStore

    class SessionTokens(RedisStore):
        _session_watch: tuple[_SessionWatcher, str] | None = None

        def watch(self, on_change: Callable[[], None]) -> None:
            if self._session_watch is not None:
                watcher, handle = self._session_watch
                watcher.add(handle, on_change)

        def unwatch(self, on_change: Callable[[], None]) -> None:
            if self._session_watch is not None:
                watcher, handle = self._session_watch
                watcher.remove(handle, on_change)

        def _parse(self, generation: Any, raw: Any) -> StoredTokens | None:
            try:
                return super()._parse(generation, raw)
            except StoreError as error:  # no I/O in here: the record itself is unreadable
                raise UnreadableSession(str(error)) from None

    return SessionTokens
