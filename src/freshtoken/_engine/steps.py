"""What a flight does, as a generator of effects, and the one runner that performs them.

[`flight_steps()`][flight_steps] decides every step of a flight (re-read the store, take the refresh
lock, re-read under it, refresh with retries, save with a fence, clear on a permanent failure) and
yields each piece of I/O as an effect; the answers are sent back in, failures are thrown back
in. It does no I/O itself, so tests drive it by hand. [`run_steps()`][run_steps] performs the
effects on the flight host's event loop (see ``host``): async stores and refreshers natively,
blocking ones in the host's bounded worker threads, and a backoff as a timer on the loop.

Between two attempts the flight lets go of the store's cross-process lock for the backoff, so
that another process may refresh meanwhile; it takes the lock again after it and re-reads the
store: tokens another process saved are adopted, and a refresh token it rotated is never
presented again.

Failures are classified once, here ([`classify()`][classify]): a permanent one clears the store and
ends the session; a transient one (token endpoint, network, store) keeps the tokens; anything
unexpected a refresher raises is a transient failure that is not retried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any, TypeAlias

from .._core.clock import Clock
from .._core.credential import (
    Adopted,
    Busy,
    Cleared,
    Expired,
    Failed,
    Fresh,
    Job,
    Loaded,
    Outcome,
    Refreshed,
    Rules,
    View,
    busy_retry_delay,
    satisfied_by,
    unsent,
)
from .._core.policy import Freshness
from .._core.tokens import TokenResponseError, TokenSet
from .._runtime.host import host
from ..errors import AuthError, LockTimeout, RefreshFailed, SessionExpired, StoreError
from ..stores._base import BlockingTokenStore, GenerationConflict, StoredTokens, TokenStore

__all__ = [
    "Clear",
    "Collect",
    "Effect",
    "Load",
    "Lock",
    "Refresh",
    "Save",
    "Sleep",
    "Unlock",
    "classify",
    "flight_steps",
    "run_steps",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Load:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Lock:
    """Take the store's cross-process refresh lock until the steps end."""

    timeout: float


@dataclasses.dataclass(frozen=True, slots=True)
class Unlock:
    """Let go of the store's refresh lock (for a backoff); a later ``Lock`` takes it again."""


@dataclasses.dataclass(frozen=True, slots=True)
class Refresh:
    current: TokenSet | None
    timeout: float  # the attempt's overall deadline, from when it starts


@dataclasses.dataclass(frozen=True, slots=True)
class Collect:
    """The late answer to a request that presented ``current``, if one came: tokens or None.
    Nothing is sent."""

    current: TokenSet | None


@dataclasses.dataclass(frozen=True, slots=True)
class Save:
    tokens: TokenSet
    expected_generation: int


@dataclasses.dataclass(frozen=True, slots=True)
class Clear:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Effect: TypeAlias = Load | Lock | Unlock | Refresh | Collect | Save | Clear | Sleep
Steps: TypeAlias = Generator[Effect, Any, Outcome]


