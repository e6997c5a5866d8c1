"""TokenManager: hands out fresh tokens and runs each refresh once, whoever asks.

How a refresh is single-flighted:

1. Every manager whose store has the same ``key`` shares one ``_Credential``: the cached
   tokens, the refresh in flight, the failure throttle. Two managers, or a new client per
   request, on one store therefore refresh once.
2. Deciding what to do (use the cached token, wait for the flight, lead a new one, give up) is
   ``_plan``, done under a short thread lock that is never held across I/O.
3. The leader takes the store's cross-process lock, re-reads the store and refreshes only if
   nobody else did meanwhile (``_refresh_steps``). Those steps are a generator of effects that
   ``_run_steps`` performs with blocking calls and ``_arun_steps`` with awaits, so the sync and
   async paths cannot drift apart.
4. The leader lands the outcome and wakes every waiter: threads through a ``threading.Event``,
   asyncio and trio tasks through their own loop's thread-safe callback, so waiting never
   blocks an event loop and works across several loops at once.

While a token is STALE (refresh due, still valid) one caller refreshes and the others carry on
with the old token; a STALE refresh makes one attempt, and on a transient failure everyone
keeps the old token until the throttle lets the next attempt through. Once the token has
EXPIRED everyone waits, and the leader retries with backoff before giving up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Hashable
from typing import Any, TypeAlias

import anyio
import sniffio

from ._challenges import HeaderValues
from ._clock import Clock, system_clock
from ._policy import Freshness, RefreshPolicy, RetryPolicy, wants_refresh
from ._tokens import TokenSet
from .errors import AuthError, LockTimeout, RefreshFailed, SessionExpired, StoreError
from .refreshers import Refresher
from .stores._base import GenerationConflict, MemoryStore, StoredTokens, TokenStore

__all__ = ["ManagerStats", "TokenManager"]

logger = logging.getLogger("freshtoken")

Hook: TypeAlias = Callable[..., Any]


@dataclasses.dataclass
class ManagerStats:
    """Counters of one manager. ``snapshot()`` gives a consistent copy."""

    refreshes: int = 0
    refresh_attempts: int = 0
    refresh_failures: int = 0
    retries: int = 0
    adopted: int = 0
    session_expirations: int = 0
    _lock: threading.Lock = dataclasses.field(
        default_factory=threading.Lock, repr=False, compare=False
    )

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                field.name: getattr(self, field.name)
                for field in dataclasses.fields(self)
                if not field.name.startswith("_")
            }


class _Flight:
    """One refresh in progress and the callers waiting for it."""

    __slots__ = ("_wakers", "done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: TokenSet | None = None
        self.error: BaseException | None = None
        self._wakers: list[Callable[[], None]] = []

    def add_waker(self, wake: Callable[[], None]) -> bool:
        """Register ``wake``; False if the flight already landed. Call under the mutex."""
        if self.done.is_set():
            return False
        self._wakers.append(wake)
        return True

    def land(self, result: TokenSet | None, error: BaseException | None) -> None:
        """Record the outcome and wake everyone. Call under the mutex."""
        self.result, self.error = result, error
        self.done.set()
        for wake in self._wakers:
            # RuntimeError: that waiter's event loop has closed, nobody is left to wake there.
            with contextlib.suppress(RuntimeError):
                wake()
        self._wakers.clear()

    def outcome(self) -> TokenSet:
        if self.error is not None:
            raise _copy_error(self.error)
        assert self.result is not None
        return self.result


class _Credential:
    """Process-wide state of one credential, shared by every manager on the same store key."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.tokens: TokenSet | None = None
        self.version = 0  # bumped on every change, so a slow reload cannot undo a newer landing
        self.needs_load = True
        self.flight: _Flight | None = None
        self.failures = 0
        self.retry_not_before = 0.0
        self.last_failure: AuthError | None = None
        self.gave_up = False  # the last failure ended a flight that used all its attempts
        self.expirations = 0

    def invalidate(self) -> None:
        self.needs_load = True


_credentials: weakref.WeakValueDictionary[Hashable, _Credential] = weakref.WeakValueDictionary()
_credentials_mutex = threading.Lock()


