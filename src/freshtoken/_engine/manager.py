"""TokenManager: hands out fresh tokens; each refresh runs once, on its own, whoever asks.

How the pieces fit:

* ``_credential`` decides. Every manager whose store has the same ``key`` shares one
  credential state; asking it is a short critical section that never spans I/O.
* A refresh (or a re-read of the store) is a *flight* (``_steps`` says what it does) that runs
  as a task on the flight host: one event loop in one daemon thread per process (``host``). No
  caller's cancellation reaches it: not asyncio's (``wait_for``, ``task.cancel()``, a closing
  loop), not trio's or anyio's cancel scopes, not a thread that stops waiting. So a request
  that went out is always read to the end and its answer saved, and a rotated refresh token is
  never lost. At interpreter exit the host waits (boundedly) for the flights in progress.
  Callers only wait, each for as long as it likes: threads with ``timeout=``, tasks with their
  own cancel scope or ``asyncio.timeout``.
* Async stores and refreshers run natively on the host loop; blocking ones in the host's few
  worker threads. A backoff is a timer. So a credential costs memory, not a thread, however
  many are refreshing or backing off at once.
* Hooks run on the host once the flight's outcome is recorded and before its waiters wake
  (async hooks on its loop, plain ones in a worker thread): ``on_refresh`` of the manager whose
  caller started the flight, ``on_session_expired`` of every manager of the credential, once
  per expiry.
* While a token is FRESH, asking costs one attribute read and one clock call (no lock).
* How long refreshes take is watched (the slowest recent one, decaying): the background
  refresh of a STALE token starts at least three times that before expiry (at most half the
  lifetime earlier), so that it lands before any request has to wait for it.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, ParamSpec, TypeAlias

from .._core.challenges import HeaderValues
from .._core.clock import Clock, monotonic_of, system_clock
from .._core.credential import (
    FRESH,
    Adopted,
    CredentialState,
    Demand,
    Expired,
    Fail,
    Failed,
    FlightHandle,
    Force,
    Job,
    Outcome,
    Pass,
    Refreshed,
    Replace,
    Rules,
    Use,
    Wait,
    answered_by,
)
from .._core.policy import RefreshPolicy, RetryPolicy, wants_refresh
from .._core.tokens import TokenSet
from .._deprecation import warn
from .._oauth.dpop import DPoP, DPoPAlgorithm, DPoPKey
from ..errors import DPoPError, RefreshFailed, StoreError
from ..refreshers._function import FunctionRefresher
from ..stores._base import MemoryStore, TokenStore
from .attempts import Attempts
from .flight import Flight, strip_tracebacks
from .host import host, in_host_thread
from .observers import FlightWatch, RefreshObserver, trigger_of
from .refresher import Refresher, takes_dpop
from .resource import ResourceCall
from .steps import flight_steps, run_steps

__all__ = ["ManagerStats", "TokenManager"]

logger = logging.getLogger("freshtoken")

Hook: TypeAlias = Callable[..., Any]
_P = ParamSpec("_P")

_DECAY = 0.5  # each refresh halves the weight of the slowest one seen before it


@dataclasses.dataclass
class ManagerStats:
    """Counters of one manager (``manager.stats``). ``snapshot()`` gives a consistent copy."""

    refreshes: int = 0
    refresh_attempts: int = 0
    refresh_failures: int = 0
    retries: int = 0
    passed_rejections: int = 0
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


class _Credential:
    """A credential's state with the mutex that guards it and the managers that share it.

    The store's change watcher belongs to the credential, not to a manager: ``watched`` is the
    store it was asked of, and the last open manager to close asks that store to stop.
    """

    __slots__ = (
        "__weakref__",
        "attempts",
        "managers",
        "mutex",
        "rewatch",
        "slowest",
        "state",
        "watched",
    )

    def __init__(self) -> None:
        self.attempts = Attempts()  # on the host loop only
        self.mutex = threading.Lock()
        self.state = CredentialState(Flight)
        self.managers: weakref.WeakSet[TokenManager] = weakref.WeakSet()
        self.rewatch = False  # in a forked child: the store's watcher thread did not come along
        self.watched: TokenStore | None = None
        self.slowest = 0.0  # seconds: the slowest recent refresh, decaying (see _observed)

    def observed(self, seconds: float) -> None:
        """A refresh attempt answered after ``seconds``: remember the slowest, decaying."""
        with self.mutex:
            self.slowest = max(seconds, self.slowest * _DECAY)

    def invalidate(self) -> None:
        with self.mutex:
            self.state.invalidate()


_credentials: weakref.WeakValueDictionary[Hashable, _Credential] = weakref.WeakValueDictionary()
_credentials_mutex = threading.Lock()


def _credential_for(manager: TokenManager) -> _Credential:
    store = manager.store
    with _credentials_mutex:
        credential = _credentials.get(store.key)
        if credential is None:
            credential = _credentials[store.key] = _Credential()
        if credential.watched is None:  # new, or every manager of it closed meanwhile
            store.watch(credential.invalidate)
            credential.watched = store
        credential.managers.add(manager)
        return credential


def _release(manager: TokenManager, credential: _Credential) -> None:
    """``manager`` closed: the last open manager of the credential stops its watcher."""
    with _credentials_mutex:
        credential.managers.discard(manager)
        watched = credential.watched
        if credential.managers or watched is None:
            return
        credential.watched = None
        # Under the mutex: a manager made meanwhile must find the watcher gone, or running.
        watched.unwatch(credential.invalidate)


def _after_fork_in_child() -> None:
    # Locks held by other threads at fork time stay held forever in the child, and flights'
    # threads did not come along: start every credential afresh (the view stays as fallback).
    global _credentials_mutex
    _credentials_mutex = threading.Lock()
    for credential in list(_credentials.values()):
        credential.mutex = threading.Lock()
        credential.attempts = Attempts()  # its requests were the parent's host's
        credential.state.after_fork()
        credential.rewatch = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class TokenManager:
    """Keeps one credential's access token fresh for any number of clients.

    ``refresher`` turns the current tokens into new ones (see [`freshtoken.refreshers`][]);
    ``store`` keeps them (default: a new [`MemoryStore`][]). ``policy`` says when a refresh is
    due (a [`RefreshPolicy`][freshtoken.RefreshPolicy]: ``leeway`` seconds before expiry at most,
    ``window_fraction`` of the token's lifetime at most, at most once per ``min_interval``
    seconds); ``retry`` (a [`RetryPolicy`][freshtoken.RetryPolicy]) bounds the attempts while
    callers wait on an expired token and each attempt's duration. The flat ``leeway=``,
    ``window_fraction=`` and ``min_interval=`` keywords still work, deprecated until 0.2.0.
    ``lock_timeout`` bounds the wait for another process's refresh. ``refresh_statuses`` are
    the API statuses that mean "token rejected". Hooks may be plain or async functions:
    ``on_refresh(tokens)`` after each refresh this manager started, ``on_session_expired(error)``
    once per expiry; both run on freshtoken's flight host (async ones on its event loop,
    plain ones in one of its few worker threads), so keep them short.

    ``dpop`` turns on DPoP (RFC 9449): a [`DPoPKey`][freshtoken.DPoPKey] binds new tokens to
    that key (and refuses to refresh tokens bound to another); an algorithm name (``"ES256"``,
    ``"EdDSA"``, ``"RS256"``) uses whichever key is stored with the tokens, making one for
    tokens acquired from nothing. Either way the key is stored with the tokens, so every
    process sharing the store signs with it. The integrations then send each request with a
    fresh proof and handle the servers' nonces.

    ``observer`` (a [`RefreshObserver`][], such as
    [`freshtoken.otel.instrument()`][freshtoken.otel.instrument] sets) is told about every refresh:
    metrics and traces.
    """

    def __init__(
        self,
        refresher: Refresher,
        store: TokenStore | None = None,
        *,
        policy: RefreshPolicy | None = None,
        retry: RetryPolicy | None = None,
        lock_timeout: float = 30.0,
        refresh_statuses: frozenset[int] = frozenset({401}),
        on_refresh: Hook | None = None,
        on_session_expired: Hook | None = None,
        clock: Clock = system_clock,
        dpop: DPoPKey | DPoPAlgorithm | None = None,
        observer: RefreshObserver | None = None,
        leeway: float | None = None,
        window_fraction: float | None = None,
        min_interval: float | None = None,
    ) -> None:
        policy = _refresh_policy(policy, leeway, window_fraction, min_interval)
        if not lock_timeout > 0:
            raise ValueError("lock_timeout must be positive")
        self.dpop = None if dpop is None else DPoP(dpop)
        if self.dpop is not None and not takes_dpop(refresher):
            raise DPoPError(
                "dpop_unsupported",
                f"{type(refresher).__name__} cannot send DPoP proofs: use OAuth2Refresher, "
                "ClientCredentials or JSONRefresher",
            )
        self._challenge_schemes = ("bearer",) if self.dpop is None else ("bearer", "dpop")
        self.refresher = refresher
        self.store: TokenStore = MemoryStore() if store is None else store
        self.store.remember_refresher(refresher)  # a FileStore profile records its settings
        self.policy = policy
        self.retry = RetryPolicy() if retry is None else retry
        self.lock_timeout = lock_timeout
        self.refresh_statuses = frozenset(refresh_statuses)
        self.on_refresh = on_refresh
        self.on_session_expired = on_session_expired
        self.observer = observer
        self.clock = clock
        self._monotonic = monotonic_of(clock)
        self.stats = ManagerStats()
        self._closed = False
        self._credential = _credential_for(self)
        self._state = self._credential.state
        self._observed_policy = (self.policy, 0.0, self.policy)
        self._requests: _TokenRequests | None = None  # built at the first flight, then kept

    def __repr__(self) -> str:
        closed = ", closed" if self._closed else ""
        return f"TokenManager(refresher={self.refresher!r}, store={self.store!r}{closed})"

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Release what this manager holds; closing twice is harmless.

        The store's change watcher (a file watcher thread, a Redis pub/sub connection) is
        shared by the managers of one credential and stops when the last of them closes. A
        refresh in flight is not interrupted: it completes and its tokens are saved
        ([`wait_idle()`][wait_idle] waits for it). The refresher and the store are not closed: they
        are yours, and may serve other managers (a BFF shares one refresher among its
        sessions); close them when nothing uses them (``store.close()``).

        Asking a closed manager for tokens (or to store or clear them) raises RuntimeError.
        """
        if self._closed:
            return
        self._closed = True
        # The lock-free fast path reads only ``_state.fast``: an empty state sends every
        # caller to _decide, which refuses. Flights in progress land in the credential.
        self._state = CredentialState(Flight)
        _release(self, self._credential)

    async def aclose(self) -> None:
        """[`close()`][close], from async code (nothing it does blocks)."""
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> TokenManager:
        self._check_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> TokenManager:
        self._check_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                f"{self!r} was closed: make a new TokenManager (with the same refresher "
                "and store) to go on"
            )

    @property
    def rules(self) -> Rules:
        policy = self.policy
        slowest = self._credential.slowest
        if slowest > 0:
            base, seen, observed = self._observed_policy
            if base is not policy or seen != slowest:
                observed = dataclasses.replace(policy, refresh_duration=slowest)
                self._observed_policy = (policy, slowest, observed)
            policy = observed
        return Rules(policy, self.retry, self.refresher.can_acquire, self.lock_timeout)

    # -- the questions integrations ask -------------------------------------------------------

    def wants_refresh(self, status: int, www_authenticate: HeaderValues) -> bool:
        """Does an API response with this status and challenges (every WWW-Authenticate line)
        mean the token was rejected?"""
        return wants_refresh(
            status, www_authenticate, self.refresh_statuses, self._challenge_schemes
        )

    def cached_tokens(self) -> TokenSet | None:
        """The tokens, if they are known and fresh: no lock, no I/O, no waiting."""
        fast = self._state.fast
        if fast is not None and self.clock() < fast.due_at:
            return fast.tokens
        return None

    def get_tokens(self, *, timeout: float | None = None) -> TokenSet:
        """Tokens to send now. Blocks only when they have expired (or are not known yet), for
        at most ``timeout`` seconds (then [`RefreshFailed`][]; the refresh goes on)."""
        fast = self._state.fast
        if fast is not None and self.clock() < fast.due_at:
            return fast.tokens
        tokens = self._obtain(FRESH, timeout)
        assert tokens is not None
        return tokens

    async def aget_tokens(self) -> TokenSet:
        """Tokens to send now, never blocking the event loop; cancel it whenever you like."""
        fast = self._state.fast
        if fast is not None and self.clock() < fast.due_at:
            return fast.tokens
        tokens = await self._aobtain(FRESH)
        assert tokens is not None
        return tokens

    def handle_rejection(
        self, rejected: TokenSet, *, timeout: float | None = None
    ) -> TokenSet | None:
        """The API rejected ``rejected``: tokens to retry with, or None to give the rejection
        to the caller (fresh tokens are being rejected too: see the rejection backoff).

        If another caller already replaced ``rejected``, its successor comes back at once.
        """
        return self._counted(self._obtain(Replace(rejected), timeout))

    async def ahandle_rejection(self, rejected: TokenSet) -> TokenSet | None:
        return self._counted(await self._aobtain(Replace(rejected)))

    # -- resource requests: one ResourceCall each (see _engine/resource.py) -------------------

    def call(self, method: str, url: object) -> ResourceCall:
        """The auth decisions of one request to ``method url``: what to send, and what each
        answer leads to (a retry with newer tokens, a new DPoP proof, or the caller's answer).
        ``url`` is a str, or a URL object whose ``str()`` is one (read only for DPoP). Every
        integration drives one per request; so may an HTTP client of your own."""
        return ResourceCall(method, url, self)

    # -- explicit control ---------------------------------------------------------------------

    def login(
        self, login: Callable[_P, TokenSet], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> TokenSet:
        """Log in with ``login`` and keep its tokens: ``manager.login(refresher.browser_login)``
        uses the client settings the refresher already has. The login runs outside every lock
        (it may take minutes); a refresh that lands meanwhile loses to it."""
        self._check_open()
        tokens = login(*args, **kwargs)
        self.set_tokens(tokens)
        return tokens

    async def alogin(
        self, login: Callable[_P, Awaitable[TokenSet]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> TokenSet:
        """[`login()`][login] for async logins: ``await
        manager.alogin(refresher.adevice_login)``."""
        self._check_open()
        tokens = await login(*args, **kwargs)
        await self.aset_tokens(tokens)
        return tokens

    def set_tokens(self, tokens: TokenSet) -> None:
        """Store tokens obtained elsewhere (a login), replacing whatever was stored."""
        self._check_open()
        self._check_binding(tokens)
        self.store.save(tokens, expected_generation=None)
        self._adopt(tokens)

    async def aset_tokens(self, tokens: TokenSet) -> None:
        self._check_open()
        self._check_binding(tokens)
        await self.store.asave(tokens, expected_generation=None)
        self._adopt(tokens)

    def clear(self) -> None:
        """Forget the tokens here and in the store (a logout)."""
        self._check_open()
        self.store.clear()
        self._adopt(None)

    async def aclear(self) -> None:
        self._check_open()
        await self.store.aclear()
        self._adopt(None)

    def refresh(self, *, timeout: float | None = None) -> TokenSet:
        """Refresh now, whatever the expiry says (single-flighted like any other refresh)."""
        tokens = self._obtain(self._forced(), timeout)
        assert tokens is not None
        return tokens

    async def arefresh(self) -> TokenSet:
        tokens = await self._aobtain(self._forced())
        assert tokens is not None
        return tokens

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no refresh of this credential is in flight (a background refresh of a
        STALE token, say); False if one still is after ``timeout`` seconds."""
        with self._credential.mutex:
            flight = self._credential.state.flight  # closed managers wait too
        return flight is None or flight.wait(timeout)

    # -- the two shells: decide, start, wait --------------------------------------------------

    def _obtain(self, demand: Demand, timeout: float | None) -> TokenSet | None:
        while True:
            decision = self._decide(demand)
            if isinstance(decision, Use):
                return decision.tokens
            if isinstance(decision, Fail):
                raise decision.error
            if isinstance(decision, Pass):
                return None
            if in_host_thread():
                # The flight runs on this very thread's loop: blocking here would stall it.
                raise RuntimeError(
                    "a blocking TokenManager call inside an async refresher, store or hook "
                    "would stall every refresh: await the async method (aget_tokens...)"
                )
            if not decision.flight.wait(timeout):
                raise _gave_up_waiting(decision.flight, timeout)
            tokens = decision.flight.outcome()
            if tokens is not None and answered_by(demand, tokens):
                return tokens

    async def _aobtain(self, demand: Demand) -> TokenSet | None:
        while True:
            decision = self._decide(demand)
            if isinstance(decision, Use):
                return decision.tokens
            if isinstance(decision, Fail):
                raise decision.error
            if isinstance(decision, Pass):
                return None
            if not await decision.flight.wait_async():
                raise _gave_up_waiting(decision.flight, None)
            tokens = decision.flight.outcome()
            if tokens is not None and answered_by(demand, tokens):
                return tokens

    def _decide(self, demand: Demand) -> Use | Wait | Fail | Pass:
        self._check_open()
        credential = self._credential
        if credential.rewatch:
            credential.rewatch = False
            self.store.watch(credential.invalidate)
            credential.watched = self.store
        if self.store.loads_in_memory and not self._state.known:
            self._load_here()
        with credential.mutex:
            decision = credential.state.decide(demand, self.rules, self.clock(), self._monotonic())
        if isinstance(decision, (Use, Wait)) and decision.start is not None:
            self._launch(decision.start)
        return decision

    def _load_here(self) -> None:
        """Read a store held in memory in this thread: no flight (and no thread) for it."""
        credential = self._credential
        with credential.mutex:
            version = credential.state.version
        try:
            stored = self.store.load()
        except StoreError:
            return  # the flight that follows reports it, as for any store
        with credential.mutex:
            credential.state.adopt_loaded(stored, version, self.rules)

    def _forced(self) -> Force:
        state = self._state
        view = state.view
        return Force(None if view is None else view.tokens, known=state.known)

    def _counted(self, tokens: TokenSet | None) -> TokenSet | None:
        # Every rejection is one or the other: retried with these tokens, or passed back.
        if tokens is not None:
            self.stats.add("retries")
        else:
            self.stats.add("passed_rejections")
            if self.observer is not None:
                FlightWatch.rejection_passed(self.observer)
        return tokens

    def _check_binding(self, tokens: TokenSet) -> None:
        if self.dpop is not None:
            self.dpop.check(tokens.dpop_key)
        elif tokens.dpop_key is not None:
            raise _not_configured()

    def _adopt(self, tokens: TokenSet | None) -> None:
        credential = self._credential
        with credential.mutex:
            credential.state.set_tokens(tokens, self.rules)

    # -- the flight ---------------------------------------------------------------------------

    def _launch(self, job: Job) -> None:
        watch = None
        if self.observer is not None:
            watch = FlightWatch.start(self.observer, trigger_of(job, self._state.view is not None))
        try:
            host().submit(lambda: self._fly(job, watch))
        except RuntimeError as error:  # the interpreter is exiting, or no thread can start
            failed = Failed(RefreshFailed("no_host", str(error)), gave_up=False)
            result, landed_error, _ = self._record(job, failed, watch)
            job.flight.land(result, landed_error)

    async def _fly(self, job: Job, watch: FlightWatch | None) -> None:
        def attempted() -> None:
            self.stats.add("refresh_attempts")
            if watch is not None:
                watch.attempt()

        requests = self._requests
        if requests is None or not requests.serves(self.refresher, self.dpop, self.clock):
            requests = self._requests = _TokenRequests(self.refresher, self.dpop, self.clock)
        attempts, send = self._credential.attempts, requests.arefresh

        async def attempt(current: TokenSet | None, deadline: float) -> TokenSet:
            return await attempts.attempt(
                current, deadline, lambda until: send(current, until), self._collect_late
            )

        try:
            outcome = await run_steps(
                flight_steps(job, self.rules, self.clock),
                self.store,
                self._timed(attempt),
                on_attempt=attempted,
                on_lock=None if watch is None else watch.lock_acquired,
                collect=attempts.collect,
            )
        except Exception as error:
            logger.exception("freshtoken: a refresh flight failed unexpectedly")
            outcome = Failed(RefreshFailed("internal_error", type(error).__name__), gave_up=False)
        await self._finish(job, outcome, watch)

    def _timed(
        self, refresh: Callable[[TokenSet | None, float], Awaitable[TokenSet]]
    ) -> Callable[[TokenSet | None, float], Awaitable[TokenSet]]:
        """``refresh`` that tells the credential how long each answered attempt took (on the
        manager's monotonic clock, which a test controls)."""
        monotonic, credential = self._monotonic, self._credential

        async def timed(current: TokenSet | None, deadline: float) -> TokenSet:
            began = monotonic()
            tokens = await refresh(current, deadline)
            credential.observed(monotonic() - began)
            return tokens

        return timed

    def _record(
        self, job: Job, outcome: Outcome, watch: FlightWatch | None
    ) -> tuple[TokenSet | None, BaseException | None, list[TokenManager]]:
        """Record the outcome in the credential: what the waiters get, and the managers."""
        if isinstance(outcome, (Failed, Expired)):
            # Kept as the credential's last error: without its traceback, which would keep
            # the flight's frames, its HTTP client and its loop's objects alive.
            strip_tracebacks(outcome.error)
        credential = self._credential
        with credential.mutex:
            result, error = credential.state.land(job, outcome, self.rules, self._monotonic())
            managers = list(credential.managers)
        if job.background and isinstance(outcome, Failed):
            # A waiter of a background flight (its token expired meanwhile, or was rejected)
            # decides again: it gets a flight of its own, with the retries it is owed.
            error = None
        self._report(outcome)
        if watch is not None:
            watch.ended(outcome)
        return result, error, managers

    async def _finish(self, job: Job, outcome: Outcome, watch: FlightWatch | None) -> None:
        """Record the outcome, run the hooks, then wake the waiters (whatever fails)."""
        result: TokenSet | None = None
        error: BaseException | None = RefreshFailed("internal_error", "the refresh did not land")
        try:
            result, error, managers = self._record(job, outcome, watch)
            if isinstance(outcome, Refreshed):
                await _run_hook(self.on_refresh, outcome.stored.tokens)
            elif isinstance(outcome, Expired):
                for manager in managers:
                    manager.stats.add("session_expirations")
                    await _run_hook(manager.on_session_expired, outcome.error)
        finally:
            job.flight.land(result, error)
            if self._credential.attempts.uncollected():
                self._collect_late()  # it answered while this flight was past its attempts

    def _collect_late(self) -> None:
        """A request an attempt stopped waiting for has answered (on the host loop): save its
        tokens with a flight that sends nothing, unless a flight runs (which takes them)."""
        credential = self._credential
        with credential.mutex:
            job = credential.state.collect(self.rules)
        if job is not None:
            self._launch(job)

    def _report(self, outcome: Outcome) -> None:
        if isinstance(outcome, Refreshed):
            self.stats.add("refreshes")
            lifetime = outcome.stored.tokens.lifetime
            logger.info(
                "tokens refreshed; new access token expires in %s s",
                "unknown" if lifetime is None else f"{lifetime:.0f}",
            )
        elif isinstance(outcome, Adopted):
            self.stats.add("adopted")
        elif isinstance(outcome, Failed):
            self.stats.add("refresh_failures")
            logger.warning("refresh failed: %s", outcome.error)
        elif isinstance(outcome, Expired):
            logger.warning("session expired: %s", outcome.error)


class _TokenRequests:
    """The refresher as a flight calls it: with the manager's DPoP, which decides the key
    (and refuses tokens bound to another), or refusing DPoP-bound tokens without one. Its
    ``arefresh`` when that does native async I/O, else its ``refresh`` in a host worker."""

    __slots__ = ("_clock", "_dpop", "_native", "_refresher", "_takes_deadline")

    def __init__(self, refresher: Refresher, dpop: DPoP | None, clock: Clock) -> None:
        self._refresher = refresher
        self._dpop = dpop
        self._clock = clock
        self._native = native_async(refresher)
        method = getattr(refresher, "arefresh" if self._native else "refresh")
        self._takes_deadline = _takes(method, "deadline")

    def serves(self, refresher: Refresher, dpop: DPoP | None, clock: Clock) -> bool:
        """Whether this is still the manager's refresher, DPoP and clock (all are attributes
        an application may replace)."""
        return self._refresher is refresher and self._dpop is dpop and self._clock is clock

    async def arefresh(self, current: TokenSet | None, deadline: float) -> TokenSet:
        options: dict[str, Any] = {}
        if self._dpop is not None:
            options = {"deadline": deadline, "dpop": self._dpop}
        elif current is not None and current.dpop_key is not None:
            raise _not_configured()
        elif self._takes_deadline:
            options = {"deadline": deadline}
        if self._native:
            arefresh: Callable[..., Awaitable[TokenSet]] = self._refresher.arefresh  # type: ignore[attr-defined]
            return await arefresh(current, self._clock, **options)
        refresh: Callable[..., TokenSet] = self._refresher.refresh
        return await host().run_sync(lambda: refresh(current, self._clock, **options))


def native_async(refresher: object) -> bool:
    """Whether ``refresher.arefresh`` does its I/O natively, so the host loop may await it.

    Not when a subclass overrides ``refresh`` below the class that defines ``arefresh`` (the
    override is what its author means), nor for a FunctionRefresher of a plain function.
    """
    if isinstance(refresher, FunctionRefresher):
        function = refresher.function
        return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
            getattr(function, "__call__", None)  # noqa: B004 - an async callable object
        )
    arefresh = getattr(refresher, "arefresh", None)
    if not inspect.iscoroutinefunction(arefresh):
        return False
    if "refresh" in vars(refresher) or "arefresh" in vars(refresher):
        return False
    owners = type(refresher).__mro__
    sync_owner = next((c for c in owners if "refresh" in vars(c)), None)
    async_owner = next((c for c in owners if "arefresh" in vars(c)), None)
    if sync_owner is None or async_owner is None:
        return async_owner is not None
    return owners.index(async_owner) <= owners.index(sync_owner)


def _takes(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _not_configured() -> DPoPError:
    return DPoPError(
        "dpop_not_configured",
        "the tokens are bound to a DPoP key but this manager has no dpop: pass "
        "TokenManager(..., dpop='ES256') (or the key) to use them",
    )


def _refresh_policy(
    policy: RefreshPolicy | None,
    leeway: float | None,
    window_fraction: float | None,
    min_interval: float | None,
) -> RefreshPolicy:
    """``policy``, or one made of the deprecated flat keywords (warned about)."""
    flat = {
        name: value
        for name, value in (
            ("leeway", leeway),
            ("window_fraction", window_fraction),
            ("min_interval", min_interval),
        )
        if value is not None
    }
    if not flat:
        return RefreshPolicy() if policy is None else policy
    if policy is not None:
        raise TypeError(f"give policy= or {', '.join(flat)}=, not both")
    warn(
        f"TokenManager({', '.join(f'{name}=' for name in flat)})",
        f"policy=RefreshPolicy({', '.join(f'{name}=...' for name in flat)})",
        stacklevel=4,
    )
    return RefreshPolicy(**flat)


def _gave_up_waiting(flight: FlightHandle, timeout: float | None) -> RefreshFailed:
    if timeout is not None and flight.remaining() > 0:
        what = f"gave up waiting for the refresh after {timeout:g} s"
    else:
        what = f"the refresh did not finish within {flight.bound:g} s"
    return RefreshFailed("refresh_timeout", f"{what}; it goes on in the background")


async def _run_hook(hook: Hook | None, argument: object) -> None:
    """Run a hook on the host: an async one on its loop, a plain one in a worker thread (it
    may block); whatever it raises is logged."""
    if hook is None:
        return
    try:
        if inspect.iscoroutinefunction(hook):
            await hook(argument)
            return
        result = await host().run_sync(hook, argument)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("freshtoken hook %r raised", getattr(hook, "__name__", hook))