def flight_steps(job: Job, rules: Rules, clock: Clock) -> Steps:
    """The steps of one flight. ``clock`` (the wall clock) judges the freshness of what is read."""
    try:
        if job.delay > 0:
            yield Sleep(job.delay)
        if job.collect:
            return (yield from _collect_steps(rules))
        stored: StoredTokens | None = yield Load()
        if job.reload_only:
            return Loaded(stored)
        settled = _settled(job, stored, rules, clock)
        if settled is not None:
            return settled
        try:
            yield Lock(0.0 if job.background else rules.lock_timeout)
        except LockTimeout:
            if job.background:
                return Busy()
            raise
        stored = yield Load()
        settled = _settled(job, stored, rules, clock)
        if settled is not None:
            return settled
        attempts = 1 if job.background or job.probe else rules.retry.attempts
        attempt = failed = 0  # attempts made; those the server was asked (the backoff's count)
        while True:
            current = None if stored is None else stored.tokens
            if not rules.can_acquire and (current is None or current.refresh_token is None):
                if current is None:
                    return Loaded(None)
                yield Clear()
                return Expired(
                    SessionExpired("no_refresh_token", "no refresh token is stored: log in again")
                )
            attempt += 1
            try:
                tokens: TokenSet = yield Refresh(current, rules.retry.timeout)
                break
            except Exception as raised:  # noqa: BLE001 - classified right here, once
                error, retryable = classify(raised)
            if isinstance(error, SessionExpired):
                yield Clear()
                return Expired(error)
            if isinstance(error, RefreshFailed) and error.error == "refresh_conflict":
                # Another client refreshed with this refresh token at the same moment (the
                # server said so): its tokens may be in the store by now; the retry is last.
                newer: StoredTokens | None = yield Load()
                if newer is not None and (stored is None or newer.generation != stored.generation):
                    return Adopted(newer)
            if unsent(error):
                delay = busy_retry_delay()  # the server was not asked: nothing to back off from
            else:
                failed += 1
                failure = error if isinstance(error, RefreshFailed) else None
                delay = rules.retry.delay(failed, failure)
            if not retryable or attempt >= attempts or not rules.retry.honours(delay):
                return Failed(error, gave_up=not job.background)
            # The lock is not held through the backoff: another process may refresh meanwhile,
            # and what it saved is read (and adopted) once the lock is ours again.
            yield Unlock()
            yield Sleep(delay)
            yield Lock(rules.lock_timeout)
            stored = yield Load()
            settled = _settled(job, stored, rules, clock)
            if settled is not None:
                return settled
        return (yield from _save_steps(tokens, stored))
    except StoreError as error:
        return Failed(error, gave_up=not job.background)


def _collect_steps(rules: Rules) -> Steps:
    """Save the late answer to a request that presented what the store still holds."""
    yield Lock(rules.lock_timeout)
    stored: StoredTokens | None = yield Load()
    tokens: TokenSet | None = yield Collect(None if stored is None else stored.tokens)
    if tokens is None:
        return Loaded(stored)  # taken already, or the store moved on: a plain re-read
    return (yield from _save_steps(tokens, stored))


def _save_steps(tokens: TokenSet, stored: StoredTokens | None) -> Steps:
    try:
        saved: StoredTokens = yield Save(tokens, 0 if stored is None else stored.generation)
    except GenerationConflict:
        # Our lock lapsed and someone saved newer tokens (or logged out): theirs win.
        latest: StoredTokens | None = yield Load()
        return Cleared() if latest is None else Adopted(latest)
    return Refreshed(saved)


def _settled(job: Job, stored: StoredTokens | None, rules: Rules, clock: Clock) -> Outcome | None:
    """The outcome when what the store holds already answers the job, else None."""
    if stored is None:
        return None if rules.can_acquire else Loaded(None)
    if not satisfied_by(job.demand, stored.tokens):
        return None
    freshness = View.of(stored.tokens, rules.refresh).freshness(clock())
    if isinstance(job.demand, Fresh):
        # A background flight exists to replace a STALE token; a waiting caller takes any
        # token that still works (a later call refreshes it in the background).
        if freshness is Freshness.EXPIRED or (job.background and freshness is Freshness.STALE):
            return None
    elif freshness is not Freshness.FRESH:
        return None  # a retry or a forced refresh wants a token that is not due itself
    return Adopted(stored)


def classify(error: BaseException) -> tuple[AuthError, bool]:
    """What a refresher's exception amounts to, and whether another attempt may help."""
    if isinstance(error, RefreshFailed):
        return error, True
    if isinstance(error, AuthError):  # SessionExpired, StoreError, InsecureTransportError...
        return error, isinstance(error, StoreError)
    if isinstance(error, TokenResponseError):
        return RefreshFailed("malformed_response", str(error)), True
    # A refresher bug or an unexpected library error: keep the tokens, say what broke.
    failure = RefreshFailed("refresher_error", f"{type(error).__name__} raised by the refresher")
    failure.__cause__ = error
    return failure, False


