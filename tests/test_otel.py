"""freshtoken.otel: OpenTelemetry metrics and spans of refreshes, read back from the SDK's
in-memory reader and exporter, against the reference server (real HTTP)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import freshtoken
import freshtoken.httpx
from freshtoken.otel import instrument
from freshtoken.server import ReferenceServer

FAST_RETRY = freshtoken.RetryPolicy(attempts=3, initial=0.001, maximum=0.005)
STORE = {"freshtoken.store": "MemoryStore", "freshtoken.credential": "api"}


@dataclasses.dataclass
class Telemetry:
    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter
    meters: MeterProvider
    tracers: TracerProvider

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def value(self, name: str, **attributes: Any) -> float:
        """The counter's (or gauge's) value at exactly these attributes, store ones included."""
        wanted = {**STORE, **flights(**attributes)}
        found = [p.value for p in self.points(name) if dict(p.attributes or {}) == wanted]
        assert len(found) <= 1
        return found[0] if found else 0

    def total(self, name: str) -> float:
        """The counter's value summed over every attribute set."""
        return float(sum(point.value for point in self.points(name)))

    def histogram(self, name: str) -> HistogramDataPoint:
        (point,) = self.points(name)
        assert isinstance(point, HistogramDataPoint)
        return point

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(metric_readers=[reader])
    yield Telemetry(reader, exporter, meters, tracers)
    meters.shutdown()
    tracers.shutdown()


@pytest.fixture
def manager(
    oauth_server: ReferenceServer, telemetry: Telemetry
) -> Iterator[freshtoken.TokenManager]:
    """The demo user's manager, logged in, instrumented as credential "api"."""
    refresher = freshtoken.OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    made = freshtoken.TokenManager(refresher, retry=FAST_RETRY, clock=oauth_server.clock)
    instrument(
        made,
        credential="api",
        meter_provider=telemetry.meters,
        tracer_provider=telemetry.tracers,
    )
    made.set_tokens(login(oauth_server))
    yield made
    refresher.close()


def login(server: ReferenceServer) -> freshtoken.TokenSet:
    return freshtoken.TokenSet.from_response(server.login(), sent_at=server.clock())


def flights(**attributes: str) -> dict[str, str]:
    return {f"freshtoken.{name}": value for name, value in attributes.items()}


def test_a_refresh_is_counted_timed_and_traced(
    manager: freshtoken.TokenManager, oauth_server: ReferenceServer, telemetry: Telemetry
) -> None:
    """One refresh after expiry: one flight, one attempt, its duration, lock wait and span."""
    oauth_server.advance(301)  # the demo access token lives 300 s
    manager.get_tokens()
    assert telemetry.value("freshtoken.refreshes", trigger="expiry", outcome="refreshed") == 1
    assert telemetry.total("freshtoken.refresh.attempts") == 1
    duration = telemetry.histogram("freshtoken.refresh.duration")
    assert duration.count == 1
    assert 0 < duration.sum < 10
    assert dict(duration.attributes or {}) == {
        **STORE,
        **flights(trigger="expiry", outcome="refreshed"),
    }
    assert telemetry.histogram("freshtoken.refresh.lock_wait").count == 1
    (span,) = telemetry.spans()
    assert span.name == "freshtoken refresh"
    assert dict(span.attributes or {}) == {
        **STORE,
        **flights(trigger="expiry", outcome="refreshed"),
        "freshtoken.attempts": 1,
    }
    assert [event.name for event in span.events] == ["lock acquired", "attempt"]
    assert span.status.status_code is StatusCode.UNSET


def test_time_to_expiry_follows_the_current_token(
    manager: freshtoken.TokenManager, oauth_server: ReferenceServer, telemetry: Telemetry
) -> None:
    """The gauge counts down with the clock and jumps back up after a refresh."""
    assert telemetry.value("freshtoken.token.time_to_expiry") == pytest.approx(300, abs=1)
    oauth_server.advance(100)
    assert telemetry.value("freshtoken.token.time_to_expiry") == pytest.approx(200, abs=1)
    oauth_server.advance(250)
    assert telemetry.value("freshtoken.token.time_to_expiry") == pytest.approx(-50, abs=1)
    manager.get_tokens()
    assert telemetry.value("freshtoken.token.time_to_expiry") == pytest.approx(300, abs=1)


def test_every_instrumented_manager_has_its_own_gauge(
    manager: freshtoken.TokenManager, oauth_server: ReferenceServer, telemetry: Telemetry
) -> None:
    """Managers on one meter provider share its instruments; each reports its own expiry."""
    other = freshtoken.TokenManager(
        freshtoken.OAuth2Refresher(oauth_server.token_url, client_id="demo"),
        clock=oauth_server.clock,
    )
    instrument(other, credential="other", meter_provider=telemetry.meters)
    oauth_server.advance(100)
    other.set_tokens(login(oauth_server))
    gauges = {
        dict(point.attributes)["freshtoken.credential"]: point.value
        for point in telemetry.points("freshtoken.token.time_to_expiry")
    }
    assert gauges == {"api": pytest.approx(200, abs=1), "other": pytest.approx(300, abs=1)}
    other.observer = None  # uninstrumented: no longer observed
    assert [
        dict(p.attributes)["freshtoken.credential"]
        for p in telemetry.points("freshtoken.token.time_to_expiry")
    ] == ["api"]


