"""The store protocol: where a credential's tokens live, and how processes take turns.

A store holds one token set and a ``generation`` that grows on every save. Single flight
across processes rests on three operations: an exclusive ``lock`` that works between
processes (and dies with its holder), a ``load`` that re-reads under that lock, and a fenced
``save`` that refuses to write when the generation moved since it was read, so a holder whose
lock lapsed can never put older tokens over newer ones.

Stores that only do blocking I/O subclass :class:`BlockingTokenStore` and get the async side
for free (run in a worker thread); stores with native async I/O implement both sides.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Hashable, Iterator

import anyio.to_thread

from .._tokens import TokenSet
from ..errors import StoreError

__all__ = [
    "BlockingTokenStore",
    "GenerationConflict",
    "MemoryStore",
    "StoredTokens",
    "TokenStore",
]


@dataclasses.dataclass(frozen=True, slots=True)
class StoredTokens:
    tokens: TokenSet
    generation: int


class GenerationConflict(StoreError):
    """A fenced save found a newer generation than the one it was given: nothing was written."""


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

        ``expected_generation`` is the generation read under the lock (0: the store was empty);
        raise :class:`GenerationConflict` if the store has moved on since. ``None`` writes
        unconditionally (a login replaces whatever was there).
        """

    @abc.abstractmethod
    def clear(self) -> None: ...

    @abc.abstractmethod
    def lock(self, timeout: float) -> contextlib.AbstractContextManager[None]:
        """Exclusive across processes; raise LockTimeout after ``timeout`` seconds."""

    @abc.abstractmethod
    async def aload(self) -> StoredTokens | None: ...

    @abc.abstractmethod
    async def asave(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens: ...

    @abc.abstractmethod
    async def aclear(self) -> None: ...

    @abc.abstractmethod
    def alock(self, timeout: float) -> contextlib.AbstractAsyncContextManager[None]: ...

    def watch(self, on_change: Callable[[], None]) -> None:  # noqa: B027 - optional hook
        """Call ``on_change`` (from any thread) when another process saves new tokens.

        Optional: stores that can be told (Redis pub/sub) let managers drop their cache early;
        without it managers re-read when a refresh is due or after a 401.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and watchers."""


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

    def __init__(self, tokens: TokenSet | None = None) -> None:
        self._key = ("memory", next(_memory_ids))
        self._mutex = threading.Lock()
        self._stored = None if tokens is None else StoredTokens(tokens, 1)

    @property
    def key(self) -> Hashable:
        return self._key

    def load(self) -> StoredTokens | None:
        return self._stored

    def save(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        with self._mutex:
            current = 0 if self._stored is None else self._stored.generation
            if expected_generation is not None and current != expected_generation:
                raise GenerationConflict("memory store: tokens changed since they were read")
            self._stored = StoredTokens(tokens, current + 1)
            return self._stored

    def clear(self) -> None:
        with self._mutex:
            self._stored = None

    @contextlib.contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        # One process only: the manager's in-process single flight already serialises refreshes.
        yield

    async def aload(self) -> StoredTokens | None:
        return self.load()

    async def asave(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        return self.save(tokens, expected_generation=expected_generation)

    async def aclear(self) -> None:
        self.clear()

    @contextlib.asynccontextmanager
    async def alock(self, timeout: float) -> AsyncIterator[None]:
        yield

    def __repr__(self) -> str:
        return (
            f"MemoryStore(generation={None if self._stored is None else self._stored.generation})"
        )
