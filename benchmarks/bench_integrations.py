"""Overhead of each integration: requests/s through freshtoken versus a static header.

For httpx (sync and async), requests and aiohttp, the same library sends the same requests
to the reference server twice over: once with a fixed ``Authorization`` header, once through
freshtoken's auth (token fresh, so the measured cost is the per-request path: origin check,
manager lookup, header, response check). Short batches alternate between the two (and which
goes first) so that drift in the machine's load hits both alike; the totals are compared.
The server runs in its own process, so that it does not share a GIL with the client being
measured, and the client's own CPU time per request is reported next to the throughput.

    python benchmarks/bench_integrations.py [--batch 100] [--batches 30] [--concurrency 8]

Target: ratio >= 0.95 for every integration.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio.from_thread
import httpx
import requests
from _support import server_process

import freshtoken
import freshtoken.aiohttp
import freshtoken.httpx
import freshtoken.requests

TARGET = 0.95


@dataclass
class Row:
    name: str
    static: Totals
    auth: Totals

    @property
    def ratio(self) -> float:
        return self.static.seconds / self.auth.seconds

    @property
    def extra_cpu_us(self) -> float:
        """Client CPU per request added by freshtoken, in microseconds."""
        return (self.auth.cpu - self.static.cpu) / self.auth.requests * 1e6


@dataclass
class Totals:
    requests: int = 0
    seconds: float = 0.0
    cpu: float = 0.0  # this process only: the server runs in another one

    def rps(self) -> float:
        return self.requests / self.seconds


def make_manager(url: str) -> freshtoken.TokenManager:
    token_url = f"{url}/oauth/token"
    manager = freshtoken.TokenManager(
        freshtoken.OAuth2Refresher(token_url, client_id="demo", client_secret="demo-secret")
    )
    manager.set_tokens(
        freshtoken.password_login(
            token_url,
            username="demo",
            password="demo",
            client_id="demo",
            client_secret="demo-secret",
        )
    )
    return manager


Batch = Callable[[int], None]


def interleave(name: str, static: Batch, auth: Batch, plan: Plan) -> Row:
    """Short batches, alternating static and auth (and which goes first), summed: drift in
    the machine's load then hits both sides alike."""
    static(plan.batch)  # warm up connections, caches and code paths
    auth(plan.batch)
    totals = {static: Totals(), auth: Totals()}
    for index in range(plan.batches):
        for batch in (static, auth) if index % 2 == 0 else (auth, static):
            wall, cpu = time.perf_counter(), time.process_time()
            batch(plan.batch)
            spent = totals[batch]
            spent.seconds += time.perf_counter() - wall
            spent.cpu += time.process_time() - cpu
            spent.requests += plan.batch
    return Row(name, totals[static], totals[auth])


class AsyncSide:
    """One side of an async comparison: a client made on first use, on the loop that uses it."""

    def __init__(self, make: Callable[[], Any], one: Callable[[Any], Awaitable[None]]) -> None:
        self.make, self.one = make, one
        self.client: Any = None

    async def batch(self, n: int, concurrency: int) -> None:
        if self.client is None:
            self.client = self.make()
        await _workers(concurrency, n, lambda: self.one(self.client))

    async def close(self) -> None:
        client, self.client = self.client, None
        if isinstance(client, httpx.AsyncClient):
            await client.aclose()
        elif isinstance(client, aiohttp.ClientSession):
            await client.close()


def interleave_async(name: str, static: AsyncSide, auth: AsyncSide, plan: Plan) -> Row:
    # Each side's client lives on its own loop; batches run as blocking calls into it.
    with (
        anyio.from_thread.start_blocking_portal("asyncio") as on_static,
        anyio.from_thread.start_blocking_portal("asyncio") as on_auth,
    ):
        try:
            return interleave(
                name,
                lambda n: on_static.call(static.batch, n, plan.concurrency),
                lambda n: on_auth.call(auth.batch, n, plan.concurrency),
                plan,
            )
        finally:
            on_static.call(static.close)
            on_auth.call(auth.close)


@dataclass
class Plan:
    batch: int
    batches: int
    concurrency: int


