"""Sessions in Redis, shared by every worker: [`RedisSessionStore`][].

One hash per session (``<prefix>{<handle>}``) holds the sealed claims, the absolute end, the
idle deadline and the tokens (a [`RedisStore`][freshtoken.RedisStore] on the same key); three
Lua scripts create, read-and-slide, and seal a session again under the current key.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import sniffio

from ..errors import StoreError, UnreadableSession
from ..stores._base import StoredTokens
from ..stores._documents import parse_json
from ._keys import KeyRing
from ._session_watch import SessionWatcher
from ._sessions import Session, SessionStore

if TYPE_CHECKING:
    from ..stores.redis import AsyncClient, RedisStore, SyncClient

__all__ = ["RedisSessionStore"]

logger = logging.getLogger("freshtoken.bff")


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
        # replaced by another worker are dropped here at once (see SessionWatcher).
        self._origin = uuid.uuid4().hex
        self._watcher = SessionWatcher(client, prefix, self._origin, module.exceptions)
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


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


@functools.cache
def _session_tokens() -> type[RedisStore]:
    """A RedisStore whose unreadable tokens are an [`UnreadableSession`][] (a session to
    end), told apart from Redis being unreachable (a StoreError to wait out). Made on first
    use: redis-py is an optional dependency."""
    from ..stores.redis import RedisStore

    class SessionTokens(RedisStore):
        _session_watch: tuple[SessionWatcher, str] | None = None

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