RefreshCall: TypeAlias = Callable[[TokenSet | None, float], Awaitable[TokenSet]]


async def run_steps(
    steps: Steps,
    store: TokenStore,
    refresh: RefreshCall,
    *,
    on_attempt: Callable[[], None] = lambda: None,
    on_lock: Callable[[float], None] | None = None,
    collect: Callable[[TokenSet | None], TokenSet | None] = lambda current: None,
) -> Outcome:
    """Perform ``steps`` on the flight host's loop. ``refresh(current, deadline)`` makes one
    attempt by ``deadline`` (monotonic). The refresh lock is held from a ``Lock`` to the next
    ``Unlock`` or to the end. ``on_attempt`` is told of each refresh attempt (the manager counts
    them), ``on_lock`` of the seconds it took to get the lock the first time (for an
    observer). ``collect(current)`` takes a late answer (see ``attempts``)."""
    calls = StoreCalls(store)
    held: contextlib.AsyncExitStack | None = None
    try:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as stop:
                outcome: Outcome = stop.value
                return outcome
            value, error = None, None
            try:
                if isinstance(effect, Load):
                    value = await calls.load()
                elif isinstance(effect, Lock):
                    asked = time.monotonic()
                    stack = contextlib.AsyncExitStack()
                    await stack.enter_async_context(calls.lock(effect.timeout))
                    held = stack
                    if on_lock is not None:
                        on_lock(time.monotonic() - asked)
                        on_lock = None  # the flight's first wait is reported, not re-takings
                elif isinstance(effect, Unlock):
                    if held is not None:
                        stack, held = held, None
                        await stack.aclose()
                elif isinstance(effect, Refresh):
                    on_attempt()
                    value = await refresh(effect.current, time.monotonic() + effect.timeout)
                elif isinstance(effect, Collect):
                    value = collect(effect.current)
                elif isinstance(effect, Save):
                    value = await calls.save(effect.tokens, effect.expected_generation)
                elif isinstance(effect, Clear):
                    await calls.clear()
                else:
                    await host().sleep(effect.seconds)
            except Exception as raised:  # noqa: BLE001 - handed to the steps, which decide
                error = raised
    finally:
        if held is not None:
            await held.aclose()


class StoreCalls:
    """A store as the host loop calls it: its async methods when they do native async I/O,
    else its blocking ones in the host's worker threads (never anyio's default pool, whose
    threads are not bounded by the host's)."""

    __slots__ = ("_native", "_store")

    def __init__(self, store: TokenStore) -> None:
        self._store = store
        native = getattr(store, "native_async", None)
        self._native = (
            not isinstance(store, BlockingTokenStore) if native is None else bool(native())
        )

    async def load(self) -> StoredTokens | None:
        if self._native:
            return await self._store.aload()
        return await host().run_sync(self._store.load)

    async def save(self, tokens: TokenSet, expected_generation: int) -> StoredTokens:
        if self._native:
            return await self._store.asave(tokens, expected_generation=expected_generation)
        store = self._store
        return await host().run_sync(
            lambda: store.save(tokens, expected_generation=expected_generation)
        )

    async def clear(self) -> None:
        if self._native:
            await self._store.aclear()
        else:
            await host().run_sync(self._store.clear)

    def lock(self, timeout: float) -> contextlib.AbstractAsyncContextManager[None]:
        if self._native:
            return self._store.alock(timeout)
        return self._blocking_lock(timeout)

    @contextlib.asynccontextmanager
    async def _blocking_lock(self, timeout: float) -> AsyncIterator[None]:
        # Taken in one worker thread and released in another: every store's lock allows it
        # (the protocol's locks are process locks, not thread-owned).
        context = self._store.lock(timeout)
        await host().run_sync(context.__enter__)
        try:
            yield
        finally:
            await host().run_sync(context.__exit__, None, None, None)
