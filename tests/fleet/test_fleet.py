"""Fleet proofs: worker processes share one RedisStore against the reference server (rotation
and reuse detection on). Workers are released together by a Redis barrier."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
from _fleet import Fleet, failures, total
from redis_fixture import RedisServer

from freshtoken import TokenSet, system_clock
from freshtoken.server import ReferenceServer
from freshtoken.stores.redis import RedisStore
from freshtoken.testing import ServerFactory

pytestmark = pytest.mark.redis


@pytest.fixture
def fleet_key(request: pytest.FixtureRequest) -> str:
    return f"freshtoken:{request.node.name}"


def seed(redis_server: RedisServer, key: str, tokens: TokenSet) -> None:
    store = RedisStore(redis_server.url, key)
    try:
        store.save(tokens, expected_generation=None)
    finally:
        store.close()


@pytest.fixture
def fleet_factory(redis_server: RedisServer, fleet_key: str) -> Iterator[list[Fleet]]:
    fleets: list[Fleet] = []
    yield fleets
    for fleet in fleets:
        fleet.close()


def test_fleet_storm_refreshes_once(
    redis_server: RedisServer,
    oauth_server: ReferenceServer,
    fleet_key: str,
    fleet_factory: list[Fleet],
) -> None:
    """8 processes x 100 async tasks on an expired token: 1 refresh, no reuse, no failure."""
    login = TokenSet.from_response(oauth_server.login())
    seed(redis_server, fleet_key, dataclasses.replace(login, expires_at=time.time() - 1))
    fleet = Fleet(
        redis_server,
        fleet_key,
        token_url=oauth_server.token_url,
        api=f"{oauth_server.url}/api/me",
        tasks=100,
        requests=1,
    )
    fleet_factory.append(fleet)
    fleet.spawn(8)
    fleet.go()
    reports = fleet.results()
    stats = oauth_server.stats()
    print(
        f"\nstorm: {len(reports)} processes, {total(reports, '200')} requests OK, "
        f"{failures(reports)} failed, {stats['refreshes']} refresh(es) at the server, "
        f"{stats['reuse_detections']} reuse detections"
    )
    assert len(reports) == 8
    assert total(reports, "200") == 800
    assert failures(reports) == 0
    assert stats["refreshes"] == 1
    assert stats["reuse_detections"] == 0
    assert sum(report["stats"]["refreshes"] for report in reports) == 1


@pytest.mark.slow
def test_fleet_steady_run_refreshes_once_per_expiry(
    redis_server: RedisServer,
    oauth_server_factory: ServerFactory,
    fleet_key: str,
    fleet_factory: list[Fleet],
) -> None:
    """8 processes, 1 s access tokens, 20 s: one refresh per token lifetime, no reuse, no
    failure, and a handful of Redis commands per refresh rather than per request."""
    server = oauth_server_factory(access_ttl=1, clock=system_clock)
    seed(redis_server, fleet_key, TokenSet.from_response(server.login()))
    seconds = 20.0
    fleet = Fleet(
        redis_server,
        fleet_key,
        token_url=server.token_url,
        api=f"{server.url}/api/me",
        tasks=4,
        seconds=seconds,
        connections=4,
    )
    fleet_factory.append(fleet)
    fleet.spawn(8)
    server.reset_stats()
    before = redis_server.commands_processed()
    fleet.go()
    reports = fleet.results()
    commands = redis_server.commands_processed() - before - 1  # minus the INFO call
    stats = server.stats()
    requests = total(reports, "200") + failures(reports)
    # A 1 s token is refreshed when a quarter of its life is left (window_fraction=0.25).
    lifetimes = seconds / 0.75
    print(
        f"\nsteady: {requests} requests in {seconds:g} s by 8 processes, "
        f"{failures(reports)} failed; {stats['refreshes']} refreshes for ~{lifetimes:.1f} token "
        f"lifetimes ({stats['refreshes'] / lifetimes:.2f} refreshes per expiry); "
        f"{stats['reuse_detections']} reuse detections; {commands} Redis commands "
        f"({commands / max(requests, 1):.4f} per request, "
        f"{commands / max(stats['refreshes'], 1):.1f} per refresh)"
    )
    assert failures(reports) == 0, [(r["statuses"], r["stats"]) for r in reports]
    assert stats["reuse_detections"] == 0
    assert stats["grace_replays"] == 0
    assert stats["refreshes"] <= lifetimes + 2  # one per lifetime, whatever the fleet size
    assert commands / requests < 1.0