def _credential_for(store: TokenStore) -> _Credential:
    with _credentials_mutex:
        credential = _credentials.get(store.key)
        if credential is None:
            credential = _credentials[store.key] = _Credential()
            store.watch(credential.invalidate)
        return credential


@dataclasses.dataclass(frozen=True, slots=True)
class _Use:
    tokens: TokenSet


@dataclasses.dataclass(frozen=True, slots=True)
class _Wait:
    flight: _Flight


@dataclasses.dataclass(frozen=True, slots=True)
class _Lead:
    flight: _Flight
    needs_refresh: Callable[[TokenSet], bool]
    fallback: TokenSet | None  # still-valid tokens to hand out if this refresh fails transiently
    delay: float = 0.0  # the backoff left from an earlier failure, waited before the first try


_Plan: TypeAlias = _Use | _Wait | _Lead


# The effects a refresh is made of; _run_steps and _arun_steps perform them.
@dataclasses.dataclass(frozen=True, slots=True)
class _Load:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class _Save:
    tokens: TokenSet
    expected_generation: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Clear:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class _Refresh:
    current: TokenSet | None


@dataclasses.dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


_Effect: TypeAlias = _Load | _Save | _Clear | _Refresh | _Sleep
_Steps: TypeAlias = Generator[_Effect, Any, "tuple[StoredTokens, bool]"]