def bench_httpx_sync(url: str, manager: freshtoken.TokenManager, plan: Plan) -> Row:
    header = {"Authorization": manager.get_tokens().authorization}
    auth = freshtoken.httpx.TokenAuth(manager, origins=[url])
    with (
        httpx.Client(base_url=url, headers=header) as plain,
        httpx.Client(base_url=url, auth=auth) as authed,
    ):

        def loop(client: httpx.Client) -> Batch:
            def run(n: int) -> None:
                for _ in range(n):
                    client.get("/api/me").raise_for_status()

            return run

        return interleave("httpx sync", loop(plain), loop(authed), plan)


def bench_requests(url: str, manager: freshtoken.TokenManager, plan: Plan) -> Row:
    with requests.Session() as plain, requests.Session() as authed:
        plain.headers["Authorization"] = manager.get_tokens().authorization
        authed.auth = freshtoken.requests.TokenAuth(manager, origins=[url])

        def loop(session: requests.Session) -> Batch:
            def run(n: int) -> None:
                for _ in range(n):
                    session.get(f"{url}/api/me").raise_for_status()

            return run

        return interleave("requests", loop(plain), loop(authed), plan)


async def _workers(concurrency: int, n: int, one: Callable[[], Awaitable[None]]) -> None:
    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    share, extra = divmod(n, concurrency)
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(concurrency)))


def bench_httpx_async(url: str, manager: freshtoken.TokenManager, plan: Plan) -> Row:
    header = {"Authorization": manager.get_tokens().authorization}
    auth = freshtoken.httpx.TokenAuth(manager, origins=[url])

    async def one(client: httpx.AsyncClient) -> None:
        (await client.get("/api/me")).raise_for_status()

    static = AsyncSide(lambda: httpx.AsyncClient(base_url=url, headers=header), one)
    authed = AsyncSide(lambda: httpx.AsyncClient(base_url=url, auth=auth), one)
    return interleave_async("httpx async", static, authed, plan)


def bench_aiohttp(url: str, manager: freshtoken.TokenManager, plan: Plan) -> Row:
    header = {"Authorization": manager.get_tokens().authorization}
    middleware = freshtoken.aiohttp.TokenMiddleware(manager, origins=[url])

    async def one(session: aiohttp.ClientSession) -> None:
        async with session.get(f"{url}/api/me") as response:
            response.raise_for_status()
            await response.read()

    static = AsyncSide(lambda: aiohttp.ClientSession(headers=header), one)
    authed = AsyncSide(lambda: aiohttp.ClientSession(middlewares=(middleware,)), one)
    return interleave_async("aiohttp", static, authed, plan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=100, help="requests per batch")
    parser.add_argument("--batches", type=int, default=30, help="batches per side")
    parser.add_argument("--concurrency", type=int, default=8, help="async workers")
    args = parser.parse_args(argv)
    plan = Plan(args.batch, args.batches, args.concurrency)
    with server_process("--access-ttl", "86400") as url:
        manager = make_manager(url)
        rows = [
            bench_httpx_sync(url, manager, plan),
            bench_httpx_async(url, manager, plan),
            bench_requests(url, manager, plan),
            bench_aiohttp(url, manager, plan),
        ]
        refreshes = manager.stats.snapshot()["refreshes"]
    total = plan.batch * plan.batches
    print(
        f"GET /api/me, {total} requests per side in {plan.batches} alternating batches; "
        f"async: {plan.concurrency} workers; server in its own process"
    )
    print(
        f"{'integration':<12} {'static req/s':>13} {'freshtoken req/s':>17} {'ratio':>7} "
        f"{'client CPU us/req':>18} {'added':>6}  ok"
    )
    for row in rows:
        ok = "yes" if row.ratio >= TARGET else "NO"
        print(
            f"{row.name:<12} {row.static.rps():>13.0f} {row.auth.rps():>17.0f} "
            f"{row.ratio:>7.3f} {row.static.cpu / row.static.requests * 1e6:>18.0f} "
            f"{row.extra_cpu_us:>+6.0f}  {ok}"
        )
    print(f"refreshes during the run: {refreshes} (expected 0: the token stays fresh)")
    return 0 if all(row.ratio >= TARGET for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
