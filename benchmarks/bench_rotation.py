"""Request latency while tokens rotate every second or two, against the same traffic with a
token that never needs refreshing, per integration.

Two reference servers run in their own processes: one issues 2-second access tokens (so a
refresh falls due every 1.5 s and runs in the background while requests go on with the old
token), the other day-long ones. For each library the same steady traffic (threads for the
sync libraries, tasks for the async ones) runs against both, in alternating one-second
segments so that drift in the machine's load hits both alike; every request's latency is
recorded.

    python benchmarks/bench_rotation.py [--seconds 12] [--workers 4]

Goal: p99 with rotation within 1.2x of p99 without, for every library.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import requests
from _support import login, server_process, stats

import freshtoken
import freshtoken.aiohttp
import freshtoken.httpx
import freshtoken.requests

GOAL = 1.2
SEGMENT = 1.0  # seconds


@dataclass
class Latencies:
    seconds: list[float] = field(default_factory=list)
    failures: int = 0

    def quantile(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds) * 1e3

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    @property
    def worst(self) -> float:
        return max(self.seconds) * 1e3


def manager_for(url: str) -> freshtoken.TokenManager:
    manager = freshtoken.TokenManager(
        freshtoken.OAuth2Refresher(
            f"{url}/oauth/token", client_id="demo", client_secret="demo-secret"
        )
    )
    manager.set_tokens(freshtoken.TokenSet.from_response(login(url)))
    return manager


Segment = Callable[[float, Latencies], None]


def sync_segment(workers: int, one: Callable[[], int]) -> Segment:
    def run(seconds: float, into: Latencies) -> None:
        stop = time.monotonic() + seconds

        def worker() -> None:
            while time.monotonic() < stop:
                started = time.perf_counter()
                status = one()
                into.seconds.append(time.perf_counter() - started)
                into.failures += status != 200

        threads = [threading.Thread(target=worker) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return run


def async_segment(
    loop: asyncio.AbstractEventLoop, workers: int, one: Callable[[], Awaitable[int]]
) -> Segment:
    def run(seconds: float, into: Latencies) -> None:
        async def worker(stop: float) -> None:
            while time.monotonic() < stop:
                started = time.perf_counter()
                status = await one()
                into.seconds.append(time.perf_counter() - started)
                into.failures += status != 200

        async def all_workers() -> None:
            stop = time.monotonic() + seconds
            await asyncio.gather(*(worker(stop) for _ in range(workers)))

        loop.run_until_complete(all_workers())

    return run


def alternate(rotating: Segment, steady: Segment, seconds: float) -> tuple[Latencies, Latencies]:
    results = (Latencies(), Latencies())
    rotating(SEGMENT / 2, Latencies())  # warm up both
    steady(SEGMENT / 2, Latencies())
    for index in range(int(seconds / SEGMENT)):
        pair = ((rotating, results[0]), (steady, results[1]))
        for run, into in pair if index % 2 == 0 else reversed(pair):
            run(SEGMENT, into)
    return results


@dataclass
class Row:
    name: str
    rotating: Latencies
    steady: Latencies
    refreshes: int

    @property
    def ratio(self) -> float:
        return self.rotating.p99 / self.steady.p99


def bench_httpx_sync(urls: tuple[str, str], seconds: float, workers: int) -> tuple[Any, Any]:
    clients = [
        httpx.Client(auth=freshtoken.httpx.TokenAuth(manager_for(url), origins=[url]))
        for url in urls
    ]

    def one(client: httpx.Client, url: str) -> Callable[[], int]:
        return lambda: client.get(f"{url}/api/me").status_code

    segments = [
        sync_segment(workers, one(client, url)) for client, url in zip(clients, urls, strict=True)
    ]
    try:
        return alternate(segments[0], segments[1], seconds)
    finally:
        for client in clients:
            client.close()


def bench_requests(urls: tuple[str, str], seconds: float, workers: int) -> tuple[Any, Any]:
    sessions = []
    for url in urls:
        session = requests.Session()
        session.auth = freshtoken.requests.TokenAuth(manager_for(url), origins=[url])
        sessions.append(session)

    def one(session: requests.Session, url: str) -> Callable[[], int]:
        return lambda: session.get(f"{url}/api/me").status_code

    segments = [
        sync_segment(workers, one(session, url))
        for session, url in zip(sessions, urls, strict=True)
    ]
    try:
        return alternate(segments[0], segments[1], seconds)
    finally:
        for session in sessions:
            session.close()


def bench_httpx_async(urls: tuple[str, str], seconds: float, workers: int) -> tuple[Any, Any]:
    loop = asyncio.new_event_loop()
    clients = [
        httpx.AsyncClient(auth=freshtoken.httpx.TokenAuth(manager_for(url), origins=[url]))
        for url in urls
    ]

    def one(client: httpx.AsyncClient, url: str) -> Callable[[], Awaitable[int]]:
        async def get() -> int:
            return (await client.get(f"{url}/api/me")).status_code

        return get

    segments = [
        async_segment(loop, workers * 2, one(client, url))
        for client, url in zip(clients, urls, strict=True)
    ]
    try:
        return alternate(segments[0], segments[1], seconds)
    finally:
        for client in clients:
            loop.run_until_complete(client.aclose())
        loop.close()


def bench_aiohttp(urls: tuple[str, str], seconds: float, workers: int) -> tuple[Any, Any]:
    loop = asyncio.new_event_loop()

    async def sessions() -> list[aiohttp.ClientSession]:
        return [
            aiohttp.ClientSession(
                middlewares=(freshtoken.aiohttp.TokenMiddleware(manager_for(url), origins=[url]),)
            )
            for url in urls
        ]

    made = loop.run_until_complete(sessions())

    def one(session: aiohttp.ClientSession, url: str) -> Callable[[], Awaitable[int]]:
        async def get() -> int:
            async with session.get(f"{url}/api/me") as response:
                await response.read()
                return response.status

        return get

    segments = [
        async_segment(loop, workers * 2, one(session, url))
        for session, url in zip(made, urls, strict=True)
    ]
    try:
        return alternate(segments[0], segments[1], seconds)
    finally:
        for session in made:
            loop.run_until_complete(session.close())
        loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="per side and library")
    parser.add_argument("--workers", type=int, default=4, help="threads (tasks: twice as many)")
    args = parser.parse_args(argv)
    benches = {
        "httpx sync": bench_httpx_sync,
        "httpx async": bench_httpx_async,
        "requests": bench_requests,
        "aiohttp": bench_aiohttp,
    }
    rows = []
    with (
        server_process("--access-ttl", "2") as rotating,
        server_process("--access-ttl", "86400") as steady,
    ):
        for name, bench in benches.items():
            before = stats(rotating)["refreshes"]
            with_rotation, without = bench((rotating, steady), args.seconds, args.workers)
            refreshes = stats(rotating)["refreshes"] - before
            rows.append(Row(name, with_rotation, without, refreshes))
        reuse = stats(rotating)["reuse_detections"]
    print(
        f"steady traffic, {args.seconds:g} s per side in alternating {SEGMENT:g} s segments; "
        f"{args.workers} threads or {args.workers * 2} tasks; 2 s tokens vs day-long ones"
    )
    print(
        f"{'library':<12} {'refreshes':>9} {'rotating p50/p99/max ms':>26} "
        f"{'steady p50/p99/max ms':>24} {'p99 ratio':>9} {'failed':>6}  ok"
    )
    ok = reuse == 0
    for row in rows:
        good = row.ratio <= GOAL and row.rotating.failures == 0
        ok &= good
        rot, st = row.rotating, row.steady
        print(
            f"{row.name:<12} {row.refreshes:>9} "
            f"{rot.p50:>8.2f}/{rot.p99:>6.2f}/{rot.worst:>7.1f}   "
            f"{st.p50:>8.2f}/{st.p99:>6.2f}/{st.worst:>7.1f} "
            f"{row.ratio:>9.2f} {rot.failures:>6}  {'yes' if good else 'NO'}"
        )
    print(f"reuse detections at the rotating server: {reuse} (expected 0)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