class TokenManager:
    """Keeps one credential's access token fresh for any number of clients.

    ``refresher`` turns the current tokens into new ones (see :mod:`freshtoken.refreshers`);
    ``store`` keeps them (default: a new :class:`MemoryStore`). A refresh is due ``leeway``
    seconds before expiry at most and ``window_fraction`` of the token's lifetime at most.
    ``retry`` bounds the attempts while callers wait on an expired token. ``lock_timeout``
    bounds the wait for another process's refresh. ``refresh_statuses`` are the API statuses
    that mean "token rejected". Hooks may be plain or async functions: ``on_refresh(tokens)``
    after each refresh this manager ran, ``on_session_expired(error)`` once per expiry.
    """

    def __init__(
        self,
        refresher: Refresher,
        store: TokenStore | None = None,
        *,
        leeway: float = 30.0,
        window_fraction: float = 0.25,
        retry: RetryPolicy | None = None,
        lock_timeout: float = 30.0,
        refresh_statuses: frozenset[int] = frozenset({401}),
        on_refresh: Hook | None = None,
        on_session_expired: Hook | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.refresher = refresher
        self.store: TokenStore = MemoryStore() if store is None else store
        self.policy = RefreshPolicy(leeway=leeway, window_fraction=window_fraction)
        self.retry = RetryPolicy() if retry is None else retry
        if lock_timeout <= 0:
            raise ValueError("lock_timeout must be positive")
        self.lock_timeout = lock_timeout
        self.refresh_statuses = frozenset(refresh_statuses)
        self.on_refresh = on_refresh
        self.on_session_expired = on_session_expired
        self.clock = clock
        self.stats = ManagerStats()
        self._credential = _credential_for(self.store)
        self._notified_expirations = 0
        self._notify_mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenManager(refresher={self.refresher!r}, store={self.store!r})"

    # -- the questions integrations ask -------------------------------------------------------

    def wants_refresh(self, status: int, www_authenticate: HeaderValues) -> bool:
        """Does an API response with this status and challenges (every WWW-Authenticate line)
        mean the token was rejected?"""
        return wants_refresh(status, www_authenticate, self.refresh_statuses)

    def get_tokens(self) -> TokenSet:
        """Tokens to send now, refreshing first if a refresh is due (blocking)."""
        tokens = self._fresh_cached()
        if tokens is not None:
            return tokens
        credential = self._credential
        if credential.needs_load or credential.tokens is None:
            version = credential.version
            try:
                stored = self.store.load()
            except StoreError as error:
                return self._cached_despite_store(error)
            self._adopt_loaded(version, stored)
        return self._obtain(None)

    async def aget_tokens(self) -> TokenSet:
        """Tokens to send now, refreshing first if a refresh is due (never blocks the loop)."""
        tokens = self._fresh_cached()
        if tokens is not None:
            return tokens
        credential = self._credential
        if credential.needs_load or credential.tokens is None:
            version = credential.version
            try:
                stored = await self.store.aload()
            except StoreError as error:
                return self._cached_despite_store(error)
            self._adopt_loaded(version, stored)
        return await self._aobtain(None)

    def handle_rejection(self, rejected: TokenSet) -> TokenSet:
        """The API rejected ``rejected``: tokens to retry with (refreshed once if needed).

        If another caller already replaced ``rejected``, its successor comes back at once.
        """
        self.stats.add("retries")
        return self._obtain(rejected)

    async def ahandle_rejection(self, rejected: TokenSet) -> TokenSet:
        self.stats.add("retries")
        return await self._aobtain(rejected)

    # -- explicit control ---------------------------------------------------------------------

    def set_tokens(self, tokens: TokenSet) -> None:
        """Store tokens obtained elsewhere (a login), replacing whatever was stored."""
        self._adopt_saved(self.store.save(tokens, expected_generation=None))

    async def aset_tokens(self, tokens: TokenSet) -> None:
        self._adopt_saved(await self.store.asave(tokens, expected_generation=None))

    def clear(self) -> None:
        """Forget the tokens here and in the store (a logout)."""
        self.store.clear()
        self._forget()

    async def aclear(self) -> None:
        await self.store.aclear()
        self._forget()

    def refresh(self) -> TokenSet:
        """Refresh now, whatever the expiry says (single-flighted like any other refresh)."""
        return self._obtain(self._current_or_load())

    async def arefresh(self) -> TokenSet:
        current = self._credential.tokens
        if current is None:
            self._adopt_loaded(self._credential.version, await self.store.aload())
            current = self._credential.tokens
        return await self._aobtain(current or _NO_TOKENS)

    # -- sync shell ---------------------------------------------------------------------------

    def _obtain(self, rejected: TokenSet | None) -> TokenSet:
        while True:
            plan = self._plan(rejected)
            if isinstance(plan, _Use):
                return plan.tokens
            if isinstance(plan, _Lead):
                led = self._lead(plan)
                if led is not None:
                    return led
                continue
            plan.flight.done.wait()
            try:
                tokens = self._observe(plan.flight.outcome)
            except _DecideAgain:
                continue
            if not _still_rejected(tokens, rejected):
                return tokens
            # That flight had another purpose and kept the rejected token: decide again.

    def _lead(self, plan: _Lead) -> TokenSet | None:
        """Refresh under the store's lock; None means another process holds it: decide again."""
        try:
            with self.store.lock(self._lock_wait(plan)):
                stored, refreshed = _run_steps(self, self._refresh_steps(plan))
        except BaseException as error:
            if _lock_busy(plan, error):
                return self._land_busy(plan)
            fallback = self._land(plan, None, error)
            self._after_failure_sync(error)
            if fallback is not None:
                return fallback
            raise
        self._land(plan, stored, None)
        if refreshed:
            _call_hook_sync(self.on_refresh, stored.tokens)
        return stored.tokens

    def _after_failure_sync(self, error: BaseException) -> None:
        if isinstance(error, SessionExpired) and self._claim_expiry_notice():
            _call_hook_sync(self.on_session_expired, error)

    def _observe(self, outcome: Callable[[], TokenSet]) -> TokenSet:
        try:
            return outcome()
        except SessionExpired as error:
            self._after_failure_sync(error)
            raise

    # -- async shell --------------------------------------------------------------------------

    async def _aobtain(self, rejected: TokenSet | None) -> TokenSet:
        while True:
            plan = self._plan(rejected)
            if isinstance(plan, _Use):
                return plan.tokens
            if isinstance(plan, _Lead):
                led = await self._alead(plan)
                if led is not None:
                    return led
                continue
            await _wait_async(plan.flight, self._credential.mutex)
            try:
                tokens = plan.flight.outcome()
            except _DecideAgain:
                continue
            except SessionExpired as error:
                await self._aafter_failure(error)
                raise
            if not _still_rejected(tokens, rejected):
                return tokens

    async def _alead(self, plan: _Lead) -> TokenSet | None:
        try:
            # Shielded: once a refresh request may have gone out, its answer must be saved even
            # if the caller is cancelled, or a rotated refresh token would be lost.
            with anyio.CancelScope(shield=True):
                async with self.store.alock(self._lock_wait(plan)):
                    stored, refreshed = await _arun_steps(self, self._refresh_steps(plan))
        except BaseException as error:
            if _lock_busy(plan, error):
                return self._land_busy(plan)
            fallback = self._land(plan, None, error)
            await self._aafter_failure(error)
            if fallback is not None:
                return fallback
            raise
        self._land(plan, stored, None)
        if refreshed:
            await _call_hook_async(self.on_refresh, stored.tokens)
        return stored.tokens

    async def _aafter_failure(self, error: BaseException) -> None:
        if isinstance(error, SessionExpired) and self._claim_expiry_notice():
            await _call_hook_async(self.on_session_expired, error)

    # -- the decisions (no I/O) ---------------------------------------------------------------

    def _fresh_cached(self) -> TokenSet | None:
        credential = self._credential
        tokens = credential.tokens
        if tokens is None or credential.needs_load:
            return None
        if self.policy.freshness(tokens, self.clock()) is Freshness.FRESH:
            return tokens
        return None

    def _plan(self, rejected: TokenSet | None) -> _Plan:
        credential = self._credential
        with credential.mutex:
            now = self.clock()
            tokens = credential.tokens
            fallback: TokenSet | None = None
            if tokens is None and not self.refresher.can_acquire:
                raise SessionExpired("no_tokens", "no tokens are stored: log in first")
            if rejected is not None:
                if tokens is not None and tokens.access_token != rejected.access_token:
                    return _Use(tokens)  # a 401 for an older token: retry with the current one
                rejected_access = rejected.access_token

                def needs_refresh(stored: TokenSet) -> bool:
                    return stored.access_token == rejected_access

            else:
                state = None if tokens is None else self.policy.freshness(tokens, now)
                if tokens is not None and state is Freshness.FRESH:
                    return _Use(tokens)
                if tokens is not None and state is Freshness.STALE:
                    if credential.flight is not None or now < credential.retry_not_before:
                        return _Use(tokens)
                    fallback = tokens

                def needs_refresh(stored: TokenSet) -> bool:
                    return self.policy.freshness(stored, self.clock()) is not Freshness.FRESH

            if credential.flight is not None:
                return _Wait(credential.flight)
            delay = 0.0
            if now < credential.retry_not_before and credential.last_failure is not None:
                delay = credential.retry_not_before - now
                if credential.gave_up or delay > self.retry.maximum:
                    # The last flight used up its attempts: fail fast until the backoff ends,
                    # rather than send every request's refresh to a failing server.
                    raise _copy_error(credential.last_failure)
            flight = credential.flight = _Flight()
            return _Lead(flight, needs_refresh, fallback, delay)

    def _refresh_steps(self, plan: _Lead) -> _Steps:
        """Under the store lock: re-read, adopt another process's refresh, or refresh and save.

        Returns the stored tokens and whether this call refreshed them.
        """
        if plan.delay > 0:
            yield _Sleep(plan.delay)
        stored: StoredTokens | None = yield _Load()
        if stored is not None and not plan.needs_refresh(stored.tokens):
            self.stats.add("adopted")
            return stored, False
        current = None if stored is None else stored.tokens
        if not self.refresher.can_acquire and (current is None or current.refresh_token is None):
            yield _Clear()
            code = "no_tokens" if current is None else "no_refresh_token"
            raise SessionExpired(code, "no refresh token is stored: log in again")
        generation = 0 if stored is None else stored.generation
        failures = 0
        while True:
            self.stats.add("refresh_attempts")
            try:
                tokens: TokenSet = yield _Refresh(current)
            except SessionExpired as error:
                logger.warning("session expired: %s", error)
                yield _Clear()
                raise
            except RefreshFailed as error:
                failures += 1
                logger.warning("refresh attempt %d failed: %s", failures, error)
                if failures >= self.retry.attempts or plan.fallback is not None:
                    raise
                yield _Sleep(self.retry.delay(failures, error))
                continue
            except AuthError:
                raise
            except Exception as error:
                # A refresher bug or an unexpected library error: keep the tokens, say what broke.
                raise RefreshFailed(
                    "refresher_error", f"{type(error).__name__} raised by the refresher"
                ) from error
            break
        try:
            saved: StoredTokens = yield _Save(tokens, generation)
        except GenerationConflict:
            # Our lock lapsed and someone saved newer tokens: theirs win, ours are dropped.
            newer: StoredTokens | None = yield _Load()
            if newer is None:
                raise
            return newer, False
        self.stats.add("refreshes")
        logger.info("tokens refreshed; new access token expires in %s s", _expires_in(tokens))
        return saved, True

    def _cached_despite_store(self, error: StoreError) -> TokenSet:
        """The store failed on a re-read: go on with the cached token while it still works."""
        cached = self._credential.tokens
        if cached is None or cached.is_expired(self.clock()):
            raise error
        logger.warning("token store unreachable; using the cached access token meanwhile")
        return cached

    # -- landing outcomes (short critical sections) -------------------------------------------

    def _land(
        self, plan: _Lead, stored: StoredTokens | None, error: BaseException | None
    ) -> TokenSet | None:
        """Record a flight's outcome; on a transient failure return the fallback, if any."""
        credential = self._credential
        fallback = None
        with credential.mutex:
            now = self.clock()
            if stored is not None:
                credential.tokens = stored.tokens
                credential.failures = 0
                credential.retry_not_before = 0.0
                credential.last_failure = None
            elif isinstance(error, SessionExpired):
                credential.tokens = None
                credential.expirations += 1
                self.stats.add("session_expirations")
            elif isinstance(error, (RefreshFailed, StoreError)):
                # A store that cannot be reached (Redis down) is as passing as a token endpoint
                # that cannot: keep the tokens, back off, use the old token while it works.
                credential.failures += 1
                credential.last_failure = error
                credential.gave_up = plan.fallback is None
                if isinstance(error, RefreshFailed):
                    delay = self.retry.delay(credential.failures, error)
                else:
                    # Backing off from a store protects nobody, and it would keep failing
                    # callers for seconds after Redis came back: retry it soon.
                    delay = min(self.retry.delay(credential.failures), _STORE_RETRY_CAP)
                credential.retry_not_before = now + delay
                self.stats.add("refresh_failures")
                if plan.fallback is not None and not plan.fallback.is_expired(now):
                    fallback = plan.fallback
            credential.version += 1
            credential.needs_load = False if stored is not None else credential.needs_load
            credential.flight = None
            plan.flight.land(None if stored is None else stored.tokens, error)
        return fallback

    def _lock_wait(self, plan: _Lead) -> float:
        # While the old token still works, another process's refresh is no reason to wait:
        # try the lock once, and if it is taken carry on (as threads do with a flight).
        return 0.0 if plan.fallback is not None else self.lock_timeout

    def _land_busy(self, plan: _Lead) -> TokenSet | None:
        """Another process is refreshing: keep the old token if it still works, look again
        shortly (its save usually reaches us first, through the store's watch)."""
        credential = self._credential
        with credential.mutex:
            now = self.clock()
            credential.retry_not_before = max(credential.retry_not_before, now + _BUSY_RECHECK)
            credential.flight = None
            usable = plan.fallback if plan.fallback and not plan.fallback.is_expired(now) else None
            plan.flight.land(usable, None if usable is not None else _DecideAgain())
        return usable

    def _adopt_loaded(self, version: int, stored: StoredTokens | None) -> None:
        credential = self._credential
        with credential.mutex:
            if credential.version != version:
                return  # something newer landed while we were reading
            credential.tokens = None if stored is None else stored.tokens
            credential.version += 1
            credential.needs_load = False

    def _adopt_saved(self, stored: StoredTokens) -> None:
        credential = self._credential
        with credential.mutex:
            credential.tokens = stored.tokens
            credential.failures = 0
            credential.retry_not_before = 0.0
            credential.last_failure = None
            credential.version += 1
            credential.needs_load = False

    def _forget(self) -> None:
        credential = self._credential
        with credential.mutex:
            credential.tokens = None
            credential.version += 1
            credential.needs_load = False

    def _current_or_load(self) -> TokenSet:
        if self._credential.tokens is None:
            self._adopt_loaded(self._credential.version, self.store.load())
        return self._credential.tokens or _NO_TOKENS

    def _claim_expiry_notice(self) -> bool:
        """True once per session expiry per manager: the caller then runs the hook."""
        with self._notify_mutex:
            expirations = self._credential.expirations
            if expirations <= self._notified_expirations:
                return False
            self._notified_expirations = expirations
            return True


_STORE_RETRY_CAP = 1.0  # seconds
_BUSY_RECHECK = 0.1  # seconds before trying another process's busy refresh lock again


class _DecideAgain(Exception):
    """The flight ended without an outcome for its waiters: they plan again."""


def _lock_busy(plan: _Lead, error: BaseException) -> bool:
    return plan.fallback is not None and isinstance(error, LockTimeout)


# Stands for "no tokens" where an explicit refresh needs a rejected token to compare with.
_NO_TOKENS = TokenSet(access_token="-")


def _run_steps(manager: TokenManager, steps: _Steps) -> tuple[StoredTokens, bool]:
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            result: tuple[StoredTokens, bool] = stop.value
            return result
        value, error = None, None
        try:
            if isinstance(effect, _Load):
                value = manager.store.load()
            elif isinstance(effect, _Save):
                value = manager.store.save(
                    effect.tokens, expected_generation=effect.expected_generation
                )
            elif isinstance(effect, _Clear):
                manager.store.clear()
            elif isinstance(effect, _Refresh):
                value = manager.refresher.refresh(effect.current, manager.clock)
            else:
                time.sleep(effect.seconds)
        except Exception as raised:  # noqa: BLE001 - handed to the steps, which decide
            error = raised


async def _arun_steps(manager: TokenManager, steps: _Steps) -> tuple[StoredTokens, bool]:
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            result: tuple[StoredTokens, bool] = stop.value
            return result
        value, error = None, None
        try:
            if isinstance(effect, _Load):
                value = await manager.store.aload()
            elif isinstance(effect, _Save):
                value = await manager.store.asave(
                    effect.tokens, expected_generation=effect.expected_generation
                )
            elif isinstance(effect, _Clear):
                await manager.store.aclear()
            elif isinstance(effect, _Refresh):
                value = await manager.refresher.arefresh(effect.current, manager.clock)
            else:
                await anyio.sleep(effect.seconds)
        except Exception as raised:  # noqa: BLE001 - handed to the steps, which decide
            error = raised


async def _wait_async(flight: _Flight, mutex: threading.Lock) -> None:
    """Wait for ``flight`` without blocking this event loop, whichever thread lands it."""
    if sniffio.current_async_library() == "trio":
        import trio

        trio_event = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake_trio() -> None:
            token.run_sync_soon(trio_event.set)

        with mutex:
            waiting = flight.add_waker(wake_trio)
        if waiting:
            await trio_event.wait()
        return
    loop = asyncio.get_running_loop()
    event = asyncio.Event()

    def wake_asyncio() -> None:
        loop.call_soon_threadsafe(event.set)

    with mutex:
        waiting = flight.add_waker(wake_asyncio)
    if waiting:
        await event.wait()


def _still_rejected(tokens: TokenSet, rejected: TokenSet | None) -> bool:
    return rejected is not None and tokens.access_token == rejected.access_token


def _copy_error(error: BaseException) -> BaseException:
    """A fresh instance for each caller: re-raising one instance from many threads would
    tangle their tracebacks and grow them without bound."""
    if isinstance(error, _DecideAgain):
        return _DecideAgain()
    if isinstance(error, AuthError):
        copy = error.__class__.__new__(error.__class__)
        copy.__dict__.update(error.__dict__)
        copy.args = error.args
        copy.__cause__ = error.__cause__
        return copy
    return RefreshFailed("refresh_error", f"the refresh failed with {type(error).__name__}")


def _expires_in(tokens: TokenSet) -> str:
    return "unknown" if tokens.lifetime is None else f"{tokens.lifetime:.0f}"


def _call_hook_sync(hook: Hook | None, argument: object) -> None:
    if hook is None:
        return
    try:
        result = hook(argument)
        if inspect.isawaitable(result):
            asyncio.run(_await(result))
    except Exception:
        logger.exception("freshtoken hook %r raised", getattr(hook, "__name__", hook))


async def _call_hook_async(hook: Hook | None, argument: object) -> None:
    if hook is None:
        return
    try:
        result = hook(argument)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("freshtoken hook %r raised", getattr(hook, "__name__", hook))


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
