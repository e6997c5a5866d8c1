"""The observer seam: what a [`TokenManager`][freshtoken.TokenManager] tells about its refreshes.

A manager given an ``observer`` reports each *flight* (one refresh, or one re-read of the
store) as it goes: when it starts (in the thread of the caller that started it), when it has
taken the store's refresh lock, each attempt, and how it ended (in the flight's own thread,
before its waiters wake). It also reports each rejection it passes back to the caller.
Nothing is reported for a token served from the cache: the hot path does not know observers
exist. [`freshtoken.otel`][] turns these reports into OpenTelemetry metrics and spans; any
other backend subclasses [`RefreshObserver`][] the same way.

What an observer is told never holds token material: no token, no refresh token, no URL, no
client id; error codes are those of freshtoken's errors (secrets already cut out).
An observer that raises is logged and otherwise ignored; keep observers short, they run on
the refresh's path.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Literal, ParamSpec, TypeAlias, TypeVar

from .._core.credential import (
    Adopted,
    Busy,
    Cleared,
    Expired,
    Failed,
    Force,
    Job,
    Loaded,
    Outcome,
    Refreshed,
    Replace,
)
from ..errors import AuthError, LockTimeout, RefreshFailed, SessionExpired, StoreError

__all__ = [
    "FlightObserver",
    "FlightOutcome",
    "FlightReport",
    "FlightWatch",
    "RefreshObserver",
    "Trigger",
    "trigger_of",
]

logger = logging.getLogger("freshtoken")

Trigger: TypeAlias = Literal["acquire", "expiry", "stale", "rejection", "forced", "reload"]
"""Why a flight started.

- ``acquire``: the manager held no tokens (first use, or after a logout); the flight reads
  the store and, if it holds none and the refresher can acquire, gets new ones
- ``expiry``: the tokens expired: callers wait for new ones
- ``stale``: the tokens are due for a refresh but still work: refreshed in the background
- ``rejection``: the API rejected the current token
- ``forced``: ``refresh()`` was called
- ``reload``: another process changed the store: a background re-read, no refresh
"""

FlightOutcome: TypeAlias = Literal[
    "refreshed", "adopted", "loaded", "busy", "failed", "session_expired", "cleared"
]
"""How a flight ended.

- ``refreshed``: new tokens were obtained and saved
- ``adopted``: the store already held tokens that answer (another process refreshed)
- ``loaded``: a re-read of the store, no refresh asked for
- ``busy``: a background flight found another process refreshing, and left it to it
- ``failed``: a transient failure: the tokens were kept (see ``error`` and ``status``)
- ``session_expired``: a permanent failure: the store was cleared, the user must log in again
- ``cleared``: the application cleared the store while the flight ran
"""


@dataclasses.dataclass(frozen=True, slots=True)
class FlightReport:
    """How one flight went. Durations are seconds of real (monotonic) time.

    ``duration`` runs from the flight's start to its outcome, a backoff it had to wait first
    included. ``lock_wait`` is the time taken to get the store's refresh lock, None when the
    flight did not take it (the store answered first). ``error`` is the failure's code
    (``invalid_grant``, ``temporarily_unavailable``, ``store_error``...) and ``status`` the
    token endpoint's HTTP status, when the flight failed and they are known.
    """

    trigger: Trigger
    outcome: FlightOutcome
    attempts: int
    duration: float
    lock_wait: float | None = None
    error: str | None = None
    status: int | None = None


class FlightObserver:
    """Follows one flight; its methods are called from the flight's thread."""

    def lock_acquired(self, waited: float) -> None:
        """The flight holds the store's refresh lock, after ``waited`` seconds."""

    def attempt(self, number: int) -> None:
        """Attempt ``number`` (from 1) to get new tokens starts."""

    def ended(self, report: FlightReport) -> None:
        """The flight's outcome is recorded; its waiters wake once this returns."""


class RefreshObserver:
    """Told about a manager's flights; subclass it and override what you need."""

    def flight_started(self, trigger: Trigger) -> FlightObserver | None:
        """A flight starts, for ``trigger``; called in the thread (and the context, for
        context variables) of the caller that started it. Return an observer for the rest of
        the flight, or None to hear no more of it."""
        return None

    def rejection_passed(self) -> None:
        """A rejection of a fresh token was handed back to the caller without a refresh
        (the rejection backoff: the API rejects fresh tokens too)."""


# -- the manager's side ------------------------------------------------------------------------

_OUTCOMES: dict[type, FlightOutcome] = {
    Refreshed: "refreshed",
    Adopted: "adopted",
    Loaded: "loaded",
    Busy: "busy",
    Failed: "failed",
    Expired: "session_expired",
    Cleared: "cleared",
}


def trigger_of(job: Job, had_tokens: bool) -> Trigger:
    """Why ``job`` was started; ``had_tokens``: the manager held tokens when it was."""
    if job.reload_only:
        return "reload"
    if job.background:
        return "stale"
    if isinstance(job.demand, Replace):
        return "rejection"
    if isinstance(job.demand, Force):
        return "forced"
    return "expiry" if had_tokens else "acquire"


class FlightWatch:
    """One observed flight as the manager sees it: counts attempts, times the flight and the
    lock wait, and keeps an observer's exception away from the flight."""

    __slots__ = ("_attempts", "_lock_wait", "_observer", "_started", "_trigger")

    def __init__(self, observer: FlightObserver, trigger: Trigger, started: float) -> None:
        self._observer = observer
        self._trigger = trigger
        self._started = started
        self._attempts = 0
        self._lock_wait: float | None = None

    @classmethod
    def start(cls, observer: RefreshObserver, trigger: Trigger) -> FlightWatch | None:
        started = time.monotonic()
        flight_observer = _safely(observer.flight_started, trigger)
        return None if flight_observer is None else cls(flight_observer, trigger, started)

    @staticmethod
    def rejection_passed(observer: RefreshObserver) -> None:
        _safely(observer.rejection_passed)

    def attempt(self) -> None:
        self._attempts += 1
        _safely(self._observer.attempt, self._attempts)

    def lock_acquired(self, waited: float) -> None:
        self._lock_wait = waited
        _safely(self._observer.lock_acquired, waited)

    def ended(self, outcome: Outcome) -> None:
        error = outcome.error if isinstance(outcome, (Failed, Expired)) else None
        report = FlightReport(
            trigger=self._trigger,
            outcome=_OUTCOMES[type(outcome)],
            attempts=self._attempts,
            duration=time.monotonic() - self._started,
            lock_wait=self._lock_wait,
            error=None if error is None else _code(error),
            status=None if error is None else getattr(error, "status", None),
        )
        _safely(self._observer.ended, report)


def _code(error: AuthError) -> str:
    if isinstance(error, (RefreshFailed, SessionExpired)):
        return error.error
    if isinstance(error, LockTimeout):
        return "lock_timeout"
    if isinstance(error, StoreError):
        return "store_error"
    return type(error).__name__


_T = TypeVar("_T")
_P = ParamSpec("_P")


def _safely(call: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T | None:
    try:
        return call(*args, **kwargs)
    except Exception:
        logger.exception("freshtoken observer %r raised", getattr(call, "__qualname__", call))
        return None
