"""A refresh survives whatever its callers do, and no wait is unbounded.

Against the reference server over real TCP, with rotation and reuse detection on (no grace):
a refresh token presented twice would revoke the session, so "zero reuse, the session still
works" is the proof that no rotated refresh token was ever lost.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

from freshtoken import (
    ClientCredentials,
    FunctionRefresher,
    ManualClock,
    OAuth2Refresher,
    RefreshFailed,
    RetryPolicy,
    SessionExpired,
    TokenManager,
    TokenSet,
)
from freshtoken.server import ReferenceServer
from freshtoken.testing import ServerFactory

FAST_RETRY = RetryPolicy(attempts=3, initial=0.001, maximum=0.01)


def logged_in(server: ReferenceServer, **options: Any) -> TokenManager:
    options.setdefault("retry", FAST_RETRY)
    manager = TokenManager(
        OAuth2Refresher(server.token_url, client_id="demo", client_secret="demo-secret"),
        clock=options.pop("clock", server.clock),
        **options,
    )
    manager.set_tokens(TokenSet.from_response(server.login(), sent_at=server.clock()))
    return manager


def works(server: ReferenceServer, tokens: TokenSet) -> bool:
    headers = {"Authorization": tokens.authorization}
    return httpx.get(f"{server.api_url}/me", headers=headers).status_code == 200


def assert_session_intact(server: ReferenceServer, manager: TokenManager) -> None:
    assert manager.wait_idle(30)
    stats = server.stats()
    assert stats["reuse_detections"] == 0, "a rotated refresh token was presented twice"
    assert stats["family_revocations"] == 0
    assert works(server, manager.get_tokens())


# -- cancellation at random points ----------------------------------------------------------


@pytest.mark.anyio
async def test_callers_cancelled_at_random_points_never_cost_the_session(
    oauth_server_factory: ServerFactory,
) -> None:
    """Tasks that time out or are cancelled at random moments while refreshes are in flight
    (asyncio and trio): every refresh still lands, no refresh token is reused."""
    server = oauth_server_factory(reuse_grace=0)
    server.set_latency(0.02)
    manager = logged_in(server)
    rng = random.Random(9)
    for _ in range(12):
        server.advance(301)  # expired: every caller needs the refresh

        async def impatient(patience: float) -> None:
            with anyio.move_on_after(patience):
                await manager.aget_tokens()

        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(impatient, rng.uniform(0.0, 0.04))
            await anyio.sleep(rng.uniform(0.0, 0.03))
            if rng.random() < 0.5:
                group.cancel_scope.cancel()  # everybody at once, mid-refresh
        await anyio.to_thread.run_sync(manager.wait_idle, 10)
    assert server.stats()["rotations"] == 12
    await anyio.to_thread.run_sync(assert_session_intact, server, manager)


def test_asyncio_wait_for_and_task_cancel_on_the_caller_that_started_the_refresh(
    oauth_server_factory: ServerFactory,
) -> None:
    """The issue's worst case: asyncio.wait_for around a leader, task.cancel() on another."""
    server = oauth_server_factory(reuse_grace=0)
    server.set_latency(0.2)
    manager = logged_in(server)

    async def main() -> None:
        server.advance(301)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(manager.aget_tokens(), 0.05)
        await asyncio.to_thread(manager.wait_idle, 10)
        server.advance(301)
        task = asyncio.create_task(manager.aget_tokens())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert_session_intact(server, manager)
    assert server.stats()["rotations"] == 2


def test_a_refresh_outlives_the_event_loop_that_started_it(
    oauth_server_factory: ServerFactory,
) -> None:
    """asyncio.run() returns (its loop closes) while the refresh is still in flight: the
    answer is saved all the same, and the next loop gets the new tokens."""
    server = oauth_server_factory(reuse_grace=0)
    server.set_latency(0.2)
    manager = logged_in(server)
    before = manager.get_tokens()
    server.advance(301)

    async def leave_early() -> None:
        with anyio.move_on_after(0.02):
            await manager.aget_tokens()

    asyncio.run(leave_early())
    assert manager.wait_idle(10)
    after = asyncio.run(manager.aget_tokens())
    assert after.access_token != before.access_token
    assert_session_intact(server, manager)


def test_threads_that_give_up_waiting_leave_the_refresh_running(
    oauth_server_factory: ServerFactory,
) -> None:
    """get_tokens(timeout=...) raises RefreshFailed('refresh_timeout'); the refresh lands."""
    server = oauth_server_factory(reuse_grace=0)
    server.set_latency(0.3)
    manager = logged_in(server)
    server.advance(301)
    with pytest.raises(RefreshFailed) as raised:
        manager.get_tokens(timeout=0.05)
    assert raised.value.error == "refresh_timeout"
    assert manager.wait_idle(10)
    assert_session_intact(server, manager)
    assert server.stats()["rotations"] == 1


