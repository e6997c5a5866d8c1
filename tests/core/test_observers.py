"""The observer seam: what a manager reports about its flights, when, and from which thread.

The manager talks to the reference server (real HTTP); the observer is a recorder. One test
needs a store that another process changed: MemoryStore cannot be changed by another process,
so a subclass keeps the manager's watch callback and the test calls it, as RedisStore's
pub/sub listener would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock
import pytest

import freshtoken
from freshtoken import FlightObserver, FlightReport, RefreshObserver, Trigger
from freshtoken.server import ReferenceServer

FAST_RETRY = freshtoken.RetryPolicy(attempts=3, initial=0.001, maximum=0.005)


@dataclasses.dataclass
class Event:
    what: str
    detail: object
    thread: str


class Recorder(RefreshObserver):
    """Every report, in order, with the thread it came from."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.started = threading.Event()

    def _note(self, what: str, detail: object = None) -> None:
        self.events.append(Event(what, detail, threading.current_thread().name))

    def flight_started(self, trigger: Trigger) -> FlightObserver:
        self._note("started", trigger)
        self.started.set()
        return _FlightRecorder(self)

    def rejection_passed(self) -> None:
        self._note("passed")

    def reports(self) -> list[FlightReport]:
        return [e.detail for e in self.events if isinstance(e.detail, FlightReport)]

    def kinds(self) -> list[str]:
        return [e.what for e in self.events]


class _FlightRecorder(FlightObserver):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def lock_acquired(self, waited: float) -> None:
        self.recorder._note("lock", waited)

    def attempt(self, number: int) -> None:
        self.recorder._note("attempt", number)

    def ended(self, report: FlightReport) -> None:
        self.recorder._note("ended", report)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


ManagerFactory = Callable[..., freshtoken.TokenManager]


@pytest.fixture
def make_manager(oauth_server: ReferenceServer, recorder: Recorder) -> Iterator[ManagerFactory]:
    """Managers of the demo user on the server's clock, observed by ``recorder``."""
    refreshers: list[freshtoken.OAuth2Refresher] = []

    def make(
        store: freshtoken.TokenStore | None = None,
        *,
        login: bool = True,
        refresher: freshtoken.OAuth2Refresher | None = None,
        **options: object,
    ) -> freshtoken.TokenManager:
        if refresher is None:
            refresher = freshtoken.OAuth2Refresher(
                oauth_server.token_url, client_id="demo", client_secret="demo-secret"
            )
        refreshers.append(refresher)
        manager = freshtoken.TokenManager(
            refresher,
            store,
            retry=FAST_RETRY,
            clock=oauth_server.clock,
            observer=recorder,
            **options,  # type: ignore[arg-type]
        )
        if login:
            manager.set_tokens(
                freshtoken.TokenSet.from_response(
                    oauth_server.login(), sent_at=oauth_server.clock()
                )
            )
        return manager

    yield make
    for refresher in refreshers:
        refresher.close()


def test_nothing_is_reported_for_tokens_served_from_the_cache(
    make_manager: ManagerFactory, recorder: Recorder
) -> None:
    """The hot path does not report: fresh tokens reach callers without the observer."""
    manager = make_manager()
    for _ in range(100):
        manager.get_tokens()
        assert manager.cached_tokens() is not None
    assert recorder.events == []


def test_a_refresh_reports_start_lock_attempt_and_outcome_in_order(
    make_manager: ManagerFactory, recorder: Recorder, oauth_server: ReferenceServer
) -> None:
    """Start comes from the caller's thread, the rest from the flight host's loop (never a
    worker thread, never the caller's), all before it wakes."""
    manager = make_manager()
    oauth_server.advance(301)  # the demo access token lives 300 s
    manager.get_tokens()
    assert recorder.kinds() == ["started", "lock", "attempt", "ended"]
    started, lock, attempt, ended = recorder.events
    assert (started.detail, started.thread) == ("expiry", threading.current_thread().name)
    assert {lock.thread, attempt.thread, ended.thread} == {"freshtoken-host"}
    assert attempt.detail == 1
    (report,) = recorder.reports()
    assert (report.trigger, report.outcome, report.attempts) == ("expiry", "refreshed", 1)
    assert report.error is None
    assert report.status is None
    assert report.lock_wait is not None
    assert 0 <= report.lock_wait <= report.duration


def test_each_trigger_is_named(
    make_manager: ManagerFactory, recorder: Recorder, oauth_server: ReferenceServer
) -> None:
    """Stale (background), forced, rejection and expiry flights say why they started."""
    manager = make_manager()
    oauth_server.advance(280)  # within the 30 s leeway: stale, still valid
    stale = manager.get_tokens()
    assert manager.wait_idle(10)
    forced = manager.refresh()
    rejected = manager.handle_rejection(forced)
    oauth_server.advance(301)
    manager.get_tokens()
    assert stale is not forced
    assert rejected is not None
    assert [(r.trigger, r.outcome) for r in recorder.reports()] == [
        ("stale", "refreshed"),
        ("forced", "refreshed"),
        ("rejection", "refreshed"),
        ("expiry", "refreshed"),
    ]


