"""The store protocol: where a credential's tokens live, and how processes take turns.

A store holds one token set and a ``generation``. Single flight across processes rests on
three operations: an exclusive ``lock`` that works between processes (and dies with its
holder), a ``load`` that re-reads under that lock, and a fenced ``save`` that refuses to write
when the generation moved since it was read, so a holder whose lock lapsed can never put older
tokens over newer ones.

The generation rule, which every store keeps and ``tests/stores/test_store_contract.py``
proves for each: **a store's generation never repeats.** It grows on every save and on every
clear that removes tokens, so a generation read before a logout can never match again after
it, whatever logins follow. A store whose backing disappears (a deleted file or keychain
entry, a Redis key lost with its server) starts again at a random point of a 2**40 range,
not at 1, so that a slow process still holding an old generation cannot match the new ones
either (a chance of about one in 10**12 per save). ``expected_generation=0`` means "expect
the store empty", whatever generation a clear left behind.

Stores that only do blocking I/O subclass [`BlockingTokenStore`][] and get the async side
for free (run in a worker thread); stores with native async I/O implement both sides.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Hashable, Iterator

import anyio.to_thread

from .._core.tokens import StoredTokens, TokenSet
from ..errors import GenerationConflict, LockTimeout
from ._forks import renew_after_fork

__all__ = [
    "BlockingTokenStore",
    "GenerationConflict",
    "MemoryStore",
    "StoredTokens",
    "TokenStore",
    "starting_generation",
]

# Below 10**14, so that the generation stays exact in Lua's doubles and in their default
# formatting (RedisStore's scripts), with room for some 10**14 saves above the start.
_START_RANGE = 2**40


def starting_generation() -> int:
    """Where a new (or wiped) store counts from: its first save gets this plus one.

    Random rather than 0, so that a store whose backing was deleted and created again does not
    give out generations that a slow process read before the deletion (see the module
    docstring). ``secrets`` rather than ``random``: a forked child must not draw the same
    numbers as its parent.
    """
    return secrets.randbelow(_START_RANGE)


class TokenStore(abc.ABC):
    """Where one credential's tokens live. See the module docstring for the contract."""

    @property
    @abc.abstractmethod
    def key(self) -> Hashable:
        """Identifies the credential: managers on stores with equal keys share one flight."""

    @abc.abstractmethod
    def load(self) -> StoredTokens | None: ...

    @abc.abstractmethod
    def save(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        """Write ``tokens`` durably and return them with their new generation.

        The new generation is larger than any this store gave out before, clears included.
        ``expected_generation`` is the generation read under the lock (0: the store was empty);
        raise [`GenerationConflict`][], writing nothing, if the store has moved on since:
        with 0, if tokens are stored; with N, unless tokens of generation N are stored.
        ``None`` writes unconditionally (a login replaces whatever was there).
        """

    @abc.abstractmethod
    def clear(self) -> None:
        """Forget the tokens (a logout). Moves the generation forward if tokens were stored,
        so that no save fenced on a generation read before can succeed afterwards."""

    @abc.abstractmethod
    def lock(self, timeout: float) -> contextlib.AbstractContextManager[None]:
        """Exclusive across every thread and process that shares the store; not reentrant.

        Raise [`LockTimeout`][freshtoken.LockTimeout] after ``timeout`` seconds.
        """

    @abc.abstractmethod
    async def aload(self) -> StoredTokens | None: ...

    @abc.abstractmethod
    async def asave(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens: ...

    @abc.abstractmethod
    async def aclear(self) -> None: ...

    @abc.abstractmethod
    def alock(self, timeout: float) -> contextlib.AbstractAsyncContextManager[None]: ...

    loads_in_memory = False
    """True for stores whose ``load`` reads this process's memory (no I/O, never blocks): a
    manager then reads them in the caller's thread, with no flight for a first use."""

    def watch(self, on_change: Callable[[], None]) -> None:  # noqa: B027 - optional hook
        """Call ``on_change`` (from any thread) when another process saves new tokens.

        Optional: stores that can be told (Redis pub/sub) let managers drop their cache early;
        without it managers re-read when a refresh is due or after a 401.
        """

    def unwatch(self, on_change: Callable[[], None]) -> None:  # noqa: B027 - optional hook
        """Stop calling ``on_change`` (given to [`watch()`][watch] before; once per ``watch``).

        The thread or connection that watched is released once nothing is watched any more;
        the store itself stays usable. Unknown callbacks are ignored.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and watchers. Closing twice is harmless."""

    def remember_refresher(self, refresher: object) -> None:  # noqa: B027 - optional hook
        """Told by each [`TokenManager`][freshtoken.TokenManager] made over this store which
        refresher it uses. Stores that keep settings beside the tokens (a FileStore profile) record
        what rebuilds it with their next save; the others ignore it."""


class BlockingTokenStore(TokenStore):
    """A store whose I/O blocks; the async side runs it in a worker thread."""

    async def aload(self) -> StoredTokens | None:
        return await anyio.to_thread.run_sync(self.load)

    async def asave(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        return await anyio.to_thread.run_sync(
            lambda: self.save(tokens, expected_generation=expected_generation)
        )

    async def aclear(self) -> None:
        await anyio.to_thread.run_sync(self.clear)

    @contextlib.asynccontextmanager
    async def alock(self, timeout: float) -> AsyncIterator[None]:
        context = self.lock(timeout)
        await anyio.to_thread.run_sync(context.__enter__)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(lambda: context.__exit__(None, None, None))


_memory_ids = itertools.count(1)


class MemoryStore(TokenStore):
    """Tokens in this process's memory: the default. Lost when the process ends."""

    loads_in_memory = True

    def __init__(self, tokens: TokenSet | None = None) -> None:
        self._key = ("memory", next(_memory_ids))
        self._mutex = threading.Lock()  # guards _stored and _generation
        self._refresh_lock = threading.Lock()
        self._generation = 0  # the last one given out, by a save or a clear
        self._stored: StoredTokens | None = None
        if tokens is not None:
            self._generation = 1
            self._stored = StoredTokens(tokens, 1)
        renew_after_fork(self)

    @property
    def key(self) -> Hashable:
        return self._key

    def load(self) -> StoredTokens | None:
        return self._stored

    def save(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        with self._mutex:
            current = 0 if self._stored is None else self._stored.generation
            if expected_generation is not None and current != expected_generation:
                raise GenerationConflict(
                    "memory store: the tokens changed since they were read "
                    f"(generation {current}, expected {expected_generation})"
                )
            self._generation += 1
            self._stored = StoredTokens(tokens, self._generation)
            return self._stored

    def clear(self) -> None:
        with self._mutex:
            if self._stored is not None:
                self._stored = None
                self._generation += 1

    @contextlib.contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        if not self._refresh_lock.acquire(timeout=max(timeout, 0.0)):
            raise self._lock_timeout(timeout)
        try:
            yield
        finally:
            self._refresh_lock.release()

    async def aload(self) -> StoredTokens | None:
        return self.load()

    async def asave(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        return self.save(tokens, expected_generation=expected_generation)

    async def aclear(self) -> None:
        self.clear()

    @contextlib.asynccontextmanager
    async def alock(self, timeout: float) -> AsyncIterator[None]:
        # Usually free (the manager's single flight queues this process's callers before the
        # store's lock): take it at once. Otherwise wait in a worker thread, which blocks no
        # event loop and works whichever thread or loop holds it.
        if not self._refresh_lock.acquire(blocking=False):
            acquired = await anyio.to_thread.run_sync(
                self._refresh_lock.acquire, True, max(timeout, 0.0)
            )
            if not acquired:
                raise self._lock_timeout(timeout)
        try:
            yield
        finally:
            self._refresh_lock.release()

    def _lock_timeout(self, timeout: float) -> LockTimeout:
        return LockTimeout(
            f"memory store: timed out after {timeout:g} s waiting for the refresh lock "
            "(another thread of this process holds it)"
        )

    def _after_fork_in_child(self) -> None:
        # The threads that held these are not in the child: nobody would release them.
        self._mutex = threading.Lock()
        self._refresh_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"MemoryStore(generation={None if self._stored is None else self._stored.generation})"
        )
