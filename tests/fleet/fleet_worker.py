"""One process of a test fleet: ``python fleet_worker.py '<json config>'``.

It builds a TokenManager over a RedisStore and an OAuth2Refresher, announces itself on the
Redis list ``<key>:ready``, waits for its start signal on ``<key>:go`` (a barrier, no sleeps),
runs ``tasks`` async tasks that call the API (``requests`` each, or until ``seconds`` pass),
and prints one JSON line: counts of answers and failures, and the manager's counters.

With ``announce_refresh`` it pushes its pid to ``<key>:inside`` when its refresher starts, so
a chaos test can kill it while the refresh is in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from typing import Any

import httpx
import redis

import freshtoken
from freshtoken.httpx import TokenAuth
from freshtoken.stores.redis import RedisStore


class AnnouncingRefresher:
    """Tells the test "I am inside the refresh" before refreshing."""

    def __init__(self, inner: freshtoken.OAuth2Refresher, client: redis.Redis, key: str) -> None:
        self.inner = inner
        self.client = client
        self.key = key

    @property
    def can_acquire(self) -> bool:
        return self.inner.can_acquire

    def refresh(
        self, current: freshtoken.TokenSet | None, clock: freshtoken.Clock
    ) -> freshtoken.TokenSet:
        self.client.rpush(self.key, os.getpid())
        return self.inner.refresh(current, clock)

    async def arefresh(
        self, current: freshtoken.TokenSet | None, clock: freshtoken.Clock
    ) -> freshtoken.TokenSet:
        self.client.rpush(self.key, os.getpid())
        return await self.inner.arefresh(current, clock)


async def run(config: dict[str, Any], manager: freshtoken.TokenManager) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    deadline = None if config.get("seconds") is None else time.monotonic() + config["seconds"]
    auth = TokenAuth(manager)
    limits = httpx.Limits(max_connections=config.get("connections", 20))
    async with httpx.AsyncClient(auth=auth, limits=limits, timeout=30.0) as client:

        async def task() -> None:
            done = 0
            while True:
                if deadline is None and done >= config.get("requests", 1):
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    return
                done += 1
                try:
                    response = await client.get(config["api"])
                    statuses[str(response.status_code)] += 1
                except freshtoken.AuthError as error:
                    statuses[type(error).__name__] += 1
                except httpx.HTTPError as error:
                    statuses[type(error).__name__] += 1

        await asyncio.gather(*(task() for _ in range(config["tasks"])))
    return dict(statuses)


def main() -> None:
    config = json.loads(sys.argv[1])
    key = config["key"]
    control = redis.Redis.from_url(config["redis"])
    refresher: Any = freshtoken.OAuth2Refresher(
        config["token_url"], client_id="demo", client_secret="demo-secret"
    )
    if config.get("announce_refresh"):
        refresher = AnnouncingRefresher(refresher, control, f"{key}:inside")
    store = RedisStore(config["redis"], key, lease=config.get("lease", 10.0))
    manager = freshtoken.TokenManager(refresher, store, lock_timeout=config.get("lock_timeout", 30))
    control.rpush(f"{key}:ready", os.getpid())
    if control.blpop([f"{key}:go"], timeout=60) is None:
        raise SystemExit("no start signal within 60 s")
    started = time.monotonic()
    statuses = asyncio.run(run(config, manager))
    elapsed = time.monotonic() - started
    print(
        json.dumps(
            {"pid": os.getpid(), "statuses": statuses, "seconds": elapsed}
            | {"stats": manager.stats.snapshot()}
        ),
        flush=True,
    )
    store.close()
    control.close()


if __name__ == "__main__":
    main()
