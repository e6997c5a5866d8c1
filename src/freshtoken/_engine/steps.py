"""What a flight does, as a generator of effects, and the one runner that performs them.

[`flight_steps()`][flight_steps] decides every step of a flight (re-read the store, take the refresh
lock, re-read under it, refresh with retries, save with a fence, clear on a permanent failure) and
yields each piece of I/O as an effect; the answers are sent back in, failures are thrown back
in. It does no I/O itself, so tests drive it by hand. [`run_steps()`][run_steps] performs the
effects with blocking calls; a flight always runs in its own thread (see ``_manager``), so there is
no second, async runner to keep in step with this one.

Failures are classified once, here ([`classify()`][classify]): a permanent one clears the store and
ends the session; a transient one (token endpoint, network, store) keeps the tokens; anything
unexpected a refresher raises is a transient failure that is not retried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import time
from collections.abc import Callable, Generator
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
    satisfied_by,
)
from .._core.policy import Freshness
from .._core.tokens import TokenResponseError, TokenSet
from ..errors import AuthError, LockTimeout, RefreshFailed, SessionExpired, StoreError
from ..refreshers import Refresher
from ..stores._base import GenerationConflict, StoredTokens, TokenStore

__all__ = [
    "Clear",
    "Effect",
    "Load",
    "Lock",
    "Refresh",
    "Save",
    "Sleep",
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
class Refresh:
    current: TokenSet | None
    timeout: float  # the attempt's overall deadline, from when it starts


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


Effect: TypeAlias = Load | Lock | Refresh | Save | Clear | Sleep
Steps: TypeAlias = Generator[Effect, Any, Outcome]


def flight_steps(job: Job, rules: Rules, clock: Clock) -> Steps:
    """The steps of one flight. ``clock`` (the wall clock) judges the freshness of what is read."""
    try:
        if job.delay > 0:
            yield Sleep(job.delay)
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
        current = None if stored is None else stored.tokens
        if not rules.can_acquire and (current is None or current.refresh_token is None):
            if current is None:
                return Loaded(None)
            yield Clear()
            return Expired(
                SessionExpired("no_refresh_token", "no refresh token is stored: log in again")
            )
        attempts = 1 if job.background else rules.retry.attempts
        attempt = 0
        while True:
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
            delay = rules.retry.delay(attempt, error if isinstance(error, RefreshFailed) else None)
            if not retryable or attempt >= attempts or not rules.retry.honours(delay):
                return Failed(error, gave_up=not job.background)
            yield Sleep(delay)
        try:
            saved: StoredTokens = yield Save(tokens, 0 if stored is None else stored.generation)
        except GenerationConflict:
            # Our lock lapsed and someone saved newer tokens (or logged out): theirs win.
            latest: StoredTokens | None = yield Load()
            return Cleared() if latest is None else Adopted(latest)
        return Refreshed(saved)
    except StoreError as error:
        return Failed(error, gave_up=not job.background)


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


def run_steps(
    steps: Steps,
    store: TokenStore,
    refresher: Refresher,
    clock: Clock,
    *,
    on_attempt: Callable[[], None] = lambda: None,
    on_lock: Callable[[float], None] | None = None,
) -> Outcome:
    """Perform ``steps`` with blocking calls; the refresh lock is held until they end.
    ``on_attempt`` is told of each refresh attempt (the manager counts them), ``on_lock`` of
    the seconds it took to get the lock (for an observer)."""
    refresh = _refresh_call(refresher)
    with contextlib.ExitStack() as held:
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
                    value = store.load()
                elif isinstance(effect, Lock):
                    asked = time.monotonic()
                    held.enter_context(store.lock(effect.timeout))
                    if on_lock is not None:
                        on_lock(time.monotonic() - asked)
                elif isinstance(effect, Refresh):
                    on_attempt()
                    value = refresh(effect.current, clock, time.monotonic() + effect.timeout)
                elif isinstance(effect, Save):
                    value = store.save(
                        effect.tokens, expected_generation=effect.expected_generation
                    )
                elif isinstance(effect, Clear):
                    store.clear()
                else:
                    time.sleep(effect.seconds)
            except Exception as raised:  # noqa: BLE001 - handed to the steps, which decide
                error = raised


RefreshCall: TypeAlias = Callable[[TokenSet | None, Clock, float], TokenSet]


def _refresh_call(refresher: Refresher) -> RefreshCall:
    """``refresher.refresh`` with the attempt's deadline, for refreshers that take one."""
    try:
        takes_deadline = "deadline" in inspect.signature(refresher.refresh).parameters
    except (TypeError, ValueError):
        takes_deadline = False
    if takes_deadline:
        return lambda current, clock, deadline: refresher.refresh(current, clock, deadline=deadline)
    return lambda current, clock, deadline: refresher.refresh(current, clock)
