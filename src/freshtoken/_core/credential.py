"""One credential's state and the rules that move it: decisions and transitions, no I/O.

Every manager whose store has the same ``key`` shares one [`CredentialState`][] (in this
process). Callers present a *demand*; [`CredentialState.decide()`][CredentialState.decide] answers
what to do at once; a flight (the refresh, run in its own thread by the manager) ends with an
*outcome* that [`CredentialState.land()`][CredentialState.land] records. Both run under the
credential's mutex, never across I/O, and take the time as arguments, so tests step them by hand.

Demands:

    FRESH          tokens to send now
    Replace(t)     the API rejected t: tokens to retry with
    Force(t)       refresh now, unless the tokens are no longer t (an explicit refresh())

Decisions:

    Use(tokens)    send these                        (may also start a background flight)
    Wait(flight)   wait for that flight's outcome    (may also start it)
    Fail(error)    raise this (a fresh copy per caller)
    Pass           hand the rejection back to the caller: no refresh, no retry

The rules, in order (``now`` is the wall clock, for expiry; everything that waits is monotonic):

1. The view. The state holds the tokens last read or saved, with their schedule (when a refresh
   falls due, when they expire). When another process changes the store the view becomes
   *unknown* but is kept as a fallback: a fallback that is still FRESH is used while one
   background flight re-reads the store.
2. FRESH tokens are used. So are STALE or even EXPIRED ones within ``min_interval`` of the last
   refresh (the floor: a server answering ``expires_in: 0`` or ``refresh_in: 0`` gets one
   refresh per ``min_interval``, not one per request).
3. STALE tokens are used, and one background flight refreshes them (one attempt; the store's
   lock tried once): no request waits while its token still works. During a failure backoff or
   while another process holds the lock, no new background flight starts.
   The first caller since the token fell due (STALE or EXPIRED) shows how long callers stay
   away: at least the time since it fell due (the caller before found it FRESH). The
   longest such interval (``use_interval``; only one of a second or more, and under half
   the lifetime: shorter gaps are the machine's scheduling, and an idle session coming back
   tells nothing of a cadence) widens the next tokens' window
   (``RefreshPolicy``), so that a call falls inside it early enough: a call at the window's
   very end would send a token that expires on its way, or find it expired.
4. EXPIRED or missing tokens make callers wait for a flight (started if none runs), which
   retries with backoff. After a failure the next flight starts only once the backoff has run
   out; callers arriving earlier wait the rest of it, or, when the last flight already used all
   its attempts or the server asked for more than ``RetryPolicy.maximum``, fail at once with a
   copy of the last error. A flight that starts after one that used all its attempts makes a
   single attempt (a *probe*): during an outage a caller waits for one answer at most, and
   the credential's own backoff spaces the probes. A refresh through the same refresher (the
   same provider, for every credential sharing it) that succeeds after a credential's
   failure ends that credential's backoff: the provider is back.
   A request our own per-issuer cap held back until its deadline (``RefreshFailed("busy")``)
   never reached the server: it says nothing of the server's health, so it does not lengthen
   the backoff; the next flight may start after a short jitter (``BUSY_RETRY``).
5. No tokens and a refresher that cannot acquire: ``SessionExpired("no_tokens")``, no I/O.
   After a permanent failure a refresher that can acquire (client credentials) is not asked
   again before a backoff has passed: meanwhile callers get the same error.
6. A rejection of a token that is no longer the current one is answered with the current one
   (no refresh), if that one is FRESH: the retry is the request's last chance, so a current
   token that is due itself is refreshed first (or the flight doing it waited for). A
   rejection of the current token joins the flight in progress or starts one. A token
   rejected in the first half of its life is suspect (one nearer its expiry may just have
   been slow to arrive, on a busy machine or network): if the tokens a suspect rejection's
   refresh produced are rejected as young too, the next such refresh waits
   ``min_interval * 2**(n-1)`` (n in a row, capped), and suspect rejections in between are
   passed back to the caller: an API that rejects every token gets a handful of refreshes,
   not one per request. A quiet spell twice that long resets n.
7. A forced refresh ignores the floor and the backoffs, and is single-flighted like the rest.
8. A landing never overwrites tokens saved or cleared by the application after the flight
   began (``set_tokens``/``clear`` bump ``version``): its waiters decide again instead.
9. An attempt's deadline ends the wait, not the request (``_engine/attempts.py``): a retry
   waits for the answer of the request still in the air instead of presenting the same
   refresh token again, and an answer that comes when no flight waits any more is saved by
   a flight of its own ([`collect()`][CredentialState.collect]).

The file is longer than the house's 500 lines on purpose: it is one job, the rules above and
the one class that applies them, and it is meant to be read in one sitting next to this list.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from typing import Protocol, TypeAlias

from ..errors import AuthError, RefreshFailed, SessionExpired, StoreError
from .policy import Freshness, RefreshPolicy, RetryPolicy, freshness_at
from .tokens import StoredTokens, TokenSet

__all__ = [
    "FRESH",
    "FlightHandle",
    "copy_error",
    "Adopted",
    "Busy",
    "Cleared",
    "CredentialState",
    "Decision",
    "Demand",
    "Expired",
    "Fail",
    "Failed",
    "Force",
    "Fresh",
    "Job",
    "Loaded",
    "Outcome",
    "Pass",
    "Refreshed",
    "Replace",
    "Rules",
    "Use",
    "View",
    "Wait",
    "answered_by",
    "busy_retry_delay",
    "satisfied_by",
    "unsent",
]

BUSY_RECHECK = 0.1  # seconds before a background flight tries another process's lock again
BUSY_RETRY = 0.2  # at most this (jittered) before retrying a request our own cap held back
STORE_RETRY_CAP = 1.0  # a store outage is retried soon: backing off protects no server
REJECTION_BACKOFF_CAP = 300.0
_FLIGHT_MARGIN = 5.0  # seconds waiters allow a flight beyond its computed bound


# -- demands ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Fresh:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Replace:
    rejected: TokenSet


@dataclasses.dataclass(frozen=True, slots=True)
class Force:
    """Refresh now, unless the tokens are no longer ``seen``. ``known``: the caller knew what
    was stored when it asked (else whatever is stored is refreshed)."""

    seen: TokenSet | None
    known: bool = True


FRESH = Fresh()
Demand: TypeAlias = Fresh | Replace | Force


def satisfied_by(demand: Demand, tokens: TokenSet) -> bool:
    """Whether ``tokens`` answer ``demand`` (freshness aside, which needs a clock)."""
    if isinstance(demand, Replace):
        return tokens.access_token != demand.rejected.access_token
    if isinstance(demand, Force):
        return demand.known and (
            demand.seen is None or tokens.access_token != demand.seen.access_token
        )
    return True


def answered_by(demand: Demand, flight_result: TokenSet) -> bool:
    """Whether a flight's tokens answer a waiter's ``demand``: as [`satisfied_by()`][satisfied_by],
    except that a forced refresh asked for blindly takes what the flight it waited for produced."""
    if isinstance(demand, Force) and not demand.known:
        return True
    return satisfied_by(demand, flight_result)


class FlightHandle(Protocol):
    """A refresh in progress, as the rules hold it: started with a ``bound`` (the seconds after
    which nobody waits for it), handed to the callers that wait, landed by the engine. The
    engine's flight (``_engine/flight.py``) is the one kind there is; the rules only create,
    keep and compare them, through the factory a [`CredentialState`][] is given."""

    @property
    def bound(self) -> float: ...

    def land(self, result: TokenSet | None, error: BaseException | None) -> None: ...

    def outcome(self) -> TokenSet | None: ...

    def remaining(self, timeout: float | None = None) -> float: ...

    def wait(self, timeout: float | None = None) -> bool: ...

    async def wait_async(self) -> bool: ...


def unsent(error: BaseException) -> bool:
    """Whether ``error`` is a request that never left this process because the issuer's cap
    had no place for it (``RefreshFailed("busy")``): no news about the server at all."""
    return isinstance(error, RefreshFailed) and error.error == "busy"


def busy_retry_delay(rng: random.Random | None = None) -> float:
    """A short jittered wait before retrying an unsent request: the jitter spreads the
    retries of many credentials instead of sending them back to the queue together."""
    return (rng or random).uniform(0.0, BUSY_RETRY)


def copy_error(error: BaseException) -> BaseException:
    """A fresh instance for each caller: re-raising one instance from many threads would
    tangle their tracebacks and grow them without bound."""
    if isinstance(error, AuthError):
        copy = error.__class__.__new__(error.__class__)
        copy.__dict__.update(error.__dict__)
        copy.args = error.args
        copy.__cause__ = error.__cause__
        return copy
    return RefreshFailed("refresh_error", f"the refresh failed with {type(error).__name__}")


# -- what a flight is asked to do, and how it can end ----------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """The work of one flight. ``background``: nobody waits for it (one attempt, the lock tried
    once). ``reload_only``: just re-read the store. ``delay``: backoff left to sleep first."""

    flight: FlightHandle
    demand: Demand
    version: int
    background: bool = False
    reload_only: bool = False
    delay: float = 0.0
    suspect: bool = False  # answers the rejection of a token that was FRESH (rule 6)
    probe: bool = False
    collect: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Loaded:
    stored: StoredTokens | None


@dataclasses.dataclass(frozen=True, slots=True)
class Adopted:
    """Another process (or an earlier flight) already saved tokens that answer the demand."""

    stored: StoredTokens


@dataclasses.dataclass(frozen=True, slots=True)
class Refreshed:
    stored: StoredTokens


@dataclasses.dataclass(frozen=True, slots=True)
class Busy:
    """A background flight found another process holding the refresh lock."""


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """A transient failure (token endpoint or store); ``gave_up``: no further attempt soon."""

    error: AuthError
    gave_up: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Expired:
    """The session ended: the store was cleared."""

    error: SessionExpired


@dataclasses.dataclass(frozen=True, slots=True)
class Cleared:
    """The application cleared the store while the flight ran; its tokens were dropped."""


Outcome: TypeAlias = Loaded | Adopted | Refreshed | Busy | Failed | Expired | Cleared


# -- decisions --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Use:
    tokens: TokenSet
    start: Job | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Wait:
    flight: FlightHandle
    start: Job | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Fail:
    error: BaseException


@dataclasses.dataclass(frozen=True, slots=True)
class Pass:
    pass


Decision: TypeAlias = Use | Wait | Fail | Pass


@dataclasses.dataclass(frozen=True, slots=True)
class Rules:
    """What one manager brings to a decision: its policies and its refresher's ability."""

    refresh: RefreshPolicy
    retry: RetryPolicy
    can_acquire: bool
    lock_timeout: float
    # When a refresh through the same refresher (one issuer, shared by many credentials) last
    # succeeded (monotonic): the provider is back, so a backoff begun before it is over.
    recovered_at: float = -math.inf

    def flight_bound(self, delay: float) -> float:
        return delay + self.lock_timeout + self.retry.bound() + _FLIGHT_MARGIN


