"""The flight host: every refresh runs on one loop in one thread, whatever the number of
credentials, with a cap per issuer; callers cannot cancel it; forks start afresh; kept failures
pin nothing; the refresh window widens after slow refreshes.

Over real TCP against the reference server where the wire matters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import multiprocessing
import os
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import pytest

from freshtoken import (
    FlightObserver,
    FlightReport,
    FunctionRefresher,
    ManualClock,
    OAuth2Refresher,
    RefreshFailed,
    RefreshObserver,
    RefreshPolicy,
    RetryPolicy,
    TokenManager,
    TokenSet,
    Trigger,
)
from freshtoken._runtime import connections
from freshtoken._runtime.host import THREAD_NAME, WORKERS, host
from freshtoken.server import ReferenceServer
from freshtoken.testing import ServerFactory

TIMEOUT = 30.0


class ThreadCounter(RefreshObserver, FlightObserver):
    """Records the process's thread count at every attempt (reported on the host loop)."""

    def __init__(self) -> None:
        self.most = threading.active_count()
        self.attempts = 0
        self.lock = threading.Lock()

    def flight_started(self, trigger: Trigger) -> FlightObserver:
        return self

    def attempt(self, number: int) -> None:
        with self.lock:
            self.attempts += 1
            self.most = max(self.most, threading.active_count())

    def ended(self, report: FlightReport) -> None:
        with self.lock:
            self.most = max(self.most, threading.active_count())


def sessions(
    server: ReferenceServer, count: int, refresher: OAuth2Refresher, **options: Any
) -> list[TokenManager]:
    """``count`` logged-in sessions of one client, each a credential of its own."""
    managers = []
    for _ in range(count):
        manager = TokenManager(refresher, clock=server.clock, **options)
        manager.set_tokens(TokenSet.from_response(server.login(), sent_at=server.clock()))
        managers.append(manager)
    return managers


async def everyone(managers: list[TokenManager]) -> list[Any]:
    return await asyncio.gather(*(m.aget_tokens() for m in managers), return_exceptions=True)


def test_five_hundred_credentials_in_backoff_hold_no_thread_each(
    oauth_server: ReferenceServer,
) -> None:
    """500 expired sessions, a token endpoint answering 503: two attempts each with a backoff
    between them, and the process never holds more than the host and its few workers beyond
    what it had; the cap per issuer holds at the server; every session keeps its tokens."""
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    counter = ThreadCounter()
    retry = RetryPolicy(attempts=2, initial=0.5, maximum=0.5, jitter=0.0, timeout=10.0)
    managers = sessions(oauth_server, 500, refresher, retry=retry, observer=counter)
    host().wait_idle(TIMEOUT)
    baseline = threading.active_count()
    counter.most = baseline
    oauth_server.reset_stats()
    oauth_server.inject("status_503", count=10_000)
    oauth_server.advance(301)  # every access token has expired

    results = asyncio.run(everyone(managers))

    assert all(isinstance(r, RefreshFailed) for r in results), {type(r) for r in results}
    assert counter.attempts == 1000
    assert counter.most - baseline <= 1 + WORKERS, (baseline, counter.most)
    stats = oauth_server.stats()
    assert 0 < stats["most_token_requests_in_flight"] <= connections.DEFAULT_CONCURRENCY
    oauth_server.clear_faults()
    oauth_server.reset_stats()
    oauth_server.advance(1)  # past the failure backoff (the managers run on the server's clock)
    fresh = asyncio.run(everyone(managers[:20]))
    assert all(isinstance(tokens, TokenSet) for tokens in fresh)
    assert oauth_server.stats()["reuse_detections"] == 0


def test_the_cap_per_issuer_holds_at_the_server_and_everyone_is_served(
    oauth_server: ReferenceServer,
) -> None:
    """concurrency=3 with a slow endpoint: 40 sessions due at once are refreshed, never more
    than 3 token requests in the air, and the cap is reached (they do go out together)."""
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret", concurrency=3
    )
    managers = sessions(oauth_server, 40, refresher)
    oauth_server.reset_stats()
    oauth_server.set_latency(0.05)
    oauth_server.advance(301)
    results = asyncio.run(everyone(managers))
    assert all(isinstance(tokens, TokenSet) for tokens in results), results
    stats = oauth_server.stats()
    assert stats["refreshes"] == 40
    assert stats["most_token_requests_in_flight"] == 3


