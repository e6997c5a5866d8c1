"""Fleet chaos: a lock holder killed mid-refresh, and Redis stopped and restarted mid-run.

Both run against the reference server with rotation and reuse detection on.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from _fleet import Fleet, failures, seed, total
from redis_fixture import RedisServer

from freshtoken import (
    OAuth2Refresher,
    RetryPolicy,
    StoreError,
    TokenManager,
    TokenSet,
    system_clock,
)
from freshtoken.httpx import TokenAuth
from freshtoken.server import ReferenceServer
from freshtoken.stores.redis import RedisStore
from freshtoken.testing import ServerFactory

pytestmark = pytest.mark.redis

LATENCY = 1.5  # seconds the token endpoint takes: long enough to kill a holder inside it
LEASE = 1.0  # the workers' lock lease: how long a dead holder's lock outlives it


@pytest.fixture
def fleet_key(request: pytest.FixtureRequest) -> str:
    return f"freshtoken:{request.node.name}"


@pytest.fixture
def fleets() -> Iterator[list[Fleet]]:
    started: list[Fleet] = []
    yield started
    for fleet in started:
        fleet.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds (process start and kill detection only)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def kill_the_holder_mid_refresh(
    redis_server: RedisServer, server: ReferenceServer, key: str, fleets: list[Fleet]
) -> tuple[Fleet, float]:
    """Start 4 workers on an expired token, SIGKILL the one inside the refresh once its
    request has reached the token endpoint; return the fleet and the takeover time (from the
    kill to the next holder entering its refresh)."""
    login = TokenSet.from_response(server.login())
    seed(redis_server, key, dataclasses.replace(login, expires_at=time.time() - 1))
    server.set_latency(LATENCY)
    server.reset_stats()
    fleet = Fleet(
        redis_server,
        key,
        token_url=server.token_url,
        api=f"{server.url}/api/me",
        tasks=20,
        requests=3,
        lease=LEASE,
        announce_refresh=True,
    )
    fleets.append(fleet)
    fleet.spawn(4)
    fleet.go()
    entered = fleet.redis.blpop([f"{key}:inside"], timeout=30)
    assert entered is not None, "no worker entered the refresh"
    holder = int(entered[1])
    wait_for(
        lambda: server.stats()["token_requests_by_grant"]["refresh_token"] >= 1,
        "the holder's refresh request to reach the token endpoint",
    )
    assert fleet.redis.exists(f"{key}:lock"), "the refresh lock should be held"
    os.kill(holder, signal.SIGKILL)
    killed_at = time.monotonic()
    taken = fleet.redis.blpop([f"{key}:inside"], timeout=30)
    assert taken is not None, "nobody took over the refresh"
    assert int(taken[1]) != holder
    return fleet, time.monotonic() - killed_at


@pytest.mark.slow
def test_a_holder_killed_mid_refresh_is_taken_over_after_its_lease(
    redis_server: RedisServer,
    oauth_server_factory: ServerFactory,
    fleet_key: str,
    fleets: list[Fleet],
) -> None:
    """kill -9 the lock holder while its refresh request is at the server: the lease ends,
    another process takes over, and every surviving request succeeds.

    What the server saw: the dead process's refresh was *processed* (the server rotated the
    refresh token after the process died: nobody was left to save the successor). The process
    that takes over reads the store, finds the old refresh token and presents it. With a reuse
    grace period the server answers with the same successor (a grace replay), and the session
    goes on. Without one, the server must read it as a replay of a used token and revoke the
    family: that is inherent to rotation without grace (the successor existed only in the
    dead process's memory), shown by the next test, not something a client can fix.
    """
    server = oauth_server_factory(reuse_grace=10, clock=system_clock)
    fleet, takeover = kill_the_holder_mid_refresh(redis_server, server, fleet_key, fleets)
    reports = fleet.results()
    stats = server.stats()
    print(
        f"\nkill -9 holder: takeover {takeover:.2f} s after the kill (lease {LEASE:g} s); "
        f"{len(reports)} survivors, {total(reports, '200')} requests OK, "
        f"{failures(reports)} failed; server: {stats['rotations']} rotation, "
        f"{stats['grace_replays']} grace replay, {stats['reuse_detections']} reuse detections"
    )
    assert len(reports) == 3
    assert failures(reports) == 0
    assert total(reports, "200") == 3 * 20 * 3
    assert stats["reuse_detections"] == 0
    assert stats["rotations"] == 1  # the dead process's refresh, processed after it died
    assert stats["grace_replays"] == 1  # the takeover, answered with the same successor
    assert sum(report["stats"]["refreshes"] for report in reports) == 1
    assert takeover < LEASE + 1.0

    # The tokens the fleet now shares work, and their refresh token is the live one.
    store = RedisStore(redis_server.url, fleet_key)
    try:
        stored = store.load()
    finally:
        store.close()
    assert stored is not None
    assert stored.tokens.refresh_token is not None
    headers = {"Authorization": f"Bearer {stored.tokens.access_token}"}
    assert httpx.get(f"{server.api_url}/me", headers=headers).status_code == 200
    server.set_latency(0)
    server.refresh(stored.tokens.refresh_token)
    assert server.stats()["reuse_detections"] == 0
    assert server.stats()["grace_replays"] == 1  # an ordinary rotation, not another replay


@pytest.mark.slow
def test_without_grace_a_holder_killed_mid_refresh_costs_the_session(
    redis_server: RedisServer,
    oauth_server_factory: ServerFactory,
    fleet_key: str,
    fleets: list[Fleet],
) -> None:
    """The same kill against a server without a reuse grace period: the takeover presents the
    refresh token the server retired for the dead process, reuse detection revokes the family,
    and every survivor gets SessionExpired. This is the server's policy (documented here so
    nobody mistakes it for a client bug): only ``reuse_grace`` lets a fleet survive it."""
    server = oauth_server_factory(reuse_grace=0, clock=system_clock)
    fleet, _ = kill_the_holder_mid_refresh(redis_server, server, fleet_key, fleets)
    reports = fleet.results()
    stats = server.stats()
    assert len(reports) == 3
    assert total(reports, "SessionExpired") == 3 * 20 * 3
    assert stats["rotations"] == 1
    assert stats["reuse_detections"] == 1
    assert stats["family_revocations"] == 1
    store = RedisStore(redis_server.url, fleet_key)
    try:
        assert store.load() is None  # the dead session is cleared for the whole fleet
    finally:
        store.close()


def test_redis_down_cached_token_serves_then_a_clear_error_then_recovery(
    redis_server: RedisServer, oauth_server: ReferenceServer, fleet_key: str
) -> None:
    """Redis stops mid-run: the cached token keeps serving while it is valid (even once its
    refresh is due: no refresh is attempted without the store's lock, so no rotation can be
    lost); once it has expired the caller gets a StoreError naming Redis; after Redis comes
    back the same manager refreshes and requests succeed."""
    server = oauth_server
    store = RedisStore(redis_server.url, fleet_key, lease=LEASE, socket_timeout=1.0)
    manager = TokenManager(
        OAuth2Refresher(server.token_url, client_id="demo", client_secret="demo-secret"),
        store,
        clock=server.clock,
        retry=RetryPolicy(initial=0.001, maximum=0.01),
    )
    first = TokenSet.from_response(server.login(), sent_at=server.clock())
    secrets = [first.access_token, first.refresh_token or "-"]
    manager.set_tokens(first)
    try:
        with httpx.Client(base_url=server.url, auth=TokenAuth(manager)) as client:
            assert client.get("/api/me").status_code == 200
            redis_server.stop()

            # Down, token fresh: served from the cache without touching Redis.
            assert all(client.get("/api/me").status_code == 200 for _ in range(20))
            # Down, refresh due (10 s of 300 left): the refresh cannot take the lock, the
            # still-valid token is used meanwhile, and the token endpoint is never called.
            server.advance(290)
            assert client.get("/api/me").status_code == 200
            assert manager.wait_idle(10)
            assert manager.stats.snapshot()["refresh_failures"] >= 1
            assert server.stats()["token_requests_by_grant"]["refresh_token"] == 0

            # Down, token expired: a clear error, naming Redis, with no secret in it.
            server.advance(20)
            for _ in range(2):  # the second one fails fast (throttled), just as clearly
                with pytest.raises(StoreError) as raised:
                    client.get("/api/me")
                message = str(raised.value)
                assert "Redis" in message
                assert "unreachable" in message
                assert f"127.0.0.1:{redis_server.port}" in message
                assert not any(secret in message for secret in secrets)
            assert server.stats()["token_requests_by_grant"]["refresh_token"] == 0

            # Back up: the same manager recovers once the short backoff has passed.
            redis_server.start()
            server.advance(1)
            assert client.get("/api/me").status_code == 200
            assert client.get("/api/me").status_code == 200
        stats = server.stats()
        assert stats["refreshes"] == 1
        assert stats["reuse_detections"] == 0
        stored = store.load()
        assert stored is not None
        assert stored.tokens.access_token == manager.get_tokens().access_token
        assert stored.tokens.access_token != first.access_token
    finally:
        store.close()
