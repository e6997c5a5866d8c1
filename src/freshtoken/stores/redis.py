"""RedisStore: one token set shared by every process, on every machine, that reaches a Redis.

What lives in Redis, for a store whose ``key`` is ``K``:

    K            hash {generation, tokens}   tokens: TokenSet.to_dict() as JSON, or
                                             {"sealed": ...} with an encryption key
    K:lock       a redis-py Lock token with a lease (PX), renewed while its holder refreshes
    K:changed    pub/sub channel: "<generation> <origin>" after every save and clear

Any redis-py client will do: a plain ``Redis``, one that Sentinel manages
(``Sentinel(...).master_for(name)``), or a ``RedisCluster``. On a cluster ``K`` gets a hash
tag (``{K}``, unless it has one already), and so ``{K}:lock`` and ``{K}:changed`` too: a
credential's keys share one slot, which keeps the fenced save (a script that may only touch
keys of one slot) legal and puts the whole credential on one shard.

Rules:

* ``generation`` only grows. A save adds one, a clear adds one and removes the tokens; so a
  generation read before a logout can never match again after it. A hash that is gone (a key
  deleted, or lost with a Redis that restarted without persistence) starts again at a random
  generation, not at 1 (see `freshtoken.stores._base`).
* A fenced save is one Lua script (atomic on the server): with ``expected_generation=0`` it
  writes only if no tokens are stored, with ``N`` only if tokens of generation ``N`` are
  stored, with ``None`` always. It publishes the new generation in the same script.
* The lock is redis-py's `Lock` (``SET NX PX`` and token-checked release).
  Its lease is renewed every ``lease / 3`` seconds while the holder lives; a holder that dies
  (or stalls past its lease) loses it, another process takes over, and the fenced save turns
  the stale holder's late write into [`GenerationConflict`][freshtoken.GenerationConflict].
* [`RedisStore.watch()`][RedisStore.watch] listens on ``K:changed`` from a daemon thread that
  reconnects with backoff, so managers drop their cached tokens when another process saves. Garbage
  in the hash or on the channel is logged and ignored; it does not stop the thread. In the child
  of a ``fork()`` the parent's thread is gone: ``watch()`` there starts a new one, and the
  child's saves carry an origin of their own.
* Redis unreachable: every operation raises [`StoreError`][freshtoken.StoreError] naming
  ``host:port`` (never the URL, which may hold a password); redis-py reconnects on its own.
  A Sentinel-managed client finds the new master after a failover by itself. Replication is
  asynchronous, so a master that dies right after a save may take the new tokens with it (and
  the refresh token they replaced was spent): ``replicas=N`` makes each save and clear wait
  (``WAIT``) until N replicas have it, and warns when they do not confirm in time.

The async methods use ``redis.asyncio`` (one client per running asyncio loop); redis.asyncio
does not run on trio, so under trio they run the blocking calls in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import anyio.to_thread
import sniffio

from .._core.tokens import TokenSet
from .._runtime.host import in_host_thread
from ..errors import LockTimeout, StoreError
from ._base import GenerationConflict, StoredTokens, TokenStore, starting_generation
from ._documents import parse_json, token_set
from ._forks import renew_after_fork
from ._sealing import Sealer, shape_problem

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster
    import redis.lock

    SyncClient: TypeAlias = redis.Redis | redis.cluster.RedisCluster
    AsyncClient: TypeAlias = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

__all__ = ["RedisStore"]

logger = logging.getLogger("freshtoken")

T = TypeVar("T")

_SAVE = """
local stored = redis.call('HGET', KEYS[1], 'generation')
if stored and (#stored > 14 or not string.match(stored, '^[0-9]+$')) then
  return redis.error_reply('the stored generation is not one freshtoken wrote')
end
local generation = tonumber(stored or ARGV[5])
local present = redis.call('HEXISTS', KEYS[1], 'tokens') == 1
if ARGV[1] ~= '' then
  local expected = tonumber(ARGV[1])
  if expected == 0 then
    if present then return {0, generation} end
  elseif (not present) or expected ~= generation then
    return {0, generation}
  end
end
generation = generation + 1
redis.call('HSET', KEYS[1], 'generation', generation, 'tokens', ARGV[2])
redis.call('PUBLISH', ARGV[3], generation .. ' ' .. ARGV[4])
return {1, generation}
"""

_CLEAR = """
if redis.call('HEXISTS', KEYS[1], 'tokens') == 0 then return 0 end
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HDEL', KEYS[1], 'tokens')
redis.call('PUBLISH', ARGV[1], generation .. ' ' .. ARGV[2])
return generation
"""

# What the scripts write: at most 14 digits, which Lua's doubles and their "%.14g" formatting
# keep exact (generations start below 2**40, some 1.1e12).
_GENERATION_RE = re.compile(rb"[0-9]{1,14}")
_MAX_LOCK_POLL = 0.25
_WATCH_POLL = 0.2  # how long the watcher blocks on the socket before it checks for close()
_WATCH_BACKOFF = (0.05, 2.0)  # first and longest pause between reconnection attempts


def _twin(module: Any, given: redis.asyncio.Redis) -> redis.asyncio.Redis:
    """A new redis.asyncio client with ``given``'s connection settings and pool of its own."""
    pool = given.connection_pool
    twin_pool = module.asyncio.ConnectionPool(
        connection_class=pool.connection_class,
        max_connections=pool.max_connections,
        **pool.connection_kwargs,
    )
    twin: redis.asyncio.Redis = module.asyncio.Redis(connection_pool=twin_pool)
    return twin


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.backoff
        import redis.cluster
        import redis.exceptions
        import redis.lock
        import redis.retry
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "RedisStore needs redis-py: pip install 'freshtoken[redis]'", name=exc.name
        ) from exc
    return redis