def test_a_manager_without_tokens_reports_acquire(
    make_manager: ManagerFactory, recorder: Recorder, oauth_server: ReferenceServer, tmp_path: Path
) -> None:
    """First use: tokens another process left in the store are adopted; client credentials
    acquire new ones."""
    credentials = freshtoken.ClientCredentials(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    make_manager(login=False, refresher=credentials).get_tokens()
    with contextlib.closing(freshtoken.FileStore(tmp_path / "tokens.json")) as store:
        login = oauth_server.login()
        store.save(
            freshtoken.TokenSet.from_response(login, sent_at=oauth_server.clock()),
            expected_generation=None,
        )
        make_manager(store, login=False).get_tokens()
    assert [(r.trigger, r.outcome) for r in recorder.reports()] == [
        ("acquire", "refreshed"),
        ("acquire", "adopted"),
    ]


def test_a_reload_after_another_process_saved_is_reported(
    make_manager: ManagerFactory, recorder: Recorder
) -> None:
    """A store change from elsewhere makes the next caller start a background re-read."""

    class NotifyingStore(freshtoken.MemoryStore):
        loads_in_memory = False  # stands for a durable store, read in a flight

        def watch(self, on_change: Callable[[], None]) -> None:
            self.changed = on_change

    store = NotifyingStore()
    manager = make_manager(store)
    store.changed()
    manager.get_tokens()
    assert manager.wait_idle(10)
    ((trigger, outcome),) = [(r.trigger, r.outcome) for r in recorder.reports()]
    assert (trigger, outcome) == ("reload", "loaded")


def test_failures_report_attempts_code_and_status(
    make_manager: ManagerFactory, recorder: Recorder, oauth_server: ReferenceServer
) -> None:
    """A transient failure after every attempt, then a permanent one, with codes and statuses."""
    manager = make_manager()
    oauth_server.advance(301)
    oauth_server.inject("status_503", count=3)
    with pytest.raises(freshtoken.RefreshFailed):
        manager.get_tokens()
    oauth_server.revoke("demo")
    with pytest.raises(freshtoken.SessionExpired):
        manager.refresh()  # a forced refresh skips the failure backoff
    failed, expired = recorder.reports()
    assert (failed.outcome, failed.attempts) == ("failed", 3)
    assert (failed.error, failed.status) == ("temporarily_unavailable", 503)
    assert [e.detail for e in recorder.events if e.what == "attempt"][:3] == [1, 2, 3]
    assert (expired.trigger, expired.outcome, expired.attempts) == ("forced", "session_expired", 1)
    assert (expired.error, expired.status) == ("invalid_grant", 400)


def test_rejections_passed_back_are_reported(
    make_manager: ManagerFactory, recorder: Recorder
) -> None:
    """A fresh token rejected again right after a rejection refresh is handed back, and told."""
    manager = make_manager()
    first = manager.get_tokens()
    second = manager.handle_rejection(first)  # fresh, rejected: a suspect refresh
    assert second is not None
    assert manager.handle_rejection(second) is None  # its successor rejected too: backing off
    assert recorder.kinds().count("passed") == 1
    assert [r.trigger for r in recorder.reports()] == ["rejection"]


def test_lock_wait_and_busy_are_reported(
    make_manager: ManagerFactory, recorder: Recorder, oauth_server: ReferenceServer, tmp_path: Path
) -> None:
    """The time spent waiting for another process's lock is measured; a background flight
    that finds the lock held reports busy."""
    asked = threading.Event()

    class SignallingFileStore(freshtoken.FileStore):
        @contextlib.contextmanager
        def lock(self, timeout: float) -> Iterator[None]:
            asked.set()
            with super().lock(timeout):
                yield

    manager = make_manager(SignallingFileStore(tmp_path / "tokens.json"), lock_timeout=10)
    other_process = filelock.FileLock(tmp_path / "tokens.json.default.lock")
    with other_process:  # a separate open file: flock treats it as another holder
        oauth_server.advance(280)  # stale: one background try of the lock, which is held
        manager.get_tokens()
        assert manager.wait_idle(10)
        oauth_server.advance(21)  # expired: the caller waits for the lock
        asked.clear()
        waiting = threading.Thread(target=manager.get_tokens)
        waiting.start()
        assert asked.wait(10)
        time.sleep(0.1)  # the wait being measured
    waiting.join(10)
    busy, refreshed = recorder.reports()
    assert (busy.trigger, busy.outcome, busy.lock_wait) == ("stale", "busy", None)
    assert (refreshed.trigger, refreshed.outcome) == ("expiry", "refreshed")
    assert refreshed.lock_wait is not None
    assert refreshed.lock_wait >= 0.1


def test_an_observer_that_raises_changes_nothing(
    make_manager: ManagerFactory, oauth_server: ReferenceServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Observer errors are logged; the refresh and its retries go on as if unobserved."""

    class Broken(RefreshObserver, FlightObserver):
        def flight_started(self, trigger: Trigger) -> FlightObserver:
            return self

        def attempt(self, number: int) -> None:
            raise RuntimeError("attempt")

        def lock_acquired(self, waited: float) -> None:
            raise RuntimeError("lock")

        def ended(self, report: FlightReport) -> None:
            raise RuntimeError("ended")

    manager = make_manager()
    manager.observer = Broken()
    oauth_server.advance(301)
    oauth_server.inject("status_503")
    with caplog.at_level(logging.ERROR, logger="freshtoken"):
        tokens = manager.get_tokens()  # one failed attempt, then a good one
    assert tokens.expires_at is not None
    assert tokens.expires_at > oauth_server.clock()
    assert manager.stats.snapshot()["refresh_attempts"] == 2
    raised = [r.exc_info[1] for r in caplog.records if r.exc_info is not None]
    assert sorted(str(e) for e in raised) == ["attempt", "attempt", "ended", "lock"]


def test_freshtoken_imports_no_telemetry_library() -> None:
    """The core and the integrations never import OpenTelemetry: only freshtoken.otel does."""
    code = (
        "import sys, freshtoken, freshtoken.httpx, freshtoken.requests, freshtoken.aiohttp\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
        "import freshtoken.otel\n"
        "assert 'opentelemetry' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