def test_a_request_that_finds_no_place_by_its_deadline_fails_unsent_and_its_token_stays_good(
    oauth_server: ReferenceServer,
) -> None:
    """concurrency=1, one refresh hanging: the other waits for a place until its attempt's
    deadline, then fails as "busy", never sent (the server saw one request), and refreshes with
    the same refresh token once there is room."""
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret", concurrency=1
    )
    (slow,) = sessions(oauth_server, 1, refresher, retry=RetryPolicy(attempts=1, timeout=10.0))
    (queued,) = sessions(oauth_server, 1, refresher, retry=RetryPolicy(attempts=1, timeout=0.2))
    oauth_server.reset_stats()
    oauth_server.set_latency(1.5)
    oauth_server.advance(301)

    async def both() -> tuple[Any, Any]:
        first = asyncio.ensure_future(slow.aget_tokens())
        while oauth_server.stats()["token_requests_in_flight"] == 0:
            await asyncio.sleep(0.01)  # a poll of the server's gauge, not a synchronisation
        second = await asyncio.gather(queued.aget_tokens(), return_exceptions=True)
        return await first, second[0]

    tokens, busy = asyncio.run(both())
    assert isinstance(tokens, TokenSet)
    assert isinstance(busy, RefreshFailed)
    assert busy.error == "busy"
    assert not busy.answer_lost
    assert oauth_server.stats()["token_requests"] == 1
    oauth_server.set_latency(0)
    assert queued.refresh().access_token != ""
    assert oauth_server.stats()["reuse_detections"] == 0


def test_many_credentials_recover_from_an_outage_on_their_first_call_at_most_cap_at_a_time(
    oauth_server: ReferenceServer,
) -> None:
    """120 sessions, concurrency=2, the token endpoint answering 503: calls fail, and while
    the backoff runs they fail at once, without a request. Then the provider is back and slow
    (50 ms a refresh, so the queue behind the cap is 3 s long, longer than any fixed queue
    wait): every session's first call gets new tokens, with one token request each, never
    more than 2 in the air, and no refresh token presented twice."""
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret", concurrency=2
    )
    retry = RetryPolicy(attempts=2, initial=0.5, maximum=5.0, jitter=0.0, timeout=TIMEOUT)
    managers = sessions(oauth_server, 120, refresher, retry=retry)
    host().wait_idle(TIMEOUT)
    oauth_server.inject("status_503", count=10_000)
    oauth_server.advance(301)  # every access token has expired
    for _ in range(3):  # the outage goes on: flights, then probes
        failed = asyncio.run(everyone(managers))
        assert all(isinstance(r, RefreshFailed) for r in failed), {type(r) for r in failed}
        sent = oauth_server.stats()["token_requests"]
        during_backoff = asyncio.run(everyone(managers))
        assert all(isinstance(r, RefreshFailed) for r in during_backoff)
        assert oauth_server.stats()["token_requests"] == sent
        oauth_server.advance(6)  # past the longest backoff

    oauth_server.clear_faults()
    oauth_server.reset_stats()
    oauth_server.set_latency(0.05)
    recovered = asyncio.run(everyone(managers))
    assert all(isinstance(tokens, TokenSet) for tokens in recovered), {
        str(r) for r in recovered if not isinstance(r, TokenSet)
    }
    stats = oauth_server.stats()
    assert stats["token_requests"] == stats["refreshes"] == 120
    assert stats["most_token_requests_in_flight"] == 2
    assert stats["reuse_detections"] == 0


def on_host(function: Callable[[], Any]) -> Any:
    """``function()`` run on the flight host's loop (where the issuers' queues live)."""
    result: concurrent.futures.Future[Any] = concurrent.futures.Future()

    async def run() -> None:
        result.set_result(function())

    host().submit(run)
    return result.result(TIMEOUT)