@dataclasses.dataclass(frozen=True, slots=True)
class View:
    """Tokens with their schedule on the wall clock (``inf`` where unknown)."""

    tokens: TokenSet
    due_at: float
    expires_at: float

    @classmethod
    def of(cls, tokens: TokenSet, policy: RefreshPolicy) -> View:
        due_at, expires_at = policy.schedule(tokens)
        return cls(tokens, due_at, expires_at)

    def freshness(self, now: float) -> Freshness:
        return freshness_at(self.due_at, self.expires_at, now)

    def young(self, now: float) -> bool:
        """In the first half of its life (or of unknown lifetime): a rejection of it is odd."""
        lifetime, obtained = self.tokens.lifetime, self.tokens.obtained_at
        return lifetime is None or obtained is None or now < obtained + lifetime / 2


_NO_TOKENS = "no tokens are stored: log in first"


# Callers away for less than this are the machine's scheduling (a process short of CPU, a
# loop busy elsewhere), not a cadence: learned, such gaps would widen every window of a fleet
# on a busy machine for good, and refresh short-lived tokens far more than once per lifetime.
SHORTEST_ABSENCE = 1.0


class CredentialState:
    """The state of one credential. Call every method under the credential's mutex.

    ``fast`` is the view when it is known, else None: the lock-free hot path reads it alone
    (one attribute read of an immutable value) and falls back to [`decide()`][decide].
    """

    def __init__(self, new_flight: Callable[[float], FlightHandle]) -> None:
        self._new_flight = new_flight
        self.view: View | None = None
        self.known = False
        self.fast: View | None = None
        self.version = 0
        self.flight: FlightHandle | None = None
        # failure backoff (transient failures)
        self.failures = 0
        self.last_failure: AuthError | None = None
        self.not_before = -math.inf
        self.failed_at = -math.inf
        self.gave_up = False
        self.busy_until = -math.inf
        # permanent failure
        self.expirations = 0
        self.expired: SessionExpired | None = None
        self.expired_until = -math.inf
        # refresh floor and rejection backoff
        self.floor_until = -math.inf
        self.rejections = 0
        self.last_rejection_refresh = -math.inf
        # callers' cadence (rule 3): how long they stay away, learned from the first caller
        # after each token falls due
        self.use_interval = 0.0
        self._window_met = False  # a caller came since the view fell due

    # -- decisions ----------------------------------------------------------------------------

    def decide(self, demand: Demand, rules: Rules, now: float, mono: float) -> Decision:
        if isinstance(demand, Replace):
            return self._decide_replace(demand, rules, now, mono)
        if isinstance(demand, Force):
            return self._decide_force(demand, rules, mono)
        return self._decide_fresh(rules, now, mono)

    def _decide_fresh(self, rules: Rules, now: float, mono: float) -> Decision:
        view = self.view
        if view is None:
            if self.known:
                return self._no_tokens(FRESH, rules, mono)
            if self.flight is not None:
                return Wait(self.flight)
            return self._wait_for_new(FRESH, rules, mono)
        freshness = view.freshness(now)
        if freshness is not Freshness.FRESH and mono < self.floor_until:
            freshness = Freshness.FRESH  # rule 2: the floor
        if not self.known:
            if self.flight is not None:
                return Use(view.tokens) if freshness is Freshness.FRESH else Wait(self.flight)
            if freshness is Freshness.FRESH:
                return Use(view.tokens, self._start(FRESH, rules, background=True, reload=True))
        if freshness is Freshness.FRESH:
            return Use(view.tokens)
        if not self._window_met:
            self._caller_was_away(view, now)
        if freshness is Freshness.STALE:
            if self.flight is not None or self._backing_off(rules, mono) or mono < self.busy_until:
                return Use(view.tokens)
            return Use(view.tokens, self._start(FRESH, rules, background=True))
        if self.flight is not None:
            return Wait(self.flight)
        return self._wait_for_new(FRESH, rules, mono)

    def _caller_was_away(self, view: View, now: float) -> None:
        """Rule 3: the first caller since the token fell due: callers stay away at least
        ``now - due_at`` (the one before found it FRESH)."""
        self._window_met = True  # once per view
        lifetime = view.tokens.lifetime
        away = now - view.due_at
        if (
            lifetime is not None
            and SHORTEST_ABSENCE <= away <= lifetime / 2
            and away > self.use_interval
        ):
            self.use_interval = away

    def _decide_replace(self, demand: Replace, rules: Rules, now: float, mono: float) -> Decision:
        view = self.view
        if view is not None and satisfied_by(demand, view.tokens):
            # A rejection of an older token: retry with the current one, unless that one is
            # due itself: the retry (the request's last chance) would likely be rejected too.
            if view.freshness(now) is Freshness.FRESH or mono < self.floor_until:
                return Use(view.tokens)
            if self.flight is not None:
                return Wait(self.flight)
            if self._backing_off(rules, mono) or mono < self.busy_until:
                return Use(view.tokens)
            return Wait(*self._started(demand, rules, delay=0.0))
        if self.flight is not None:
            return Wait(self.flight)
        if view is None:
            return self._decide_fresh(rules, now, mono)
        suspect = view.young(now)
        if self.rejections and suspect:
            backoff = self._rejection_backoff(rules)
            if mono >= self.last_rejection_refresh + 2 * backoff:
                self.rejections = 0  # a quiet spell: the tokens worked for a while
            elif mono < self.last_rejection_refresh + backoff:
                return Pass()
        return self._wait_for_new(demand, rules, mono, suspect=suspect)

    def _decide_force(self, demand: Force, rules: Rules, mono: float) -> Decision:
        if self.flight is not None:
            return Wait(self.flight)
        if self.known and self.view is None and not rules.can_acquire:
            return Fail(SessionExpired("no_tokens", _NO_TOKENS))
        return Wait(*self._started(demand, rules, delay=0.0))

    def _no_tokens(self, demand: Demand, rules: Rules, mono: float) -> Decision:
        if not rules.can_acquire:
            return Fail(SessionExpired("no_tokens", _NO_TOKENS))
        if self.expired is not None and mono < self.expired_until:
            return Fail(copy_error(self.expired))  # rule 5: no token request per API call
        if self.flight is not None:
            return Wait(self.flight)
        return self._wait_for_new(demand, rules, mono)

    def _wait_for_new(
        self, demand: Demand, rules: Rules, mono: float, *, suspect: bool = False
    ) -> Decision:
        """Rule 4: a flight callers wait for, unless the last failure says to fail at once."""
        delay = 0.0
        if self.last_failure is not None and self._backing_off(rules, mono):
            delay = self.not_before - mono
            if self.gave_up or not rules.retry.honours(delay):
                return Fail(copy_error(self.last_failure))
        return Wait(*self._started(demand, rules, delay=delay, suspect=suspect))

    def _started(
        self, demand: Demand, rules: Rules, *, delay: float, suspect: bool = False
    ) -> tuple[FlightHandle, Job]:
        job = self._start(demand, rules, delay=delay, suspect=suspect)
        return job.flight, job

    def _start(
        self,
        demand: Demand,
        rules: Rules,
        *,
        background: bool = False,
        reload: bool = False,
        delay: float = 0.0,
        suspect: bool = False,
    ) -> Job:
        flight = self.flight = self._new_flight(rules.flight_bound(delay))
        probe = self.gave_up and self.last_failure is not None
        return Job(flight, demand, self.version, background, reload, delay, suspect, probe)

    def _backing_off(self, rules: Rules, mono: float) -> bool:
        """Rule 4: in a failure backoff, unless a refresh through the same refresher has
        succeeded since the failure (the provider is back: every credential may try now)."""
        return mono < self.not_before and rules.recovered_at < self.failed_at

    def _rejection_backoff(self, rules: Rules) -> float:
        steps = min(self.rejections - 1, 30)
        return min(REJECTION_BACKOFF_CAP, rules.refresh.min_interval * 2.0**steps)

    # -- transitions --------------------------------------------------------------------------

    def land(
        self, job: Job, outcome: Outcome, rules: Rules, mono: float
    ) -> tuple[TokenSet | None, BaseException | None]:
        """Record a flight's outcome; returns what its waiters get (None, None: decide again)."""
        if self.flight is job.flight:
            self.flight = None
        fenced = job.version != self.version
        if isinstance(outcome, (Loaded, Adopted, Refreshed)):
            if fenced:
                return None, None
            stored = outcome.stored
            self._see(None if stored is None else stored.tokens, rules)
            if isinstance(outcome, Loaded):
                return None, None
            self._succeeded(mono, rules)
            if isinstance(outcome, Refreshed) and job.suspect:
                self.rejections += 1
                self.last_rejection_refresh = mono
            return outcome.stored.tokens, None
        if isinstance(outcome, Busy):
            self.busy_until = mono + BUSY_RECHECK
            return None, None
        if isinstance(outcome, Failed):
            self._failed(outcome, rules, mono)
            return None, outcome.error
        if isinstance(outcome, Expired):
            self.expirations += 1
            self.expired = outcome.error
            self.expired_until = mono + rules.retry.delay(self.expirations)
            if fenced:
                return None, None
            self._see(None, rules)
            return None, outcome.error
        if fenced:
            return None, None
        self._see(None, rules)
        return None, SessionExpired("no_tokens", "the tokens were cleared during a refresh")

    def collect(self, rules: Rules) -> Job | None:
        """Rule 9: a request an attempt stopped waiting for has answered after all, and no
        flight runs to take the answer: a flight that saves it (and sends nothing)."""
        if self.flight is not None:
            return None  # the running flight takes it at its next attempt, or at its landing
        view = self.view
        flight = self.flight = self._new_flight(rules.flight_bound(0.0))
        demand = Force(None if view is None else view.tokens, known=self.known)
        return Job(flight, demand, self.version, collect=True)

    def set_tokens(self, tokens: TokenSet | None, rules: Rules) -> None:
        """The application saved (a login) or cleared (a logout) the tokens itself."""
        self._see(tokens, rules)
        self.failures, self.last_failure, self.gave_up = 0, None, False
        self.not_before = self.busy_until = -math.inf
        self.expired, self.expired_until = None, -math.inf
        self.rejections = 0

    def adopt_loaded(self, stored: StoredTokens | None, version: int, rules: Rules) -> None:
        """A caller read the store itself (one held in memory): as a ``Loaded`` landing, unless
        anything changed since ``version`` was seen."""
        if self.version == version and not self.known and self.flight is None:
            self._see(None if stored is None else stored.tokens, rules)

    def invalidate(self) -> None:
        """Another process changed the store: re-read it before trusting the view again."""
        self.known = False
        self.fast = None

    def after_fork(self) -> None:
        """In a child process: the flight's thread did not come along."""
        self.flight = None
        self.invalidate()

    def _see(self, tokens: TokenSet | None, rules: Rules) -> None:
        self._window_met = False
        self.view = None if tokens is None else View.of(tokens, rules.refresh)
        self.known = True
        self.fast = self.view
        self.version += 1

    def _succeeded(self, mono: float, rules: Rules) -> None:
        self.failures, self.last_failure, self.gave_up = 0, None, False
        self.not_before = -math.inf
        self.expired, self.expired_until = None, -math.inf
        self.floor_until = mono + rules.refresh.min_interval

    def _failed(self, outcome: Failed, rules: Rules, mono: float) -> None:
        error = outcome.error
        self.last_failure = error
        self.gave_up = outcome.gave_up
        self.failed_at = mono
        if unsent(error):
            # Our own queue was full: the server was not asked, so nothing to back off from.
            self.not_before = mono + busy_retry_delay()
            return
        self.failures += 1
        if isinstance(error, StoreError):
            delay = min(rules.retry.delay(self.failures), STORE_RETRY_CAP)
        elif isinstance(error, RefreshFailed):
            delay = rules.retry.delay(self.failures, error)
        else:
            delay = rules.retry.delay(self.failures)
        self.not_before = mono + delay

    def __repr__(self) -> str:
        tokens = None if self.view is None else self.view.tokens
        return (
            f"CredentialState(tokens={tokens!r}, known={self.known}, "
            f"flight={self.flight!r}, failures={self.failures})"
        )