class RedisStore(TokenStore):
    """Tokens in Redis, shared by a fleet: single flight across machines, fenced writes.

    ``client_or_url`` is a ``redis://`` / ``rediss://`` / ``unix://`` URL or a redis-py
    client: ``redis.Redis`` (a Sentinel-managed master from ``Sentinel.master_for`` is one) or
    ``redis.cluster.RedisCluster``. With a client, pass ``async_client`` (``redis.asyncio``'s
    ``Redis`` or ``RedisCluster``, on the same server) to use it for the async methods;
    without it, they run the blocking client in a worker thread. ``key`` names the credential:
    every process using the same Redis and key shares one token set (on a cluster the key is
    hash-tagged, see the module docstring; [`redis_key`][] is the name used).

    ``lease`` is how long the refresh lock outlives a holder that died (it is renewed every
    ``lease / 3`` seconds while the holder lives). ``lock_poll`` is how often a waiting
    process retries the lock. ``socket_timeout`` bounds each Redis call made through clients
    this store creates from a URL.

    ``encryption_key`` seals the tokens with AES-256-GCM (a 32-byte key as bytes or url-safe
    base64 is used as is; any other string is a passphrase, stretched with scrypt once per
    store object), bound to [`redis_key`][], so a record copied under another key does not
    open. ``replicas`` (not on a cluster) makes saves and clears wait until that many replicas
    confirm them, for at most ``replica_timeout`` seconds. ``watch=False`` turns
    [`watch()`][watch] off: no subscriber thread, and managers re-read the store when a refresh
    falls due or after a 401 (what a store per browser session wants).
    """

    def __init__(
        self,
        client_or_url: str | SyncClient,
        key: str = "freshtoken:default",
        *,
        lease: float = 10.0,
        lock_poll: float = 0.02,
        socket_timeout: float = 5.0,
        async_client: AsyncClient | None = None,
        encryption_key: bytes | str | None = None,
        replicas: int = 0,
        replica_timeout: float = 1.0,
        watch: bool = True,
    ) -> None:
        module = _import_redis()
        if not key:
            raise ValueError("key must be a non-empty string")
        if not lease > 0 or not lock_poll > 0:
            raise ValueError("lease and lock_poll must be positive")
        if replicas < 0 or not replica_timeout > 0:
            raise ValueError("replicas must be >= 0 and replica_timeout positive")
        self._errors = module.exceptions
        self.lease = float(lease)
        self._poll = float(lock_poll)
        self._origin = uuid.uuid4().hex
        self._options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": min(socket_timeout, 2.0),
            # One quick retry turns "Redis restarted, the pooled socket is dead" into a
            # reconnect instead of an error; a Redis that stays down fails within ~0.5 s.
            "retry": module.retry.Retry(
                module.backoff.ExponentialWithJitterBackoff(base=0.05, cap=0.25), 2
            ),
        }
        if isinstance(client_or_url, str):
            self._url: str | None = client_or_url
            self._sync: SyncClient = module.Redis.from_url(client_or_url, **self._options)
            self._owns_sync = True
        elif isinstance(client_or_url, (module.Redis, module.cluster.RedisCluster)):
            self._url = None
            self._sync = client_or_url
            self._owns_sync = False
        else:
            raise TypeError(
                "client_or_url must be a Redis URL, a redis.Redis or a redis.cluster.RedisCluster"
            )
        if async_client is not None and not isinstance(
            async_client, (module.asyncio.Redis, module.asyncio.cluster.RedisCluster)
        ):
            raise TypeError("async_client must be a redis.asyncio Redis or RedisCluster")
        self.cluster = isinstance(self._sync, module.cluster.RedisCluster)
        if self.cluster and replicas:
            raise ValueError("replicas= is not supported on a RedisCluster (no WAIT there)")
        self._redis_key = _hash_tagged(key) if self.cluster else key
        self._lock_key = f"{self._redis_key}:lock"
        self._channel = f"{self._redis_key}:changed"
        self._sealer = None if encryption_key is None else Sealer(encryption_key)
        self._salt = os.urandom(16)  # one scrypt per store object for a passphrase key
        self._context = f"freshtoken redis {self._redis_key}"
        self.replicas = int(replicas)
        self.replica_timeout = float(replica_timeout)
        self._watching = watch
        self._async_given = async_client
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, redis.asyncio.Redis
        ] = weakref.WeakKeyDictionary()
        self._mutex = threading.Lock()
        self._save_script = self._sync.register_script(_SAVE)
        self._clear_script = self._sync.register_script(_CLEAR)
        self._where = _describe_connection(self._sync)
        self._db = _pool_kwargs(self._sync).get("db", 0)
        self._watcher: _Watcher | None = None
        self._unwatched: weakref.finalize[Any, Any] | None = None  # stops the watcher at GC
        self._closed = False
        renew_after_fork(self)

    # -- identity -----------------------------------------------------------------------------

    @property
    def key(self) -> Hashable:
        return ("redis", self._where, self._db, self._redis_key)

    @property
    def redis_key(self) -> str:
        """The Redis key of the token hash (the lock and channel names derive from it)."""
        return self._redis_key

    @property
    def encrypted(self) -> bool:
        """Whether this store seals the tokens it writes."""
        return self._sealer is not None

    def __repr__(self) -> str:
        return f"RedisStore({self._where}, db={self._db}, key={self._redis_key!r})"

    # -- blocking side ------------------------------------------------------------------------

    def load(self) -> StoredTokens | None:
        with self._translate("read the tokens"):
            generation, raw = self._sync.hmget(self._redis_key, ["generation", "tokens"])
        return self._parse(generation, raw)

    def save(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        args = self._save_args(tokens, expected_generation)
        with self._translate("save the tokens"):
            result = self._run(self._save_script, args)
        return self._saved(tokens, result)

    def clear(self) -> None:
        with self._translate("clear the tokens"):
            self._run(self._clear_script, [self._channel, self._origin])

    def _run(self, script: Any, args: list[str]) -> Any:
        """Run one of the scripts; with ``replicas``, and WAIT for them on its connection."""
        if not self.replicas:
            return script(keys=[self._redis_key], args=args)
        pipe = self._sync.pipeline(transaction=False)
        script(keys=[self._redis_key], args=args, client=pipe)
        pipe.execute_command("WAIT", self.replicas, self._replica_wait_ms)
        result, confirmed = pipe.execute()
        self._check_replicas(confirmed)
        return result

    @contextlib.contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        lock = self._sync.lock(self._lock_key, timeout=self.lease, thread_local=False)
        deadline = time.monotonic() + timeout
        with self._translate("take the refresh lock"):
            for pause in self._pauses():
                if lock.acquire(blocking=False):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._lock_timeout(timeout)
                time.sleep(min(pause, left))
        renewal = _Renewal(self, lock)
        try:
            yield
        finally:
            renewal.stop()
            self._release(lock.release)

    # -- async side ---------------------------------------------------------------------------

    async def aload(self) -> StoredTokens | None:
        client = self._async_client()
        if client is None:
            return await anyio.to_thread.run_sync(self.load)
        with self._translate("read the tokens"):
            generation, raw = await client.hmget(self._redis_key, ["generation", "tokens"])
        return self._parse(generation, raw)

    async def asave(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        client = self._async_client()
        if client is None:
            return await anyio.to_thread.run_sync(
                lambda: self.save(tokens, expected_generation=expected_generation)
            )
        args = self._save_args(tokens, expected_generation)
        with self._translate("save the tokens"):
            result = await self._arun(client, _SAVE, args)
        return self._saved(tokens, result)

    async def aclear(self) -> None:
        client = self._async_client()
        if client is None:
            await anyio.to_thread.run_sync(self.clear)
            return
        with self._translate("clear the tokens"):
            await self._arun(client, _CLEAR, [self._channel, self._origin])

    async def _arun(self, client: AsyncClient, source: str, args: list[str]) -> Any:
        script = client.register_script(source)
        if not self.replicas:
            return await script(keys=[self._redis_key], args=args)
        assert not isinstance(client, _import_redis().asyncio.cluster.RedisCluster)
        pipe = client.pipeline(transaction=False)
        await script(keys=[self._redis_key], args=args, client=pipe)  # type: ignore[arg-type]
        pipe.execute_command("WAIT", self.replicas, self._replica_wait_ms)
        result, confirmed = await pipe.execute()
        self._check_replicas(confirmed)
        return result

    @contextlib.asynccontextmanager
    async def alock(self, timeout: float) -> AsyncIterator[None]:
        client = self._async_client()
        if client is None:
            context = self.lock(timeout)
            await anyio.to_thread.run_sync(context.__enter__)
            try:
                yield
            finally:
                await anyio.to_thread.run_sync(lambda: context.__exit__(None, None, None))
            return
        lock = client.lock(self._lock_key, timeout=self.lease, thread_local=False)
        deadline = time.monotonic() + timeout
        with self._translate("take the refresh lock"):
            for pause in self._pauses():
                if await lock.acquire(blocking=False):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._lock_timeout(timeout)
                await asyncio.sleep(min(pause, left))
        renewal = asyncio.create_task(self._arenew(lock), name=f"renew {self._lock_key}")
        try:
            yield
        finally:
            renewal.cancel()
            await asyncio.wait({renewal})
            try:
                await lock.release()
            except self._errors.RedisError as error:
                self._release_failed(error)

    async def _arenew(self, lock: redis.asyncio.lock.Lock) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await lock.extend(self.lease, replace_ttl=True)
            except self._errors.LockError:
                self._lease_lost()
                return
            except (self._errors.ConnectionError, self._errors.TimeoutError) as error:
                self._renewal_failed(error)

    def native_async(self) -> bool:
        """Whether the async methods do native I/O on the running loop (else a thread would);
        the flight host calls the blocking ones in its own bounded workers then."""
        return self._async_client() is not None

    def _async_client(self) -> AsyncClient | None:
        """The redis.asyncio client for this event loop; None means: use a worker thread.

        On freshtoken's flight host a given ``async_client`` is not used: it belongs to the
        application's loop, and its connections cannot be awaited on another. A twin made with
        the same connection settings serves the host's loop instead (a cluster client, whose
        settings are spread over its nodes, is used through the blocking client there).
        """
        if sniffio.current_async_library() != "asyncio":
            return None
        given: AsyncClient | None = self._async_given
        if given is not None and not in_host_thread():
            return given
        if given is None and self._url is None:
            return None
        module = _import_redis()
        if given is not None and not isinstance(given, module.asyncio.Redis):
            return None  # a cluster client
        loop = asyncio.get_running_loop()
        with self._mutex:
            client = self._async_clients.get(loop)
            if client is None:
                for old in [old for old in self._async_clients if old.is_closed()]:
                    del self._async_clients[old]  # its loop is gone, and its sockets with it
                if given is None:
                    assert self._url is not None
                    options = self._async_options(module)
                    client = module.asyncio.Redis.from_url(self._url, **options)
                else:
                    client = _twin(module, given)
                self._async_clients[loop] = client
            return client

    def _async_options(self, module: Any) -> dict[str, Any]:
        options = dict(self._options)
        options["retry"] = module.asyncio.retry.Retry(
            module.backoff.ExponentialWithJitterBackoff(base=0.05, cap=0.25), 2
        )
        return options

    # -- watching and closing -----------------------------------------------------------------

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` from a daemon thread whenever another store saves or clears.

        Returns once subscribed (or after ``socket_connect_timeout`` if Redis is down; the
        thread keeps trying). After a reconnection ``on_change`` is called if the generation
        moved while the subscription was down. [`close()`][close] stops the thread.
        """
        if not self._watching:
            return
        with self._mutex:
            if self._closed:
                raise StoreError(f"{self!r} is closed")
            if self._watcher is None:
                self._watcher = _Watcher(self)
                self._unwatched = weakref.finalize(self, self._watcher.stop, False)
            watcher = self._watcher
            watcher.add(on_change)
        watcher.wait_subscribed(self._options["socket_connect_timeout"])

    def unwatch(self, on_change: Callable[[], None]) -> None:
        """Stop calling ``on_change``; the watcher thread (and its pub/sub connection) ends
        when no callback is left, without waiting for it (it notices within 0.2 s)."""
        with self._mutex:
            watcher = self._watcher
            if watcher is None or watcher.remove(on_change):
                return
            self._watcher = None
            if self._unwatched is not None:
                self._unwatched.detach()
                self._unwatched = None
        watcher.stop(False)

    def close(self) -> None:
        """Stop the watcher thread and close the connections this store opened."""
        with self._mutex:
            self._closed = True
            watcher, self._watcher = self._watcher, None
            # Clients of other event loops cannot be awaited from here: dropping them closes
            # their sockets (aclose() closes the current loop's client properly).
            self._async_clients.clear()
        if watcher is not None:
            watcher.stop(True)
        if self._owns_sync:
            self._sync.close()

    def _after_fork_in_child(self) -> None:
        # The watcher's thread is not in the child (watch() starts another), the parent's
        # event loops and their clients are not the child's, and the child is a process of its
        # own: its saves must reach the parent's watcher, and the parent's reach the child's.
        self._mutex = threading.Lock()
        self._watcher = None
        self._async_clients = weakref.WeakKeyDictionary()
        self._origin = uuid.uuid4().hex

    async def aclose(self) -> None:
        """[`close()`][close], and close this event loop's redis.asyncio client properly first."""
        if sniffio.current_async_library() == "asyncio" and self._url is not None:
            loop = asyncio.get_running_loop()
            with self._mutex:
                client = self._async_clients.pop(loop, None)
            if client is not None:
                await client.aclose()
        await anyio.to_thread.run_sync(self.close)

    # -- shared helpers -----------------------------------------------------------------------

    def _translate(self, action: str) -> contextlib.AbstractContextManager[None]:
        return translated_errors(self._errors, f"{self!r}: cannot {action}", self._where)

    def _save_args(self, tokens: TokenSet, expected_generation: int | None) -> list[str]:
        if expected_generation is not None and expected_generation < 0:
            raise ValueError("expected_generation must be >= 0 or None")
        expected = "" if expected_generation is None else str(int(expected_generation))
        document: dict[str, Any] = tokens.to_dict()
        if self._sealer is not None:
            plain = json.dumps(document, separators=(",", ":")).encode()
            document = {"sealed": self._sealer.seal(plain, context=self._context, salt=self._salt)}
        payload = json.dumps(document, separators=(",", ":"))
        return [expected, payload, self._channel, self._origin, str(starting_generation())]

    @property
    def _replica_wait_ms(self) -> int:
        return max(1, round(self.replica_timeout * 1000))

    def _check_replicas(self, confirmed: Any) -> None:
        if int(confirmed) < self.replicas:
            logger.warning(
                "%r: only %s of %d replicas confirmed the write within %g s; a failover now "
                "could lose it",
                self,
                confirmed,
                self.replicas,
                self.replica_timeout,
            )

    def _saved(self, tokens: TokenSet, result: Any) -> StoredTokens:
        written, generation = int(result[0]), int(result[1])
        if not written:
            raise GenerationConflict(
                f"{self!r}: tokens changed since they were read (now generation {generation})"
            )
        return StoredTokens(tokens, generation)

    def _parse(self, generation: Any, raw: Any) -> StoredTokens | None:
        if raw is None:
            return None
        where = f"{self!r}: the stored tokens are unreadable:"
        fix = "clear the store and log in again"
        number = _generation_of(generation)
        if number is None:
            raise StoreError(f"{where} the generation is not a number; {fix}")
        document = parse_json(raw, where, fix)
        sealed = document.get("sealed") if isinstance(document, dict) else None
        if sealed is not None:
            document = self._open(sealed, where, fix)
        elif self._sealer is not None:
            # No silent downgrade: an encrypting store does not accept plaintext tokens.
            raise StoreError(
                f"{where} they are not encrypted, and this store expects them to be; {fix}"
            )
        return StoredTokens(token_set(document, where, fix), number)

    def _open(self, sealed: object, where: str, fix: str) -> Any:
        if self._sealer is None:
            raise StoreError(f"{self!r}: the stored tokens are encrypted: pass encryption_key=")
        if not isinstance(sealed, dict) or shape_problem(sealed) is not None:
            raise StoreError(f"{where} malformed encrypted record; {fix}")
        plain = self._sealer.open(sealed, context=self._context, where=repr(self))
        return parse_json(plain, where, fix)

    def _pauses(self) -> Iterator[float]:
        """Waits between attempts at a held lock: ``lock_poll``, growing by half each time up
        to a quarter second, so a fleet waiting out a slow refresh does not flood Redis."""
        pause = self._poll
        while True:
            yield pause
            pause = min(pause * 1.5, max(self._poll, _MAX_LOCK_POLL))

    def _lock_timeout(self, timeout: float) -> LockTimeout:
        return LockTimeout(
            f"{self!r}: the refresh lock {self._lock_key!r} was not released within "
            f"{timeout:g} s (another process is refreshing, or died holding it less than "
            f"{self.lease:g} s ago)"
        )

    def _release(self, release: Callable[[], None]) -> None:
        try:
            release()
        except self._errors.RedisError as error:
            self._release_failed(error)

    def _release_failed(self, error: Exception) -> None:
        # The refresh is over either way; the fenced save already kept the store consistent,
        # and an unreleased lock ends with its lease.
        if isinstance(error, self._errors.LockError):
            logger.warning(
                "%r: the refresh lock's lease had lapsed before release (held over %g s "
                "without renewal); fenced writes kept the store consistent",
                self,
                self.lease,
            )
        else:
            logger.warning(
                "%r: could not release the refresh lock (%s); it ends with its %g s lease",
                self,
                type(error).__name__,
                self.lease,
            )

    def _lease_lost(self) -> None:
        logger.warning(
            "%r: the refresh lock's lease lapsed while held; another process may refresh, "
            "and this one's save will be refused if it does",
            self,
        )

    def _renewal_failed(self, error: Exception) -> None:
        logger.warning(
            "%r: could not renew the refresh lock's lease (%s); retrying",
            self,
            type(error).__name__,
        )


class _Renewal:
    """Extends a held lock's lease every ``lease / 3`` seconds until stopped."""

    def __init__(self, store: RedisStore, lock: redis.lock.Lock) -> None:
        self._store = store
        self._lock = lock
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"freshtoken-renew-{store.redis_key}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        errors = self._store._errors
        while not self._stopped.wait(self._store.lease / 3):
            try:
                self._lock.extend(self._store.lease, replace_ttl=True)
            except errors.LockError:
                self._store._lease_lost()
                return
            except (errors.ConnectionError, errors.TimeoutError) as error:
                self._store._renewal_failed(error)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


class _Watcher:
    """A daemon thread subscribed to the store's channel, reconnecting with backoff.

    It holds no reference to the store (only what it needs), so a store dropped without
    ``close()`` is still collected, and its finalizer stops this thread.
    """

    def __init__(self, store: RedisStore) -> None:
        self._client = store._sync
        self._errors = store._errors
        self._redis_key = store.redis_key
        self._channel = store._channel
        self._origin = store._origin
        self._label = repr(store)
        self._callbacks: list[Callable[[], None]] = []
        self._mutex = threading.Lock()
        self._stopped = threading.Event()
        self._subscribed = threading.Event()
        self._reconnected = threading.Event()
        self._generation: int | None = None  # the last one seen, to spot changes missed offline
        self._synced = False  # whether _generation was read once (None may mean unreadable)
        self._thread = threading.Thread(
            target=self._run, name=f"freshtoken-watch-{self._redis_key}", daemon=True
        )
        self._thread.start()

    def add(self, callback: Callable[[], None]) -> None:
        with self._mutex:
            self._callbacks.append(callback)

    def remove(self, callback: Callable[[], None]) -> int:
        """Forget one registration of ``callback``; how many callbacks are left."""
        with self._mutex:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
            return len(self._callbacks)

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def stop(self, join: bool) -> None:
        self._stopped.set()
        if join and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        pause = _WATCH_BACKOFF[0]
        outage = False
        while not self._stopped.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
            try:
                pubsub.subscribe(self._channel)
                # redis-py may reconnect (and resubscribe) by itself inside get_message: hear
                # of it, since changes made while the subscription was down went unheard.
                # subscribe() connected it; redis-py 8.2's hints say it is always None.
                connection: Any = pubsub.connection
                connection.register_connect_callback(self._on_reconnect)
                self._resync()
                self._subscribed.set()
                if outage:
                    logger.info("%s: change notifications resumed", self._label)
                outage, pause = False, _WATCH_BACKOFF[0]
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=_WATCH_POLL)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message.get("data"))
                    if self._reconnected.is_set():
                        self._reconnected.clear()
                        self._resync()
            except self._errors.RedisError as error:
                # ConnectionError and TimeoutError (Redis down or restarting) mostly; any other
                # answer (NOAUTH after a restart, say) is retried with the same backoff.
                if not outage:
                    logger.warning(
                        "%s: change notifications interrupted (%s: %s); reconnecting",
                        self._label,
                        type(error).__name__,
                        _first_line(error),
                    )
                outage = True
            finally:
                with contextlib.suppress(self._errors.RedisError, OSError):
                    pubsub.close()  # closing a dead connection may fail; it is being dropped
            if self._stopped.wait(pause):
                return
            pause = min(pause * 2, _WATCH_BACKOFF[1])

    def _on_reconnect(self, connection: object) -> None:
        self._reconnected.set()

    def _resync(self) -> None:
        """After (re)subscribing: tell the callbacks if a change slipped by unheard."""
        raw = self._client.hget(self._redis_key, "generation")
        generation = 0 if raw is None else _generation_of(raw)
        if generation is None:
            logger.warning(
                "%s: the stored generation is not a number (the hash was written by something "
                "else than freshtoken?); loading the tokens will fail until they are saved again",
                self._label,
            )
        previous, self._generation = self._generation, generation
        if self._synced and previous != generation:
            self._notify()
        self._synced = True

    def _on_message(self, data: object) -> None:
        raw = data if isinstance(data, bytes) else str(data).encode("utf-8", "replace")
        number, _, origin = raw.partition(b" ")
        generation = _generation_of(number)
        if generation is None:
            # Not what a store publishes: someone else writes on the channel. Ignored, so that
            # it cannot make every manager re-read the store.
            logger.debug("%s: ignored a message that is not a change notification", self._label)
            return
        self._generation = generation
        if origin != self._origin.encode():
            self._notify()

    def _notify(self) -> None:
        with self._mutex:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("%s: a change callback raised", self._label)


def _generation_of(raw: object) -> int | None:
    """The generation in a hash field or message (bytes, or str under decode_responses);
    None if it is not one freshtoken wrote."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "replace")
    if not isinstance(raw, bytes) or _GENERATION_RE.fullmatch(raw) is None:
        return None
    return int(raw)


@contextlib.contextmanager
def translated_errors(errors: Any, what: str, where: str) -> Iterator[None]:
    """redis-py's errors as StoreErrors: ``what`` failed because Redis at ``where`` is
    unreachable or answered an error (its first line; never the URL, which may hold a
    password)."""
    try:
        yield
    except (errors.ConnectionError, errors.TimeoutError) as error:
        raise StoreError(
            f"{what}: Redis at {where} is unreachable ({type(error).__name__})"
        ) from error
    except errors.RedisError as error:
        raise StoreError(
            f"{what}: Redis at {where} answered {type(error).__name__}: {_first_line(error)}"
        ) from error


def _hash_tagged(key: str) -> str:
    """``key`` if it has a Redis Cluster hash tag (a non-empty ``{...}``), else ``{key}``."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key
    return "{" + key + "}"


def _pool_kwargs(client: SyncClient) -> dict[str, Any]:
    """The connection settings of a plain or Sentinel client; none for a cluster's."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    return kwargs if isinstance(kwargs, dict) else {}


def _describe_connection(client: SyncClient) -> str:
    """Where Redis is, with no credentials: host:port, the socket path, the Sentinel service
    (whose master moves), or the cluster's first startup node."""
    if isinstance(client, _import_redis().cluster.RedisCluster):
        nodes = sorted(client.nodes_manager.startup_nodes)
        return f"cluster:{nodes[0] if nodes else '?'}"
    service = getattr(getattr(client, "connection_pool", None), "service_name", None)
    if isinstance(service, str):
        return f"sentinel:{service}"
    kwargs = _pool_kwargs(client)
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def _first_line(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return text[:200]