def test_triggers_and_outcomes_are_counted_apart(
    manager: freshtoken.TokenManager, oauth_server: ReferenceServer, telemetry: Telemetry
) -> None:
    """Stale, forced and rejection flights, and a rejection passed back, each under its name."""
    oauth_server.advance(280)  # stale: refreshed in the background
    manager.get_tokens()
    assert manager.wait_idle(10)
    manager.refresh()
    oauth_server.fail_api(3)
    with httpx.Client(auth=freshtoken.httpx.TokenAuth(manager)) as client:
        # 401, a refresh, its retry 401 too (the new token rejected while young: handed back,
        # no second refresh); then 401 again: handed back too
        assert client.get(oauth_server.api_url + "/me").status_code == 401
        assert client.get(oauth_server.api_url + "/me").status_code == 401
    counts = {
        (
            dict(p.attributes)["freshtoken.trigger"],
            dict(p.attributes)["freshtoken.outcome"],
        ): p.value
        for p in telemetry.points("freshtoken.refreshes")
    }
    assert counts == {
        ("stale", "refreshed"): 1,
        ("forced", "refreshed"): 1,
        ("rejection", "refreshed"): 1,
    }
    assert telemetry.value("freshtoken.rejections.passed") == 2
    assert [dict(s.attributes or {})["freshtoken.trigger"] for s in telemetry.spans()] == [
        "stale",
        "forced",
        "rejection",
    ]


def test_failures_mark_the_span_and_count_every_attempt(
    manager: freshtoken.TokenManager, oauth_server: ReferenceServer, telemetry: Telemetry
) -> None:
    """Transient and permanent failures: error code, status, attempts, span status ERROR."""
    oauth_server.advance(301)
    oauth_server.inject("status_503", count=3)
    with pytest.raises(freshtoken.RefreshFailed):
        manager.get_tokens()
    oauth_server.revoke("demo")
    with pytest.raises(freshtoken.SessionExpired):
        manager.refresh()
    failed, expired = telemetry.spans()
    assert dict(failed.attributes or {}) == {
        **STORE,
        **flights(trigger="expiry", outcome="failed", error="temporarily_unavailable"),
        "freshtoken.attempts": 3,
        "http.response.status_code": 503,
    }
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "temporarily_unavailable"
    assert [e.name for e in failed.events].count("attempt") == 3
    assert dict(expired.attributes or {})["freshtoken.error"] == "invalid_grant"
    assert dict(expired.attributes or {})["http.response.status_code"] == 400
    assert expired.status.status_code is StatusCode.ERROR
    assert telemetry.value("freshtoken.refreshes", trigger="expiry", outcome="failed") == 1
    assert telemetry.value("freshtoken.refreshes", trigger="forced", outcome="session_expired") == 1
    assert telemetry.total("freshtoken.refresh.attempts") == 4


def test_the_refresh_span_is_a_child_of_the_request_that_needed_it(
    manager: freshtoken.TokenManager, oauth_server: ReferenceServer, telemetry: Telemetry
) -> None:
    """The span current where a flight starts is its parent, though the flight has a thread."""
    tracer = telemetry.tracers.get_tracer("test")
    oauth_server.advance(301)
    with tracer.start_as_current_span("request") as request:
        manager.get_tokens()
    refresh = next(s for s in telemetry.spans() if s.name == "freshtoken refresh")
    assert refresh.parent is not None
    assert refresh.parent.span_id == request.get_span_context().span_id


def test_no_token_secret_or_client_id_reaches_any_span_or_metric(
    manager: freshtoken.TokenManager, oauth_server: ReferenceServer, telemetry: Telemetry
) -> None:
    """Everything exported (names, attributes, events, statuses, exemplars) is scanned."""
    seen: list[freshtoken.TokenSet] = [manager.get_tokens()]
    manager.on_refresh = seen.append
    tracer = telemetry.tracers.get_tracer("test")
    with tracer.start_as_current_span("request"):  # exemplars keep a span's context
        oauth_server.advance(301)
        manager.get_tokens()
        oauth_server.fail_api(2)
        with httpx.Client(auth=freshtoken.httpx.TokenAuth(manager)) as client:
            client.get(oauth_server.api_url + "/me")
        oauth_server.inject("status_429", count=3, retry_after=0)
        with pytest.raises(freshtoken.RefreshFailed):
            manager.refresh()
        oauth_server.revoke("demo")
        with pytest.raises(freshtoken.SessionExpired):
            manager.refresh()
    secrets = {"demo-secret", "demo"}  # the client secret, the password, the client id
    for tokens in seen:
        secrets.add(tokens.access_token)
        secrets.add(str(tokens.refresh_token))
    assert len(seen) >= 3
    metrics = telemetry.reader.get_metrics_data()
    assert metrics is not None
    exported = [metrics.to_json(), *(span.to_json() for span in telemetry.spans())]
    assert len(exported) >= 5
    for text in exported:
        for secret in secrets:
            assert secret not in text
    for span in telemetry.spans():
        assert_clean(span.attributes, secrets)
        for event in span.events:
            assert_clean(event.attributes, secrets)


def assert_clean(attributes: Mapping[str, Any] | None, secrets: set[str]) -> None:
    for key, value in (attributes or {}).items():
        for secret in secrets:
            assert secret not in key
            assert secret not in str(value)


def test_instrument_refuses_a_manager_observed_already(manager: freshtoken.TokenManager) -> None:
    """A second instrument() would silently replace the first observer: it is refused."""
    with pytest.raises(ValueError, match="already has an observer"):
        instrument(manager)


def test_without_an_sdk_the_global_no_op_providers_cost_nothing_visible(
    oauth_server: ReferenceServer,
) -> None:
    """With no SDK configured, an instrumented manager refreshes as usual."""
    refresher = freshtoken.OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    manager = freshtoken.TokenManager(refresher, clock=oauth_server.clock)
    instrument(manager)
    manager.set_tokens(login(oauth_server))
    oauth_server.advance(301)
    assert manager.get_tokens().expires_at == pytest.approx(oauth_server.clock() + 300, abs=1)
    refresher.close()
