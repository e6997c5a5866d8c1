"""OpenTelemetry metrics and traces of a manager's refreshes: ``instrument(manager)``.

Needs the ``otel`` extra (``pip install 'freshtoken[otel]'``, the OpenTelemetry API); the
application brings the SDK and its exporters, as with any instrumented library. Without
them the API's no-op providers make every call here cost next to nothing.

Metrics (meter ``freshtoken``):

    freshtoken.refreshes             counter    flights, by trigger and outcome
    freshtoken.refresh.duration      histogram  s, from a flight's start to its outcome
    freshtoken.refresh.attempts      counter    requests for new tokens (retries included)
    freshtoken.refresh.lock_wait     histogram  s, to get the store's refresh lock
    freshtoken.rejections.passed     counter    rejections of fresh tokens handed back to
                                                the caller without a refresh (backoff)
    freshtoken.token.time_to_expiry  gauge      s until the current access token expires
                                                (negative once it has; none if unknown)

Every point carries ``freshtoken.store`` (the store's class) and, if given to
[`instrument()`][instrument], ``freshtoken.credential``; flights add ``freshtoken.trigger`` and
``freshtoken.outcome`` (see [`freshtoken.Trigger`][] and the outcomes of
[`freshtoken.FlightReport`][]).

Traces: one ``freshtoken refresh`` span per flight, a child of the span current where the
flight started (the request that found the token expired, say; a background refresh may end
after it). Attributes: the ones above, ``freshtoken.attempts``, and on failure
``freshtoken.error`` (the error code, such as ``invalid_grant``) and
``http.response.status_code``; status ERROR for ``failed`` and ``session_expired``. Events:
``lock acquired`` (with the wait) and ``attempt`` (with its number).

Never in any attribute: a token or refresh token (the observer seam never hands one out), a
URL (a token endpoint's query may carry a secret, and its host says nothing the credential
label does not), an error description (server text), or the client id. A client id is not a
secret (RFC 6749 section 2.2), but it names an application and often a customer, telemetry
travels further than logs (to vendors, to other teams), and a label you choose
(``credential=``) tells credentials apart as well.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ModuleNotFoundError as error:  # pragma: no cover - exercised with sys.modules patched
    raise ModuleNotFoundError(
        "freshtoken.otel needs the OpenTelemetry API: pip install 'freshtoken[otel]'",
        name=error.name,
    ) from error

from ._engine.manager import TokenManager
from ._engine.observers import FlightObserver, FlightReport, RefreshObserver, Trigger
from ._version import __version__

__all__ = ["OpenTelemetryObserver", "instrument"]

_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ERROR_OUTCOMES = frozenset({"failed", "session_expired"})

Attributes = dict[str, Any]


def instrument(
    manager: TokenManager,
    *,
    credential: str | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> OpenTelemetryObserver:
    """Report ``manager``'s refreshes as metrics and spans (the global providers unless
    given); ``credential`` labels them, to tell this manager's from others'. Returns the
    observer it set as ``manager.observer``; a manager that has another observer is refused."""
    if manager.observer is not None:
        raise ValueError(f"{manager!r} already has an observer: {manager.observer!r}")
    observer = OpenTelemetryObserver(
        store=type(manager.store).__name__,
        credential=credential,
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
    )
    observer._instruments.watch(manager, observer)
    manager.observer = observer
    return observer


class OpenTelemetryObserver(RefreshObserver):
    """Turns a manager's flight reports into OpenTelemetry metrics and spans."""

    def __init__(
        self,
        *,
        store: str,
        credential: str | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.attributes: Attributes = {"freshtoken.store": store}
        if credential is not None:
            self.attributes["freshtoken.credential"] = credential
        self._instruments = _Instruments.of(meter_provider)
        self._tracer = trace.get_tracer("freshtoken", __version__, tracer_provider)

    def flight_started(self, trigger: Trigger) -> FlightObserver:
        attributes = {**self.attributes, "freshtoken.trigger": trigger}
        span = self._tracer.start_span(
            "freshtoken refresh", kind=SpanKind.INTERNAL, attributes=attributes
        )
        return _FlightSpan(self._instruments, span, attributes)

    def rejection_passed(self) -> None:
        self._instruments.rejections_passed.add(1, self.attributes)

    def __repr__(self) -> str:
        return f"OpenTelemetryObserver({self.attributes!r})"


class _FlightSpan(FlightObserver):
    __slots__ = ("_attributes", "_instruments", "_span")

    def __init__(self, instruments: _Instruments, span: trace.Span, attributes: Attributes):
        self._instruments = instruments
        self._span = span
        self._attributes = attributes

    def lock_acquired(self, waited: float) -> None:
        self._instruments.lock_wait.record(waited, self._attributes)
        self._span.add_event("lock acquired", {"freshtoken.lock_wait": waited})

    def attempt(self, number: int) -> None:
        self._instruments.attempts.add(1, self._attributes)
        self._span.add_event("attempt", {"freshtoken.attempt": number})

    def ended(self, report: FlightReport) -> None:
        attributes = {**self._attributes, "freshtoken.outcome": report.outcome}
        self._instruments.flights.add(1, attributes)
        self._instruments.duration.record(report.duration, attributes)
        span = self._span
        span.set_attribute("freshtoken.outcome", report.outcome)
        span.set_attribute("freshtoken.attempts", report.attempts)
        if report.error is not None:
            span.set_attribute("freshtoken.error", report.error)
        if report.status is not None:
            span.set_attribute("http.response.status_code", report.status)
        if report.outcome in _ERROR_OUTCOMES:
            span.set_status(Status(StatusCode.ERROR, report.error))
        span.end()


class _Instruments:
    """The instruments of one meter provider, shared by every observer that reports to it
    (a provider keeps the first instrument of a name, and the first gauge's callback)."""

    @classmethod
    def of(cls, provider: metrics.MeterProvider | None) -> _Instruments:
        key: object = metrics.get_meter_provider() if provider is None else provider
        with _instruments_mutex:
            instruments = _instruments_by_provider.get(key)
            if instruments is None:
                instruments = _instruments_by_provider[key] = cls(provider)
            return instruments

    def __init__(self, provider: metrics.MeterProvider | None) -> None:
        meter = metrics.get_meter("freshtoken", __version__, provider)
        self.flights = meter.create_counter(
            "freshtoken.refreshes", "{flight}", "Refresh flights, by trigger and outcome"
        )
        self.duration = meter.create_histogram(
            "freshtoken.refresh.duration",
            "s",
            "Duration of refresh flights, from start to outcome",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.attempts = meter.create_counter(
            "freshtoken.refresh.attempts", "{attempt}", "Requests for new tokens, retries included"
        )
        self.lock_wait = meter.create_histogram(
            "freshtoken.refresh.lock_wait",
            "s",
            "Time taken to get the store's refresh lock",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.rejections_passed = meter.create_counter(
            "freshtoken.rejections.passed",
            "{rejection}",
            "Rejections of fresh tokens handed back to the caller without a refresh",
        )
        self._mutex = threading.Lock()
        self._managers: weakref.WeakKeyDictionary[TokenManager, OpenTelemetryObserver] = (
            weakref.WeakKeyDictionary()
        )
        meter.create_observable_gauge(
            "freshtoken.token.time_to_expiry",
            [self._time_to_expiry],
            "s",
            "Seconds until the current access token expires (negative once it has)",
        )

    def watch(self, manager: TokenManager, observer: OpenTelemetryObserver) -> None:
        with self._mutex:
            self._managers[manager] = observer

    def _time_to_expiry(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        with self._mutex:
            watched = list(self._managers.items())
        for manager, observer in watched:
            if manager.observer is not observer:
                continue  # the application took this manager's observer away
            # The credential's view: the tokens last read or saved, even when stale.
            view = manager._state.view
            expires_at = None if view is None else view.tokens.expires_at
            if expires_at is not None:
                yield metrics.Observation(expires_at - manager.clock(), observer.attributes)


_instruments_by_provider: weakref.WeakKeyDictionary[object, _Instruments] = (
    weakref.WeakKeyDictionary()
)
_instruments_mutex = threading.Lock()
