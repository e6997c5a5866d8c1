"""The decisions, with no I/O: values and a clock in, verdicts out.

Rules (the manager and every integration follow them; nothing else decides):

* Freshness. A token is FRESH until its refresh is due, STALE from then until it expires (a
  refresh is due but the token still works), EXPIRED after. The refresh falls due at the
  server's ``refresh_in`` hint when given, else ``window`` seconds before expiry, where the
  window is the smaller of ``leeway`` and ``window_fraction`` of the lifetime (so short-lived
  tokens are not refreshed on every request), widened to at least ``REFRESH_HEADROOM`` times
  the observed refresh duration plus ``USE_HEADROOM`` times the observed interval between
  callers (at most half the lifetime), so that a caller comes inside the window and the
  refresh it starts lands in time.
  A token of unknown expiry is always FRESH: only a 401 can tell. ``RefreshPolicy.schedule``
  computes the two instants once per token set.
* Floor. One credential refreshes at most once per ``min_interval`` seconds (monotonic), so
  that ``expires_in: 0``, ``refresh_in: 0`` or a server whose fresh tokens an API rejects
  cannot turn every request into a token request (see ``_credential``).
* Rejection. A response asks for a refresh when its status is in the configured set (401) and
  its Bearer challenges (RFC 6750 section 3, every ``WWW-Authenticate`` line) name no error
  code but ``invalid_token``. ``insufficient_scope`` and every other code are answers for the
  caller, not for us; other schemes' challenges (Basic; DPoP unless DPoP is configured) do not
  count. A 401 with no such challenge at all asks for a refresh.
* Token endpoint answers: `freshtoken._core.answers` reads and judges them; origins, and
  where a token may go: `freshtoken._core.origins`. Both are re-exported here.
* Backoff. Exponential with jitter, capped, never shorter than the server's Retry-After; a
  Retry-After beyond the cap is not slept through: the attempt fails at once and the
  credential is not retried before it. A refresh whose answer was lost is retried at once:
  the server may have rotated the refresh token, and servers with a reuse grace interval accept
  the same one again for a short while. Each attempt has an overall deadline (``timeout``).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
from collections.abc import Collection, Iterable
from email.utils import parsedate_to_datetime

from ..errors import RefreshFailed
from .answers import (
    LARGEST_ANSWER,
    PERMANENT_ERRORS,
    error_verdict,
    interpret_token_response,
    oauth_error,
    read_json,
    read_token_answer,
)
from .challenges import HeaderValues, parse_challenges
from .origins import (
    Destinations,
    Origin,
    check_transport,
    default_port,
    is_loopback,
    normal_path,
    origin_of,
)
from .tokens import TokenSet

# The answers' and origins' names are re-exported: `freshtoken._core.policy` is where the rest
# of freshtoken has always found every decision.
__all__ = [
    "LARGEST_ANSWER",
    "PERMANENT_ERRORS",
    "Destinations",
    "Freshness",
    "Origin",
    "RefreshPolicy",
    "RetryPolicy",
    "check_transport",
    "default_port",
    "error_verdict",
    "freshness_at",
    "interpret_token_response",
    "is_loopback",
    "normal_path",
    "oauth_error",
    "origin_of",
    "parse_retry_after",
    "read_json",
    "read_token_answer",
    "wants_refresh",
]

REFRESH_HEADROOM = 3.0  # a refresh falls due at least this many refresh durations early
USE_HEADROOM = 1.25  # ...and this many intervals between callers early


class Freshness(enum.Enum):
    FRESH = "fresh"
    STALE = "stale"
    EXPIRED = "expired"


@dataclasses.dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """When to refresh: ``leeway`` seconds before expiry at most, ``window_fraction`` of the
    token's lifetime at most, and never more often than once per ``min_interval`` seconds.

    ``refresh_duration`` is how long refreshes of this credential have been taking, and
    ``use_interval`` how long its callers have gone without asking (the manager observes
    both): the refresh falls due at least ``REFRESH_HEADROOM`` times the one plus
    ``USE_HEADROOM`` times the other before expiry, at most half the lifetime before, so
    that a caller comes while the token is due but still works, and the background refresh
    it starts lands before the token expires."""

    leeway: float = 30.0
    window_fraction: float = 0.25
    min_interval: float = 1.0
    refresh_duration: float = 0.0
    use_interval: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.leeway) and self.leeway >= 0):
            raise ValueError("leeway must be a finite number of seconds >= 0")
        if not 0 <= self.window_fraction < 1:
            raise ValueError("window_fraction must be in [0, 1)")
        if not (math.isfinite(self.min_interval) and self.min_interval >= 0):
            raise ValueError("min_interval must be a finite number of seconds >= 0")
        if not (math.isfinite(self.refresh_duration) and self.refresh_duration >= 0):
            raise ValueError("refresh_duration must be a finite number of seconds >= 0")
        if not (math.isfinite(self.use_interval) and self.use_interval >= 0):
            raise ValueError("use_interval must be a finite number of seconds >= 0")

    def refresh_due_at(self, tokens: TokenSet) -> float | None:
        if tokens.expires_at is None:
            return tokens.refresh_at
        window = self.leeway
        lifetime = tokens.lifetime
        if lifetime is not None:
            window = min(window, self.window_fraction * lifetime)
            headroom = REFRESH_HEADROOM * self.refresh_duration + USE_HEADROOM * self.use_interval
            if headroom > 0:
                window = max(window, min(headroom, lifetime / 2))
        due = tokens.expires_at - window
        if tokens.refresh_at is not None:
            due = min(due, tokens.refresh_at)
        return due

    def schedule(self, tokens: TokenSet) -> tuple[float, float]:
        """``(due_at, expires_at)`` on the wall clock, ``inf`` where unknown."""
        due = self.refresh_due_at(tokens)
        expires = math.inf if tokens.expires_at is None else tokens.expires_at
        return (math.inf if due is None else min(due, expires)), expires

    def freshness(self, tokens: TokenSet, now: float) -> Freshness:
        due_at, expires_at = self.schedule(tokens)
        return freshness_at(due_at, expires_at, now)


def freshness_at(due_at: float, expires_at: float, now: float) -> Freshness:
    """The one place that turns a token's schedule and the time into its freshness."""
    if now >= expires_at:
        return Freshness.EXPIRED
    if now >= due_at:
        return Freshness.STALE
    return Freshness.FRESH


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try a failing refresh: ``attempts`` in all while callers wait, with delays
    ``initial * multiplier**n`` capped at ``maximum`` and spread by ``jitter`` (0..1). Each
    attempt must end within ``timeout`` seconds, however slowly the server answers."""

    attempts: int = 3
    initial: float = 0.5
    multiplier: float = 2.0
    maximum: float = 10.0
    jitter: float = 0.5
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if not (0 <= self.initial <= self.maximum and self.multiplier >= 1):
            raise ValueError("need 0 <= initial <= maximum and multiplier >= 1")
        if not math.isfinite(self.maximum):
            raise ValueError("maximum must be a finite number of seconds")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be in [0, 1]")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError("timeout must be a finite number of seconds > 0")

    def delay(
        self, failures: int, error: RefreshFailed | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based).

        Never shorter than the server's Retry-After, which may exceed ``maximum``: the caller
        decides whether to wait that long (see [`honours()`][honours]).
        """
        if error is not None and error.answer_lost and failures == 1:
            return 0.0
        base = min(self.maximum, self.initial * self.multiplier ** max(0, failures - 1))
        spread = (rng or random).uniform(1.0 - self.jitter, 1.0)
        delay = base * spread
        if error is not None and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay

    def honours(self, delay: float) -> bool:
        """Whether a flight may sleep ``delay`` seconds before its next attempt."""
        return delay <= self.maximum

    def bound(self) -> float:
        """An upper bound on one refresh flight's attempts, backoff included (seconds)."""
        return self.attempts * self.timeout + (self.attempts - 1) * self.maximum


def wants_refresh(
    status: int,
    www_authenticate: HeaderValues,
    statuses: Iterable[int] = (401,),
    schemes: Collection[str] = ("bearer",),
) -> bool:
    """Does this API response say the access token was rejected (RFC 6750 section 3.1)?

    ``www_authenticate`` is the header's value, or the list of its lines when it was repeated.
    ``schemes`` are the (lower-case) schemes whose challenges count: ``bearer``, and ``dpop``
    for a manager that sends DPoP tokens (RFC 9449 section 7.1: the same error codes, plus
    ``use_dpop_nonce`` and ``invalid_dpop_proof``, which a refresh cannot cure).
    """
    if status not in statuses:
        return False
    errors = {
        challenge.param("error")
        for challenge in parse_challenges(www_authenticate)
        if challenge.scheme in schemes
    }
    return errors <= {None, "invalid_token"}


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to isdigit, not to float
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - now)