@pytest.mark.anyio
async def test_a_callers_deadline_is_honoured_while_the_refresh_goes_on(
    oauth_server_factory: ServerFactory,
) -> None:
    """move_on_after(0.2) around aget_tokens returns after 0.2 s, not when a 1.5 s refresh
    ends."""
    server = oauth_server_factory(reuse_grace=0)
    server.set_latency(1.5)
    manager = logged_in(server)
    server.advance(301)
    started = time.monotonic()
    with anyio.move_on_after(0.2) as scope:
        await manager.aget_tokens()
    waited = time.monotonic() - started
    assert scope.cancelled_caught
    assert waited < 1.0, f"waited {waited:.2f} s for a refresh it had given up on"
    await anyio.to_thread.run_sync(assert_session_intact, server, manager)


def test_the_sync_api_inside_a_running_loop_does_not_hang_on_that_loops_refresh() -> None:
    """A sync get_tokens() on the loop's own thread, while a task of that loop started the
    refresh: the refresh runs in its own thread, so the sync call returns when it lands."""
    gate = threading.Event()
    entered = threading.Event()
    clock = ManualClock(1_000_000.0)

    def endpoint(current: TokenSet | None) -> dict[str, Any]:
        entered.set()
        assert gate.wait(10)
        return {"access_token": "a1", "refresh_token": "r1", "expires_in": 60}

    manager = TokenManager(FunctionRefresher(endpoint), clock=clock)
    manager.set_tokens(TokenSet("a0", refresh_token="r0", expires_at=clock() - 1))

    async def main() -> tuple[str, str]:
        task = asyncio.create_task(manager.aget_tokens())
        await asyncio.sleep(0)  # the task starts the refresh and waits
        assert entered.wait(10)
        threading.Timer(0.05, gate.set).start()
        blocking = manager.get_tokens()  # on the loop's thread: blocks it until the refresh
        return blocking.access_token, (await task).access_token

    assert asyncio.run(main()) == ("a1", "a1")


# -- every wait is bounded --------------------------------------------------------------------


@pytest.fixture
def drip_server() -> Iterator[Callable[[str], str]]:
    """A raw TCP server that answers one byte every 0.2 s: in the headers ("headers") or in
    the body ("body"). Returns the token URL of a fresh listener per call."""
    sockets: list[socket.socket] = []
    stop = threading.Event()

    def serve(listener: socket.socket, where: str) -> None:
        body = b'{"access_token": "a1", "expires_in": 60}'
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
        head += "Content-Type: application/json\r\n\r\n"
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                dripped = head.encode() + body
                split = 0 if where == "headers" else len(head)
                connection.sendall(dripped[:split])
                for byte in dripped[split:]:
                    if stop.wait(0.2):
                        return
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        break

    def make(where: str) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        sockets.append(listener)
        threading.Thread(target=serve, args=(listener, where), daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}/token"

    yield make
    stop.set()
    for listener in sockets:
        listener.close()


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_dripping_token_endpoint_fails_the_attempt_at_its_deadline(
    drip_server: Callable[[str], str], where: str
) -> None:
    """One byte every 0.2 s (httpx's per-read timeout never fires): the attempt ends at its
    overall deadline with RefreshFailed, instead of holding the refresh for minutes."""
    url = drip_server(where)
    manager = TokenManager(
        OAuth2Refresher(url, client_id="demo", client_secret="demo-secret"),
        retry=RetryPolicy(attempts=1, timeout=1.0),
    )
    manager.set_tokens(TokenSet("a0", refresh_token="r0", expires_at=time.time() - 1))
    started = time.monotonic()
    with pytest.raises(RefreshFailed) as raised:
        manager.get_tokens()
    took = time.monotonic() - started
    assert raised.value.error == "timeout"
    assert raised.value.answer_lost  # it may have been processed: retried at once next time
    assert took < 5.0, f"the attempt took {took:.1f} s for a 1 s deadline"


