"""Every provider's preset against its emulation: storms make one refresh per expiry, steady
traffic sees no failure, no grant is ever revoked: across threads (requests), tasks (httpx on
asyncio), 4 processes on one file store and 2 on one Redis store."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from behaviour.drivers import Driver, Outcome, make_driver
from redis_fixture import RedisServer
from workers import released_together

import freshtoken
from freshtoken import providers

from .conftest import Bed, BedFactory

WORKER = Path(__file__).with_name("provider_worker.py")
ROOT = Path(__file__).resolve().parents[2]
STORM = 200
STEADY_ROUNDS = 3
STEADY_CALLS = 20
FLEET_CALLS = 10  # per process and provider, all at once


def lifetime(bed: Bed) -> float:
    return bed.server.config.access_ttl


def settings_of(bed: Bed) -> dict[str, Any]:
    """The preset's settings, pointed at the emulation (as a configuration file would)."""
    return dict(bed.provider.settings)


def mixed_storm(drivers: list[Driver], url: str, n: int) -> list[Outcome]:
    """``n`` calls at once, shared among the drivers: threads and tasks on one manager."""
    share = n // len(drivers)
    with ThreadPoolExecutor(len(drivers)) as pool:
        parts = pool.map(lambda driver: driver.storm(url, share), drivers)
        return [outcome for part in parts for outcome in part]


def failed(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not (isinstance(o, tuple) and o[0] == 200)]


@pytest.mark.parametrize("name", providers.NAMES)
def test_storms_and_steady_traffic(bed: BedFactory, name: str) -> None:
    """A 200-call storm on an expired token, half from requests' threads and half from httpx
    tasks on asyncio: 1 refresh. Then rounds of traffic across expiries, each integration in
    turn: 1 refresh each, every call answered 200. No grant revoked, no session ended."""
    emulation = bed(name)
    server = emulation.server
    expired: list[BaseException] = []
    manager = freshtoken.TokenManager(
        emulation.refresher(),
        clock=server.clock,
        retry=freshtoken.RetryPolicy(attempts=3, initial=0.01, maximum=0.05),
        on_session_expired=expired.append,
    )
    manager.set_tokens(emulation.login())
    drivers = [make_driver(kind, manager) for kind in ("httpx-async", "requests")]
    api = f"{server.api_url}/me"
    try:
        server.advance(lifetime(emulation) + 1)
        assert failed(mixed_storm(drivers, api, STORM)) == []
        assert server.stats()["refreshes"] == 1
        for round_ in range(STEADY_ROUNDS):
            server.advance(lifetime(emulation) + 1)
            assert failed(drivers[round_ % 2].storm(api, STEADY_CALLS)) == []
            assert server.stats()["refreshes"] == round_ + 2
    finally:
        for driver in drivers:
            driver.close()
    stats = server.stats()
    assert (stats["reuse_detections"], stats["family_revocations"]) == (0, 0)
    assert expired == []


def seeded(bed: Bed, store: freshtoken.TokenStore) -> None:
    """The login's tokens, expired, in ``store``: every process's first call refreshes."""
    tokens = bed.login()
    store.save(dataclasses.replace(tokens, expires_at=time.time() - 1), expected_generation=None)
    store.close()


def run_fleet(config: dict[str, Any], count: int) -> list[dict[str, dict[str, int]]]:
    """``count`` workers, released together once all are ready; their reports."""
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(config | {"kind": kind})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for kind in (["httpx-async", "requests"] * count)[:count]
    ]
    return released_together(workers)


def fleet_beds(bed: BedFactory) -> dict[str, Bed]:
    """Every provider's emulation. The workers run on the system clock, the servers on a
    ManualClock that stands still: the tokens a refresh gives outlive the test."""
    return {name: bed(name) for name in providers.NAMES}


def check(beds: dict[str, Bed], reports: list[dict[str, dict[str, int]]], calls: int) -> None:
    for name, emulation in beds.items():
        statuses = [report[name] for report in reports]
        assert all(set(s) == {"200"} for s in statuses), (name, statuses)
        assert sum(s["200"] for s in statuses) == calls * len(reports)
        stats = emulation.server.stats()
        assert stats["refreshes"] == 1, (name, stats["refreshes"])
        assert (stats["reuse_detections"], stats["family_revocations"]) == (0, 0), name


def test_four_processes_on_one_file_store(bed: BedFactory, tmp_path: Path) -> None:
    beds = fleet_beds(bed)
    for name, emulation in beds.items():
        seeded(emulation, freshtoken.FileStore(tmp_path / f"{name}.json"))
    config = {
        "store": "file",
        "dir": str(tmp_path),
        "requests": FLEET_CALLS,
        "providers": {
            name: {"settings": settings_of(b), "api": f"{b.server.api_url}/me"}
            for name, b in beds.items()
        },
    }
    check(beds, run_fleet(config, 4), FLEET_CALLS)


@pytest.mark.redis
def test_two_processes_on_one_redis_store(
    bed: BedFactory, shared_redis_server: RedisServer
) -> None:
    beds = fleet_beds(bed)
    key = f"freshtoken:providers:{uuid.uuid4().hex}"
    for name, emulation in beds.items():
        seeded(emulation, freshtoken.RedisStore(shared_redis_server.url, key=f"{key}:{name}"))
    config = {
        "store": "redis",
        "redis": shared_redis_server.url,
        "key": key,
        "requests": FLEET_CALLS,
        "providers": {
            name: {"settings": settings_of(b), "api": f"{b.server.api_url}/me"}
            for name, b in beds.items()
        },
    }
    check(beds, run_fleet(config, 2), FLEET_CALLS)
