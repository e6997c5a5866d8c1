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

This module is the store; its pieces are beside it: `freshtoken.stores._redis_scripts` (the
fenced writes' Lua), `freshtoken.stores._redis_lock` (the lock's lease and its renewal),
`freshtoken.stores._redis_watcher` (the ``K:changed`` subscriber) and
`freshtoken.stores._redis_client` (redis-py imported, its errors translated). What is left
(some 500 lines) is one job, read in one sitting: the blocking and async sides of the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import sniffio

from .._core.tokens import TokenSet
from .._runtime.host import in_host_thread
from ..errors import StoreError
from ._base import GenerationConflict, StoredTokens, TokenStore, starting_generation
from ._documents import parse_json, token_set
from ._forks import renew_after_fork
from ._redis_client import describe_connection, hash_tagged, import_redis, pool_kwargs, twin

# Re-exported: the BFF's Redis sessions use it from here (bff/_sessions.py).
from ._redis_client import translated_errors as translated_errors  # noqa: PLC0414
from ._redis_lock import Renewal, lock_timeout, pauses, release_failed, renew
from ._redis_scripts import CLEAR, SAVE, generation_of
from ._redis_watcher import Watcher
from ._sealing import Sealer, shape_problem

if TYPE_CHECKING:
    import redis.asyncio

    # Re-exported for the BFF's Redis sessions, as translated_errors is.
    from ._redis_client import AsyncClient as AsyncClient  # noqa: PLC0414
    from ._redis_client import SyncClient as SyncClient  # noqa: PLC0414

__all__ = ["RedisStore"]

logger = logging.getLogger("freshtoken")

# Reached from here by the BFF's Redis sessions (bff/_sessions.py), under their former names.
_describe_connection = describe_connection
_import_redis = import_redis


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
        module = import_redis()
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
        self._redis_key = hash_tagged(key) if self.cluster else key
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
        self._save_script = self._sync.register_script(SAVE)
        self._clear_script = self._sync.register_script(CLEAR)
        self._where = describe_connection(self._sync)
        self._db = pool_kwargs(self._sync).get("db", 0)
        self._watcher: Watcher | None = None
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
            for pause in pauses(self._poll):
                if lock.acquire(blocking=False):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise lock_timeout(repr(self), self._lock_key, timeout, self.lease)
                time.sleep(min(pause, left))
        renewal = Renewal(
            lock, self.lease, self._errors, repr(self), f"freshtoken-renew-{self._redis_key}"
        )
        try:
            yield
        finally:
            renewal.stop()
            try:
                lock.release()
            except self._errors.RedisError as error:
                release_failed(repr(self), self.lease, self._errors, error)

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
            result = await self._arun(client, SAVE, args)
        return self._saved(tokens, result)

    async def aclear(self) -> None:
        client = self._async_client()
        if client is None:
            await anyio.to_thread.run_sync(self.clear)
            return
        with self._translate("clear the tokens"):
            await self._arun(client, CLEAR, [self._channel, self._origin])

    async def _arun(self, client: AsyncClient, source: str, args: list[str]) -> Any:
        script = client.register_script(source)
        if not self.replicas:
            return await script(keys=[self._redis_key], args=args)
        assert not isinstance(client, import_redis().asyncio.cluster.RedisCluster)
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
            for pause in pauses(self._poll):
                if await lock.acquire(blocking=False):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise lock_timeout(repr(self), self._lock_key, timeout, self.lease)
                await asyncio.sleep(min(pause, left))
        renewal = asyncio.create_task(
            renew(lock, self.lease, self._errors, repr(self)), name=f"renew {self._lock_key}"
        )
        try:
            yield
        finally:
            renewal.cancel()
            await asyncio.wait({renewal})
            try:
                await lock.release()
            except self._errors.RedisError as error:
                release_failed(repr(self), self.lease, self._errors, error)

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
        module = import_redis()
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
                    client = twin(module, given)
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
                self._watcher = Watcher(self)
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
        number = generation_of(generation)
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
