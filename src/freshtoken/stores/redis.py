"""RedisStore: one token set shared by every process, on every machine, that reaches a Redis.

What lives in Redis, for a store whose ``key`` is ``K``::

    K            hash {generation, tokens}   tokens: TokenSet.to_dict() as JSON
    K:lock       a redis-py Lock token with a lease (PX), renewed while its holder refreshes
    K:changed    pub/sub channel: "<generation> <origin>" after every save and clear

Rules:

* ``generation`` only grows. A save adds one, a clear adds one and removes the tokens; so a
  generation read before a logout can never match again after it. A hash that is gone (a key
  deleted, or lost with a Redis that restarted without persistence) starts again at a random
  generation, not at 1 (see :mod:`freshtoken.stores._base`).
* A fenced save is one Lua script (atomic on the server): with ``expected_generation=0`` it
  writes only if no tokens are stored, with ``N`` only if tokens of generation ``N`` are
  stored, with ``None`` always. It publishes the new generation in the same script.
* The lock is redis-py's :class:`~redis.lock.Lock` (``SET NX PX`` and token-checked release).
  Its lease is renewed every ``lease / 3`` seconds while the holder lives; a holder that dies
  (or stalls past its lease) loses it, another process takes over, and the fenced save turns
  the stale holder's late write into :class:`~freshtoken.GenerationConflict`.
* :meth:`RedisStore.watch` listens on ``K:changed`` from a daemon thread that reconnects
  with backoff, so managers drop their cached tokens when another process saves. Garbage in
  the hash or on the channel is logged and ignored; it does not stop the thread. In the child
  of a ``fork()`` the parent's thread is gone: ``watch()`` there starts a new one, and the
  child's saves carry an origin of their own.
* Redis unreachable: every operation raises :class:`~freshtoken.StoreError` naming
  ``host:port`` (never the URL, which may hold a password); redis-py reconnects on its own.

The async methods use ``redis.asyncio`` (one client per running asyncio loop); redis.asyncio
does not run on trio, so under trio they run the blocking calls in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
import sniffio

from .._tokens import TokenSet
from ..errors import LockTimeout, StoreError
from ._base import GenerationConflict, StoredTokens, TokenStore, starting_generation
from ._documents import parse_json, token_set
from ._forks import renew_after_fork

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.lock

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


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.backoff
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

    ``client_or_url`` is a ``redis://`` / ``rediss://`` / ``unix://`` URL or a
    ``redis.Redis`` client (then pass ``async_client`` to use your own ``redis.asyncio``
    client too; without it, async calls run the blocking client in a worker thread). ``key``
    names the credential: every process using the same Redis and key shares one token set.

    ``lease`` is how long the refresh lock outlives a holder that died (it is renewed every
    ``lease / 3`` seconds while the holder lives). ``lock_poll`` is how often a waiting
    process retries the lock. ``socket_timeout`` bounds each Redis call made through clients
    this store creates from a URL.
    """

    def __init__(
        self,
        client_or_url: str | redis.Redis,
        key: str = "freshtoken:default",
        *,
        lease: float = 10.0,
        lock_poll: float = 0.02,
        socket_timeout: float = 5.0,
        async_client: redis.asyncio.Redis | None = None,
    ) -> None:
        module = _import_redis()
        if not key:
            raise ValueError("key must be a non-empty string")
        if not lease > 0 or not lock_poll > 0:
            raise ValueError("lease and lock_poll must be positive")
        self._errors = module.exceptions
        self._redis_key = key
        self._lock_key = f"{key}:lock"
        self._channel = f"{key}:changed"
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
            self._sync: redis.Redis = module.Redis.from_url(client_or_url, **self._options)
            self._owns_sync = True
        elif isinstance(client_or_url, module.Redis):
            self._url = None
            self._sync = client_or_url
            self._owns_sync = False
        else:
            raise TypeError("client_or_url must be a Redis URL or a redis.Redis client")
        self._async_given = async_client
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, redis.asyncio.Redis
        ] = weakref.WeakKeyDictionary()
        self._mutex = threading.Lock()
        self._save_script = self._sync.register_script(_SAVE)
        self._clear_script = self._sync.register_script(_CLEAR)
        self._where = _describe_connection(self._sync)
        self._db = self._sync.connection_pool.connection_kwargs.get("db", 0)
        self._watcher: _Watcher | None = None
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

    def __repr__(self) -> str:
        return f"RedisStore({self._where}, db={self._db}, key={self._redis_key!r})"

    # -- blocking side ------------------------------------------------------------------------

    def load(self) -> StoredTokens | None:
        with self._translate("read the tokens"):
            generation, raw = self._sync.hmget(self._redis_key, ["generation", "tokens"])
        return self._parse(generation, raw)

    def save(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        with self._translate("save the tokens"):
            result = self._save_script(
                keys=[self._redis_key], args=self._save_args(tokens, expected_generation)
            )
        return self._saved(tokens, result)

    def clear(self) -> None:
        with self._translate("clear the tokens"):
            self._clear_script(keys=[self._redis_key], args=[self._channel, self._origin])

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
        with self._translate("save the tokens"):
            result = await client.register_script(_SAVE)(
                keys=[self._redis_key], args=self._save_args(tokens, expected_generation)
            )
        return self._saved(tokens, result)

    async def aclear(self) -> None:
        client = self._async_client()
        if client is None:
            await anyio.to_thread.run_sync(self.clear)
            return
        with self._translate("clear the tokens"):
            await client.register_script(_CLEAR)(
                keys=[self._redis_key], args=[self._channel, self._origin]
            )

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

    def _async_client(self) -> redis.asyncio.Redis | None:
        """The redis.asyncio client for this event loop; None means: use a worker thread."""
        if sniffio.current_async_library() != "asyncio":
            return None
        if self._async_given is not None:
            return self._async_given
        if self._url is None:
            return None
        loop = asyncio.get_running_loop()
        with self._mutex:
            client = self._async_clients.get(loop)
            if client is None:
                for old in [old for old in self._async_clients if old.is_closed()]:
                    del self._async_clients[old]  # its loop is gone, and its sockets with it
                module = _import_redis()
                client = module.asyncio.Redis.from_url(self._url, **self._async_options(module))
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
        moved while the subscription was down. :meth:`close` stops the thread.
        """
        with self._mutex:
            if self._closed:
                raise StoreError(f"{self!r} is closed")
            if self._watcher is None:
                self._watcher = _Watcher(self)
                weakref.finalize(self, self._watcher.stop, False)
            watcher = self._watcher
        watcher.add(on_change)
        watcher.wait_subscribed(self._options["socket_connect_timeout"])

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
        """:meth:`close`, and close this event loop's redis.asyncio client properly first."""
        if sniffio.current_async_library() == "asyncio" and self._url is not None:
            loop = asyncio.get_running_loop()
            with self._mutex:
                client = self._async_clients.pop(loop, None)
            if client is not None:
                await client.aclose()
        await anyio.to_thread.run_sync(self.close)

    # -- shared helpers -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        try:
            yield
        except (self._errors.ConnectionError, self._errors.TimeoutError) as error:
            raise StoreError(
                f"{self!r}: cannot {action}: Redis at {self._where} is unreachable "
                f"({type(error).__name__})"
            ) from error
        except self._errors.RedisError as error:
            raise StoreError(
                f"{self!r}: cannot {action}: Redis at {self._where} answered "
                f"{type(error).__name__}: {_first_line(error)}"
            ) from error

    def _save_args(self, tokens: TokenSet, expected_generation: int | None) -> list[str]:
        if expected_generation is not None and expected_generation < 0:
            raise ValueError("expected_generation must be >= 0 or None")
        expected = "" if expected_generation is None else str(int(expected_generation))
        payload = json.dumps(tokens.to_dict(), separators=(",", ":"))
        return [expected, payload, self._channel, self._origin, str(starting_generation())]

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
        return StoredTokens(token_set(parse_json(raw, where, fix), where, fix), number)

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
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._channel)
                # redis-py may reconnect (and resubscribe) by itself inside get_message: hear
                # of it, since changes made while the subscription was down went unheard.
                pubsub.connection.register_connect_callback(self._on_reconnect)
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


def _describe_connection(client: redis.Redis) -> str:
    """host:port or the socket path: where Redis is, with no credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def _first_line(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return text[:200]
