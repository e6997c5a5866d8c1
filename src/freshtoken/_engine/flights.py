"""How a manager runs its flights: launch one on the host, perform its steps, record the
outcome in the credential, run the hooks, wake the waiters.

``Flights`` is the flight half of [`TokenManager`][freshtoken.TokenManager] (a base class of it):
the manager decides (``_credential``'s rules) and hands out tokens; these methods do what a
decision started, on the flight host, and nothing else. The refresher is called through
[`TokenRequests`][] (its native ``arefresh`` or its blocking ``refresh`` in a host worker, with
the manager's DPoP) and through the credential's ``Attempts`` (a request outlives its attempt's
deadline, see ``attempts``).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from .._core.clock import Clock
from .._core.credential import (
    Adopted,
    CredentialState,
    Expired,
    Failed,
    Job,
    Outcome,
    Refreshed,
    Rules,
)
from .._core.tokens import TokenSet
from .._oauth.dpop import DPoP
from .._runtime.host import host
from ..errors import DPoPError, RefreshFailed
from ..stores._base import TokenStore
from .credentials import Credential, recovered
from .flight import strip_tracebacks
from .observers import FlightWatch, RefreshObserver, trigger_of
from .refresher import Refresher
from .steps import flight_steps, run_steps

if TYPE_CHECKING:
    from .manager import TokenManager

__all__ = ["Flights", "Hook", "TokenRequests", "native_async", "not_configured"]

logger = logging.getLogger("freshtoken")

Hook: TypeAlias = Callable[..., Any]


class Flights:
    """The flight half of a manager (see the module docstring)."""

    # What the manager holds, as these methods read it.
    refresher: Refresher
    store: TokenStore
    dpop: DPoP | None
    clock: Clock
    observer: RefreshObserver | None
    on_refresh: Hook | None
    on_session_expired: Hook | None
    stats: Any  # ManagerStats
    _credential: Credential
    _state: CredentialState
    _monotonic: Callable[[], float]
    _requests: TokenRequests | None

    @property
    def rules(self) -> Rules:
        raise NotImplementedError

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
            requests = self._requests = TokenRequests(self.refresher, self.dpop, self.clock)
        attempts, send = self._credential.attempts, requests.arefresh

        async def attempt(current: TokenSet | None, deadline: float) -> TokenSet:
            return await attempts.attempt(
                current,
                deadline,
                lambda until: send(current, until),
                self._collect_late,
                urgency(job, current, self.clock),
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
        if isinstance(outcome, Refreshed):
            recovered(self.refresher, self._monotonic())  # ends other credentials' backoffs
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
                await run_hook(self.on_refresh, outcome.stored.tokens)
            elif isinstance(outcome, Expired):
                for manager in managers:
                    manager.stats.add("session_expirations")
                    await run_hook(manager.on_session_expired, outcome.error)
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


class TokenRequests:
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
            raise not_configured()
        elif self._takes_deadline:
            options = {"deadline": deadline}
        if self._native:
            arefresh: Callable[..., Awaitable[TokenSet]] = self._refresher.arefresh  # type: ignore[attr-defined]
            return await arefresh(current, self._clock, **options)
        refresh: Callable[..., TokenSet] = self._refresher.refresh
        return await host().run_sync(lambda: refresh(current, self._clock, **options))


def urgency(job: Job, current: TokenSet | None, clock: Clock) -> float:
    """When the answer of a flight's attempt is needed (wall clock), for the issuer's queue:
    now if a caller waits for it, else when the token it replaces expires (earliest first)."""
    expires_at = math.inf if current is None or current.expires_at is None else current.expires_at
    return expires_at if job.background else min(expires_at, clock())


def native_async(refresher: object) -> bool:
    """Whether ``refresher.arefresh`` does its I/O natively, so the host loop may await it.

    A refresher may say so itself with a ``native_async()`` method (a FunctionRefresher does:
    only an async function is). Otherwise not when a subclass overrides ``refresh`` below the
    class that defines ``arefresh`` (the override is what its author means).
    """
    declared = getattr(refresher, "native_async", None)
    if callable(declared):
        return bool(declared())
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


def not_configured() -> DPoPError:
    return DPoPError(
        "dpop_not_configured",
        "the tokens are bound to a DPoP key but this manager has no dpop: pass "
        "TokenManager(..., dpop='ES256') (or the key) to use them",
    )


async def run_hook(hook: Hook | None, argument: object) -> None:
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
