"""Storms on an expired token: how many refreshes, and what the slowest caller pays.

    python benchmarks/bench_expiry_storm.py [--tasks 1000] [--threads 64] [--rounds 3]

For each round: log in, mark the token expired on the client's side, then let 1,000 asyncio
tasks (one httpx.AsyncClient, or one aiohttp session) or 64 threads (one httpx.Client) request
``/api/me`` at once. (httpx's async pool is slow with 1,000 queued requests whether or not
freshtoken is in the way, hence the aiohttp row.)
Prints the refreshes the server saw (must be 1 per storm) and the slowest request's latency,
next to the same storm sent with a static Authorization header (no refresh, no freshtoken)
and one bare refresh round trip, all in the same run: what the storm costs beyond the
client's own queueing should be about one refresh. The server is in its own process
(``benchmarks/_support.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
from _support import login, server_process, stats

import freshtoken
from freshtoken.aiohttp import TokenMiddleware
from freshtoken.httpx import TokenAuth


def expired_manager(url: str) -> freshtoken.TokenManager:
    refresher = freshtoken.OAuth2Refresher(
        url + "/oauth/token", client_id="demo", client_secret="demo-secret"
    )
    assert refresher.ssl_context  # built before the storm, as in a long-running app
    manager = freshtoken.TokenManager(refresher)
    tokens = freshtoken.TokenSet.from_response(login(url))
    manager.set_tokens(
        freshtoken.TokenSet(
            tokens.access_token,
            refresh_token=tokens.refresh_token,
            expires_at=time.time() - 1,
            obtained_at=time.time() - 301,
        )
    )
    return manager


def bare_refresh_seconds(url: str, rounds: int = 5) -> float:
    """The median time of one refresh request on a warm refresher (connection, TLS context)."""
    refresher = freshtoken.OAuth2Refresher(
        url + "/oauth/token", client_id="demo", client_secret="demo-secret"
    )
    timings = []
    for _ in range(rounds + 1):
        current = freshtoken.TokenSet.from_response(login(url))
        start = time.perf_counter()
        refresher.refresh(current, freshtoken.system_clock)
        timings.append(time.perf_counter() - start)
    refresher.close()
    return statistics.median(timings[1:])  # the first one builds the client


async def async_storm(url: str, tasks: int, static: bool) -> tuple[int, float]:
    manager = expired_manager(url)
    before = stats(url)["refreshes"]
    limits = httpx.Limits(max_connections=100)
    options = _static(manager) if static else {"auth": TokenAuth(manager)}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0, **options) as client:

        async def one() -> float:
            start = time.perf_counter()
            response = await client.get("/api/me")
            response.raise_for_status()
            return time.perf_counter() - start

        latencies = await asyncio.gather(*(one() for _ in range(tasks)))
    return stats(url)["refreshes"] - before, max(latencies)


async def aiohttp_storm(url: str, tasks: int, static: bool) -> tuple[int, float]:
    manager = expired_manager(url)
    before = stats(url)["refreshes"]
    headers = _static(manager)["headers"] if static else {}
    middlewares = () if static else (TokenMiddleware(manager),)
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(
        url, headers=headers, middlewares=middlewares, connector=connector
    ) as session:

        async def one() -> float:
            start = time.perf_counter()
            async with session.get("/api/me") as response:
                response.raise_for_status()
                await response.read()
            return time.perf_counter() - start

        latencies = await asyncio.gather(*(one() for _ in range(tasks)))
    return stats(url)["refreshes"] - before, max(latencies)


def thread_storm(url: str, threads: int, static: bool) -> tuple[int, float]:
    manager = expired_manager(url)
    before = stats(url)["refreshes"]
    latencies: list[float] = []
    barrier = threading.Barrier(threads)
    options = _static(manager) if static else {"auth": TokenAuth(manager)}
    limits = httpx.Limits(max_connections=threads)
    with httpx.Client(base_url=url, limits=limits, timeout=60.0, **options) as client:

        def one() -> None:
            barrier.wait()
            start = time.perf_counter()
            client.get("/api/me").raise_for_status()
            latencies.append(time.perf_counter() - start)

        workers = [threading.Thread(target=one) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    return stats(url)["refreshes"] - before, max(latencies)


def _static(manager: freshtoken.TokenManager) -> dict[str, Any]:
    """The baseline: the token the storm would get, as a plain header (refreshed first)."""
    return {"headers": {"Authorization": manager.refresh().authorization}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with server_process() as url:
        bare = bare_refresh_seconds(url)
        print(f"one refresh round trip, warm client (median of 5): {bare * 1000:.1f} ms")
        print(
            f"{'storm':<24}{'refreshes':>10}{'slowest ms':>12}{'static ms':>11}"
            f"{'extra ms':>10}{'extra/refresh':>15}"
        )

        def tasks(static: bool) -> tuple[int, float]:
            return asyncio.run(async_storm(url, args.tasks, static))

        def aiohttp_tasks(static: bool) -> tuple[int, float]:
            return asyncio.run(aiohttp_storm(url, args.tasks, static))

        def threads(static: bool) -> tuple[int, float]:
            return thread_storm(url, args.threads, static)

        storms: list[tuple[str, Callable[[bool], tuple[int, float]]]] = [
            (f"{args.tasks} tasks, httpx", tasks),
            (f"{args.tasks} tasks, aiohttp", aiohttp_tasks),
            (f"{args.threads} threads", threads),
        ]
        for _ in range(args.rounds):
            for name, storm in storms:
                _, baseline = storm(True)
                refreshes, slowest = storm(False)
                extra = (slowest - baseline) / bare
                print(
                    f"{name:<24}{refreshes:>10}{slowest * 1000:>12.1f}{baseline * 1000:>11.1f}"
                    f"{(slowest - baseline) * 1000:>10.1f}{extra:>15.1f}"
                )


if __name__ == "__main__":
    main()