def test_a_caller_whose_token_expired_goes_before_queued_background_refreshes(
    oauth_server: ReferenceServer,
) -> None:
    """concurrency=1: one background refresh in the air and ten queued
    behind it (their tokens are due but work for 25 s more). A session whose token has
    expired, its caller waiting, is sent next, not after the ten (they go on after it)."""
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret", concurrency=1
    )
    origin = refresher._cap()[0]
    landed: list[str] = []

    def session(name: str) -> TokenManager:
        manager = TokenManager(
            refresher, clock=oauth_server.clock, on_refresh=lambda _: landed.append(name)
        )
        manager.set_tokens(
            TokenSet.from_response(oauth_server.login(), sent_at=oauth_server.clock())
        )
        return manager

    expired = session("expired")
    oauth_server.advance(100)
    due = [session(f"due {n}") for n in range(11)]
    oauth_server.advance(275)  # the ten due ones are STALE (30 s window), "expired" expired
    oauth_server.set_latency(1.0)  # the first request holds the one place while the queue forms

    async def until(condition: Callable[[], bool]) -> None:
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while not condition():  # a poll of a gauge, not a synchronisation
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)

    async def scenario() -> TokenSet:
        await due[0].aget_tokens()  # still works: a background refresh goes out
        await until(lambda: oauth_server.stats()["token_requests_in_flight"] == 1)
        oauth_server.set_latency(0.05)  # for the requests after it
        for manager in due[1:]:
            await manager.aget_tokens()
        await until(lambda: on_host(lambda: connections.waiting(origin)) == 10)
        return await expired.aget_tokens()

    tokens = asyncio.run(scenario())
    assert tokens.expires_at is not None
    assert tokens.expires_at > oauth_server.clock()
    assert host().wait_idle(TIMEOUT)
    assert landed[:2] == ["due 0", "expired"], landed
    assert sorted(landed[2:]) == sorted(f"due {n}" for n in range(1, 11))
    assert oauth_server.stats()["reuse_detections"] == 0


def test_once_the_provider_answers_again_every_session_stops_backing_off(
    oauth_server: ReferenceServer,
) -> None:
    """Sessions sharing a refresher back off 30 s after a 503; a refresh through the same
    refresher succeeds (the provider is back): every other session's next call refreshes
    at once, without waiting for its own backoff to run out (the clock does not move)."""
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    retry = RetryPolicy(attempts=1, initial=30.0, maximum=60.0, jitter=0.0, timeout=TIMEOUT)
    managers = sessions(oauth_server, 20, refresher, retry=retry)
    oauth_server.inject("status_503", count=10_000)
    oauth_server.advance(301)
    assert all(isinstance(r, RefreshFailed) for r in asyncio.run(everyone(managers)))
    oauth_server.clear_faults()
    assert all(isinstance(r, RefreshFailed) for r in asyncio.run(everyone(managers)))  # 30 s
    managers[0].refresh(timeout=TIMEOUT)  # forced: it ignores the backoff, and succeeds
    recovered = asyncio.run(everyone(managers[1:]))
    assert all(isinstance(tokens, TokenSet) for tokens in recovered), recovered
    assert oauth_server.stats()["reuse_detections"] == 0


def test_refreshes_of_one_client_reuse_a_kept_alive_connection(
    oauth_server: ReferenceServer,
) -> None:
    """Ten refreshes one after another: one pool on the host for the TLS configuration, the
    same connection carrying every one of them."""
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    (manager,) = sessions(oauth_server, 1, refresher)

    def idle_connections() -> list[object]:
        loop = host()._loop
        assert loop is not None
        idle = connections._loops[loop].pools[(0, False)]._idle
        return [connection for kept in idle.values() for connection in kept]

    manager.refresh(timeout=TIMEOUT)
    before = idle_connections()  # with those earlier tests left
    assert before
    for _ in range(10):
        manager.refresh(timeout=TIMEOUT)
    assert idle_connections() == before  # no connection opened, none lost