def test_a_retry_after_of_an_hour_fails_promptly_and_is_honoured(
    oauth_server_factory: ServerFactory,
) -> None:
    """429 with Retry-After: 3600 and RetryPolicy.maximum 10 s: no hour-long sleep; callers
    get RefreshFailed(retry_after=3600) at once, and the server is not asked again before the
    hour has passed."""
    server = oauth_server_factory(reuse_grace=0, refresh_idle_ttl=None)
    manager = logged_in(server, retry=RetryPolicy(attempts=3, initial=0.001, maximum=10))
    server.advance(301)
    server.inject("status_429", 1, retry_after=3600)
    started = time.monotonic()
    with pytest.raises(RefreshFailed) as raised:
        manager.get_tokens()
    assert time.monotonic() - started < 5.0
    assert raised.value.retry_after == 3600
    requests_so_far = server.stats()["token_requests_by_grant"]["refresh_token"]
    server.advance(3599)
    for _ in range(5):
        with pytest.raises(RefreshFailed):
            manager.get_tokens()
    assert server.stats()["token_requests_by_grant"]["refresh_token"] == requests_so_far
    server.advance(2)
    assert works(server, manager.get_tokens())


def test_a_wall_clock_stepped_back_does_not_prolong_a_failure_backoff(
    oauth_server: ReferenceServer,
) -> None:
    """The backoff after a failure runs on the monotonic clock: after the wall clock is set
    back an hour, the next attempt still comes once the (short) backoff has passed."""
    client_clock = ManualClock(oauth_server.clock())
    manager = logged_in(oauth_server, clock=client_clock)
    client_clock.advance(7200)  # the token expired long ago, for the client
    oauth_server.inject("status_503", FAST_RETRY.attempts)
    with pytest.raises(RefreshFailed):
        manager.get_tokens()
    client_clock.jump(-3600)  # NTP steps the clock back an hour: still expired
    client_clock.advance(1)  # well past the short backoff, on the monotonic clock
    assert works(oauth_server, manager.get_tokens())


# -- the token endpoint is never hammered ---------------------------------------------------


def test_an_api_that_rejects_every_token_gets_one_refresh_not_one_per_request(
    oauth_server: ReferenceServer,
) -> None:
    """Every request is refreshed-and-retried at most once, and once a freshly issued token
    is rejected too, the 401 goes back to the caller without another refresh (the first
    request's second 401 included: it rejects the current token, so the manager passes it)."""
    manager = logged_in(oauth_server)
    oauth_server.fail_api(10_000)
    import freshtoken.httpx

    with httpx.Client(auth=freshtoken.httpx.TokenAuth(manager)) as client:
        statuses = [client.get(f"{oauth_server.api_url}/me").status_code for _ in range(50)]
    assert statuses == [401] * 50
    assert oauth_server.stats()["refreshes"] == 1
    assert manager.stats.snapshot()["passed_rejections"] == 50
    oauth_server.advance(1.0)  # the backoff has passed: one more try, then back off longer
    with httpx.Client(auth=freshtoken.httpx.TokenAuth(manager)) as client:
        assert {client.get(f"{oauth_server.api_url}/me").status_code for _ in range(20)} == {401}
    assert oauth_server.stats()["refreshes"] == 2


@pytest.mark.parametrize("setting", [{"access_ttl": 0.001}, {"refresh_in": 0.0}])
def test_tokens_due_at_once_are_refreshed_once_per_min_interval(
    oauth_server_factory: ServerFactory, setting: dict[str, Any]
) -> None:
    """``expires_in`` ~0 or ``refresh_in: 0``: the floor allows one refresh per min_interval."""
    server = oauth_server_factory(reuse_grace=0, **setting)
    manager = logged_in(server)
    for _ in range(100):  # 100 requests in 0.5 s, every token due or expired at once
        server.advance(0.005)
        manager.get_tokens()
        manager.wait_idle(10)
    assert server.stats()["refreshes"] == 1
    server.advance(0.6)  # past the floor
    for _ in range(100):
        server.advance(0.005)
        manager.get_tokens()
        manager.wait_idle(10)
    assert server.stats()["refreshes"] == 2
    assert server.stats()["reuse_detections"] == 0


def test_client_credentials_refused_is_not_asked_again_on_every_call(
    oauth_server: ReferenceServer,
) -> None:
    """invalid_client: one token request and one hook call, not one per API call; asked
    again once the backoff has passed."""
    expired: list[BaseException] = []
    manager = TokenManager(
        ClientCredentials(oauth_server.token_url, client_id="demo", client_secret="wrong"),
        clock=oauth_server.clock,
        on_session_expired=expired.append,
    )
    for _ in range(50):
        with pytest.raises(SessionExpired) as raised:
            manager.get_tokens()
        assert raised.value.error == "invalid_client"
    grants = oauth_server.stats()["token_requests_by_grant"]
    assert grants["client_credentials"] == 1
    assert len(expired) == 1
    oauth_server.advance(1.0)
    with pytest.raises(SessionExpired):
        manager.get_tokens()
    assert oauth_server.stats()["token_requests_by_grant"]["client_credentials"] == 2
    assert len(expired) == 2
