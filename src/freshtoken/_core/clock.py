"""Clocks: the wall clock for expiry, a monotonic one for waiting, and a manual pair for tests.

Token expiry is a wall-clock matter (the server's ``expires_in`` is counted from when the
request was sent, in epoch seconds). Everything that waits (backoff, throttles, deadlines,
the refresh floor) runs on a monotonic clock, so that a wall clock stepped back an hour does
not keep a failure throttled for an hour. A ``Clock`` is called for the wall time; when it
also has a ``monotonic()`` method that one is used for waiting, else ``time.monotonic``.
Tests share a [`ManualClock`][] with the reference server and move both faces at once
(``advance``), or step the wall face alone (``jump``) as an NTP correction would.
"""

from __future__ import annotations

import datetime
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "ManualClock", "monotonic_of", "rfc3339", "system_clock"]


class Clock(Protocol):
    def __call__(self) -> float:
        """Seconds since the Unix epoch."""
        ...


system_clock: Clock = time.time
"""The system's wall clock (``time.time``); waiting uses ``time.monotonic`` beside it."""


def monotonic_of(clock: Clock) -> Callable[[], float]:
    """The monotonic face of ``clock``: its ``monotonic`` method, else ``time.monotonic``."""
    face = getattr(clock, "monotonic", None)
    return face if callable(face) else time.monotonic


class ManualClock:
    """A clock that moves only when told to; safe to share between threads and servers.

    ``advance`` moves wall and monotonic time together; ``jump`` steps the wall clock alone,
    either way, as when the system clock is corrected.
    """

    __slots__ = ("_lock", "_monotonic", "_now")

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._now = time.time() if start is None else start
        self._monotonic = 0.0

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("time only moves forward: use jump() to step the wall clock back")
        with self._lock:
            self._now += seconds
            self._monotonic += seconds
            return self._now

    def jump(self, seconds: float) -> float:
        """Step the wall clock by ``seconds`` (negative: back); monotonic time stays."""
        with self._lock:
            self._now += seconds
            return self._now

    def __repr__(self) -> str:
        return f"ManualClock({self():.3f})"


def rfc3339(epoch: float, *, fraction: bool = False) -> str:
    """``2024-05-01T12:00:00Z`` (UTC); with ``fraction``, milliseconds too.

    Raises ValueError for an instant a timestamp cannot carry (not finite, before 1970 or
    after 9999).
    """
    if not math.isfinite(epoch) or epoch < 0:
        raise ValueError(f"the expiry {epoch!r} is not a representable instant")
    try:
        moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"the expiry {epoch!r} is not a representable instant") from None
    if fraction:
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
