"""TokenManager: hands out fresh tokens; each refresh runs once, on its own, whoever asks.

How the pieces fit:

* ``_core/credential.py`` decides. Every manager whose store has the same ``key`` shares one
  credential (``credentials``); asking it is a short critical section that never spans I/O.
* A refresh (or a re-read of the store) is a *flight* (``steps`` says what it does, ``flights``
  runs it) that runs as a task on the flight host: one event loop in one daemon thread per
  process (``_runtime/host.py``). No caller's cancellation reaches it: not asyncio's
  (``wait_for``, ``task.cancel()``, a closing loop), not trio's or anyio's cancel scopes, not
  a thread that stops waiting. So a request that went out is read to the end (past its
  attempt's deadline too: ``attempts``) and its answer saved, and a rotated refresh token is
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
* How long refreshes take is watched (the slowest recent one, decaying), and how long
  callers stay away (the longest time from a token falling due to its first caller): the
  background refresh of a STALE token falls due at least three times the one plus 1.25
  times the other before expiry (at most half the lifetime earlier), so that a caller
  starts it and it lands before any request has to wait for it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec

from .._core.challenges import HeaderValues
from .._core.clock import Clock, monotonic_of, system_clock
from .._core.credential import (
    FRESH,
    CredentialState,
    Demand,
    Fail,
    FlightHandle,
    Force,
    Pass,
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
from .._runtime.host import in_host_thread
from ..errors import DPoPError, RefreshFailed, StoreError
from ..stores._base import MemoryStore, TokenStore
from .credentials import credential_for, recovered_at, release
from .flight import Flight
from .flights import Flights, Hook, TokenRequests, not_configured
from .observers import FlightWatch, RefreshObserver
from .refresher import Refresher, takes_dpop
from .resource import ResourceCall

__all__ = ["ManagerStats", "TokenManager"]

_P = ParamSpec("_P")


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


class TokenManager(Flights):
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
        self._credential = credential_for(self)
        self._state = self._credential.state
        self._observed_policy = (self.policy, (0.0, 0.0), self.policy)
        self._requests: TokenRequests | None = None  # built at the first flight, then kept

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
        release(self, self._credential)

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
        credential = self._credential
        slowest, away = credential.slowest, credential.state.use_interval
        if slowest > 0 or away > 0:
            base, seen, observed = self._observed_policy
            if base is not policy or seen != (slowest, away):
                observed = dataclasses.replace(policy, refresh_duration=slowest, use_interval=away)
                self._observed_policy = (policy, (slowest, away), observed)
            policy = observed
        return Rules(
            policy,
            self.retry,
            self.refresher.can_acquire,
            self.lock_timeout,
            recovered_at(self.refresher),
        )

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
        until = None if timeout is None else time.monotonic() + timeout
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
            left = None if until is None else max(0.0, until - time.monotonic())
            if not decision.flight.wait(left):
                raise _gave_up_waiting(decision.flight, timeout)
            tokens = decision.flight.outcome()
            if tokens is not None and _answers(decision, demand, tokens):
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
            if tokens is not None and _answers(decision, demand, tokens):
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
            raise not_configured()

    def _adopt(self, tokens: TokenSet | None) -> None:
        credential = self._credential
        with credential.mutex:
            credential.state.set_tokens(tokens, self.rules)


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


def _answers(decision: Wait, demand: Demand, tokens: TokenSet) -> bool:
    """Whether a flight's tokens answer the caller that waited for it. The flight the caller's
    own decision started always does: it did what was asked, even when the server answered
    with the same access token (some do while it is valid), which would otherwise start
    another flight, and another, without end."""
    return decision.start is not None or answered_by(demand, tokens)


def _gave_up_waiting(flight: FlightHandle, timeout: float | None) -> RefreshFailed:
    if timeout is not None and flight.remaining() > 0:
        what = f"gave up waiting for the refresh after {timeout:g} s"
    else:
        what = f"the refresh did not finish within {flight.bound:g} s"
    return RefreshFailed("refresh_timeout", f"{what}; it goes on in the background")