def test_flights_run_on_the_host_thread_with_none_of_the_callers_context() -> None:
    """An async refresher runs on the host's loop thread, and sees no context variable of the
    caller that started its flight."""
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    seen: list[tuple[str, str]] = []

    async def endpoint(current: TokenSet | None) -> dict[str, Any]:
        seen.append((threading.current_thread().name, request_id.get()))
        return {"access_token": "a1", "refresh_token": "r1", "expires_in": 60}

    clock = ManualClock(1_000_000.0)
    manager = TokenManager(FunctionRefresher(endpoint), clock=clock)
    manager.set_tokens(TokenSet("a0", refresh_token="r0", expires_at=clock() - 1))
    request_id.set("caller's")
    assert manager.get_tokens(timeout=TIMEOUT).access_token == "a1"
    assert seen == [(THREAD_NAME, "-")]


def test_a_caller_cancelled_during_the_backoff_leaves_the_flight_to_finish() -> None:
    """The caller's task is cancelled while its flight backs off between attempts; the flight
    makes its second attempt, saves, and the next caller gets those tokens with no request."""
    clock = ManualClock(1_000_000.0)
    calls: list[str | None] = []
    failed = threading.Event()

    async def endpoint(current: TokenSet | None) -> dict[str, Any]:
        calls.append(None if current is None else current.refresh_token)
        if len(calls) == 1:
            failed.set()
            raise RefreshFailed("server_error", status=503)
        return {"access_token": "a1", "refresh_token": "r1", "expires_in": 60}

    retry = RetryPolicy(attempts=2, initial=0.2, maximum=0.2, jitter=0.0)
    manager = TokenManager(FunctionRefresher(endpoint), clock=clock, retry=retry)
    manager.set_tokens(TokenSet("a0", refresh_token="r0", expires_at=clock() - 1))

    async def caller() -> None:
        task = asyncio.ensure_future(manager.aget_tokens())
        assert await asyncio.to_thread(failed.wait, TIMEOUT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(caller())
    assert manager.wait_idle(TIMEOUT)
    assert calls == ["r0", "r0"]
    assert manager.get_tokens().access_token == "a1"
    assert len(calls) == 2


def test_an_expired_waiter_of_a_failed_background_flight_gets_a_refresh_of_its_own() -> None:
    """The token was STALE, a background flight started; it expired while that flight ran, and
    a caller joined it; the flight fails: the caller does not get that error, it decides again
    and its own flight (with retries) refreshes. (The test_demo flake.)"""
    clock = ManualClock(1_000_000.0)
    gate = threading.Event()
    calls: list[str] = []

    def endpoint(current: TokenSet | None) -> dict[str, Any]:
        calls.append("call")
        if len(calls) == 1:
            assert gate.wait(TIMEOUT)
            raise RefreshFailed("server_error", status=503)
        return {"access_token": "a1", "refresh_token": "r1", "expires_in": 60}

    retry = RetryPolicy(attempts=3, initial=0.001, maximum=0.005)
    manager = TokenManager(FunctionRefresher(endpoint), clock=clock, retry=retry)
    manager.set_tokens(
        TokenSet.from_response(
            {"access_token": "a0", "refresh_token": "r0", "expires_in": 60}, sent_at=clock()
        )
    )
    clock.advance(50)  # stale: a background flight starts and blocks at the gate
    assert manager.get_tokens().access_token == "a0"
    clock.advance(11)  # expired

    async def waiter() -> TokenSet:
        task = asyncio.ensure_future(manager.aget_tokens())
        await asyncio.sleep(0)  # the task decides: it waits for the background flight
        assert not task.done()
        gate.set()
        return await task

    assert asyncio.run(waiter()).access_token == "a1"
    assert len(calls) == 2


def test_a_kept_failure_holds_no_traceback() -> None:
    """The credential's last error (and its cause) keep no frames: no flight, client or loop
    stays alive through them."""
    clock = ManualClock(1_000_000.0)

    def endpoint(current: TokenSet | None) -> dict[str, Any]:
        raise KeyError("a bug in the refresher")

    manager = TokenManager(FunctionRefresher(endpoint), clock=clock)
    manager.set_tokens(TokenSet("a0", refresh_token="r0", expires_at=clock() - 1))
    with pytest.raises(RefreshFailed) as raised:
        manager.get_tokens(timeout=TIMEOUT)
    assert raised.value.error == "refresher_error"
    kept = manager._credential.state.last_failure
    assert kept is not None
    assert kept.__traceback__ is None
    assert isinstance(kept.__cause__, KeyError)
    assert kept.__cause__.__traceback__ is None


def test_the_refresh_window_widens_after_slow_refreshes() -> None:
    """2 s tokens: due 0.5 s before expiry (window_fraction). After a refresh that took 0.3 s
    the background refresh falls due 0.9 s before expiry (3 x 0.3 s), early enough to land."""
    clock = ManualClock(1_000_000.0)
    calls: list[int] = []

    def endpoint(current: TokenSet | None) -> dict[str, Any]:
        calls.append(1)
        clock.advance(0.3)  # a slow token endpoint
        n = len(calls)
        return {"access_token": f"a{n}", "refresh_token": f"r{n}", "expires_in": 2}

    manager = TokenManager(
        FunctionRefresher(endpoint), clock=clock, policy=RefreshPolicy(min_interval=0.0)
    )
    manager.set_tokens(
        TokenSet.from_response(
            {"access_token": "a0", "refresh_token": "r0", "expires_in": 2}, sent_at=clock()
        )
    )
    clock.advance(1.15)  # 0.85 s left: fresh by the configured window (0.5 s)
    assert manager.get_tokens().access_token == "a0"
    assert manager.wait_idle(TIMEOUT)
    assert calls == []
    refreshed = manager.refresh(timeout=TIMEOUT)  # takes 0.3 s: now the window is 0.9 s
    assert refreshed.access_token == "a1"
    clock.advance(1.15 - 0.3)  # 0.85 s left of a1: due now
    assert manager.get_tokens().access_token == "a1"  # still works: served at once...
    assert manager.wait_idle(TIMEOUT)
    assert len(calls) == 2  # ...and refreshed in the background, before expiry
    assert manager.cached_tokens() is not None


class Triggers(RefreshObserver):
    """Records why each flight started."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def flight_started(self, trigger: Trigger) -> FlightObserver | None:
        self.seen.append(trigger)
        return None


def test_the_refresh_window_widens_to_the_callers_cadence(
    oauth_server_factory: ServerFactory,
) -> None:
    """20 s tokens due 5 s before expiry, a caller every 5 s give or take 10 ms: the window
    can fall between two calls, and the next call finds the token expired and waits. Once
    that is seen, the window is 1.25 x the time the caller stayed away: for two minutes every
    refresh is started in the background by a call that still had a working token."""
    server = oauth_server_factory(access_ttl=20)
    triggers = Triggers()
    manager = TokenManager(
        OAuth2Refresher(server.token_url, client_id="demo", client_secret="demo-secret"),
        clock=server.clock,
        policy=RefreshPolicy(leeway=5),
        observer=triggers,
    )
    manager.set_tokens(TokenSet.from_response(server.login(), sent_at=server.clock()))
    for gap in [4.99, 5.01] * 12:
        server.advance(gap)
        manager.get_tokens(timeout=TIMEOUT)
        assert manager.wait_idle(TIMEOUT)
    assert triggers.seen.count("expiry") == 1, triggers.seen
    assert triggers.seen.count("stale") >= 4
    assert server.stats()["reuse_detections"] == 0


def test_a_first_call_late_in_the_window_widens_the_next_one() -> None:
    """20 s tokens due 5 s before expiry; the first call since it fell due comes 4.99 s in,
    10 ms before expiry (its token would expire on its way upstream): served, refreshed in
    the background, and the next tokens fall due 1.25 x 4.99 s before their expiry."""
    clock = ManualClock(1_000_000.0)

    def endpoint(current: TokenSet | None) -> dict[str, Any]:
        return {"access_token": "a", "refresh_token": "r", "expires_in": 20}

    manager = TokenManager(FunctionRefresher(endpoint), clock=clock, policy=RefreshPolicy(leeway=5))
    manager.set_tokens(TokenSet.from_response(endpoint(None), sent_at=clock()))
    clock.advance(19.99)
    manager.get_tokens(timeout=TIMEOUT)
    assert manager.wait_idle(TIMEOUT)
    assert manager.rules.refresh.use_interval == pytest.approx(4.99)
    refreshed = manager.cached_tokens()
    assert refreshed is not None
    assert refreshed.expires_at == pytest.approx(clock() + 20)
    clock.advance(20 - 1.25 * 4.99 - 0.01)
    assert manager.cached_tokens() is not None
    clock.advance(0.02)
    assert manager.cached_tokens() is None  # due: the next caller refreshes it


def test_an_idle_spell_is_not_taken_for_the_callers_cadence() -> None:
    """A caller back after half an hour finds the token expired: the window stays as set."""
    clock = ManualClock(1_000_000.0)
    calls: list[int] = []

    def endpoint(current: TokenSet | None) -> dict[str, Any]:
        calls.append(1)
        return {"access_token": f"a{len(calls)}", "refresh_token": "r", "expires_in": 20}

    manager = TokenManager(FunctionRefresher(endpoint), clock=clock, policy=RefreshPolicy(leeway=5))
    manager.set_tokens(TokenSet.from_response(endpoint(None), sent_at=clock()))
    clock.advance(1800)
    manager.get_tokens(timeout=TIMEOUT)
    clock.advance(14.9)  # 5.1 s left: FRESH by the configured 5 s window
    assert manager.cached_tokens() is not None
    assert manager.rules.refresh.use_interval == 0


def test_the_observed_duration_is_a_value_the_policy_is_given() -> None:
    """The policy stays pure: the duration (and the callers' interval) come in as values,
    bounded by half the lifetime."""
    now = 1_000_000.0
    tokens = TokenSet("a", expires_at=now + 2, obtained_at=now)
    assert RefreshPolicy().refresh_due_at(tokens) == pytest.approx(now + 1.5)
    assert RefreshPolicy(refresh_duration=0.3).refresh_due_at(tokens) == pytest.approx(now + 1.1)
    assert RefreshPolicy(refresh_duration=5.0).refresh_due_at(tokens) == pytest.approx(now + 1.0)
    with pytest.raises(ValueError, match="refresh_duration"):
        RefreshPolicy(refresh_duration=-1)
    # the callers' interval too, added to the duration's headroom, with the same bound
    assert RefreshPolicy(use_interval=0.4).refresh_due_at(tokens) == pytest.approx(now + 1.5)
    both = RefreshPolicy(refresh_duration=0.1, use_interval=0.4)
    assert both.refresh_due_at(tokens) == pytest.approx(now + 2 - 0.3 - 0.5)
    assert RefreshPolicy(use_interval=9.0).refresh_due_at(tokens) == pytest.approx(now + 1.0)
    with pytest.raises(ValueError, match="use_interval"):
        RefreshPolicy(use_interval=-1)


pytestmark_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def forked(target: Callable[[Connection], None]) -> object:
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe()
    child = context.Process(target=target, args=(child_end,), daemon=True)
    child.start()
    child_end.close()
    try:
        assert parent_end.poll(TIMEOUT), "the child did not answer"
        return parent_end.recv()
    finally:
        child.join(TIMEOUT)
        if child.exitcode is None:
            child.kill()
            child.join()


@pytestmark_fork
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_starts_a_host_of_its_own() -> None:
    """The parent's host thread is not in the child: the child's first flight starts a new
    host (another object, another thread), and an async refresher runs on it."""
    clock = ManualClock(1_000_000.0)

    async def endpoint(current: TokenSet | None) -> dict[str, Any]:
        where = f"{os.getpid()}:{threading.get_ident()}"
        return {"access_token": where, "refresh_token": "r", "expires_in": 60}

    manager = TokenManager(FunctionRefresher(endpoint), clock=clock)
    manager.set_tokens(TokenSet("a0", refresh_token="r0", expires_at=clock() - 1))
    in_parent = manager.get_tokens(timeout=TIMEOUT).access_token
    parent_host = host()

    def child(pipe: Connection) -> None:
        manager.set_tokens(TokenSet("a0", refresh_token="r0", expires_at=clock() - 1))
        tokens = manager.get_tokens(timeout=10)
        pipe.send((tokens.access_token, host() is parent_host))

    answer = forked(child)
    assert isinstance(answer, tuple)
    in_child, same_host = answer
    assert not same_host
    assert in_child.split(":")[0] != in_parent.split(":")[0]
