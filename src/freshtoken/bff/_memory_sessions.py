"""Sessions in one process's memory: [`MemorySessionStore`][], and its sessions' tokens seen
as a [`TokenStore`][freshtoken.TokenStore] with a refresh lock of each session's own."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Mapping
from typing import Any

import anyio.to_thread
import sniffio

from .._core.tokens import TokenSet
from ..errors import LockTimeout
from ..stores._base import GenerationConflict, StoredTokens, TokenStore, starting_generation
from ._sessions import Session, SessionStore

__all__ = ["MemorySessionStore"]


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


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
