"""The engine's cost and its behaviour in a provider outage, side by side with an older engine.

(a) cost: ``manager.refresh()`` through the library against a bare refresh-token POST on a
    warm ``httpx`` connection to the same reference-server token endpoint, in alternating
    blocks (so that drift in the machine's load hits both alike). Goal: at most 1.2x.
(b) outage: ``--sessions`` credentials (default 2,000) with ``--ttl``-second tokens, each used
    about once a second by async callers that give up after 2 s (a BFF's calls); after a warm
    spell the token endpoint answers 503 (``--modes 503``) or hangs (``hang``) for
    ``--outage`` seconds, then comes back. Measured: peak thread count (goal <= 50), calls
    answered within 2 s during the outage, sessions lost, token requests in the air at once
    after recovery (goal <= the cap, 8), seconds until every session works again, the client's
    CPU per second in the warm spell and in the outage.
(a') ``--transports``: one warm token POST through each client the flight host could use
    (httpx blocking and async, httpcore's pool, aiohttp, the host's own ``http1``), taking
    turns, which is how ``_runtime/http1.py`` was chosen.
(c) ``--baseline SRC`` runs the same scenarios with an older checkout's ``src`` on PYTHONPATH
    (each scenario in a process of its own, one after the other, with a reference server of
    its own), so the numbers are side by side in one run:

    git worktree add --detach /work/wt/baseline-eng 82b2fee
    python benchmarks/bench_engine.py --baseline /work/wt/baseline-eng/src
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _support import login, server_process, stats

CALL_DEADLINE = 2.0  # seconds a caller waits for its token (a BFF's answer budget)
HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


# -- (a) cost ---------------------------------------------------------------------------------


def cost(url: str, rounds: int, block: int) -> dict[str, float]:
    """Median seconds of a refresh through the manager and of a bare POST, interleaved in
    blocks of ``block``; sync (httpx.Client) and async (httpx.AsyncClient) alike."""
    import freshtoken

    refresher = freshtoken.OAuth2Refresher(
        url + "/oauth/token", client_id="demo", client_secret="demo-secret"
    )
    manager = freshtoken.TokenManager(refresher, min_interval=0.0)
    manager.set_tokens(freshtoken.TokenSet.from_response(login(url), sent_at=time.time()))
    bare_refresh = [str(login(url)["refresh_token"])]

    def form() -> dict[str, str]:
        return {
            "grant_type": "refresh_token",
            "refresh_token": bare_refresh[0],
            "client_id": "demo",
            "client_secret": "demo-secret",
        }

    def timed(samples: list[float], call: Any) -> None:
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)

    library: list[float] = []
    bare: list[float] = []
    with httpx.Client() as client:

        def post() -> None:
            answer = client.post(url + "/oauth/token", data=form())
            answer.raise_for_status()
            bare_refresh[0] = answer.json()["refresh_token"]

        for _ in range(3):  # warm both: connections, CA bundle, code paths
            post()
            manager.refresh()
        for _ in range(rounds):
            for _ in range(block):
                timed(bare, post)
            for _ in range(block):
                timed(library, manager.refresh)

    async def async_side() -> tuple[list[float], list[float]]:
        library: list[float] = []
        bare: list[float] = []
        async with httpx.AsyncClient() as client:

            async def post() -> None:
                answer = await client.post(url + "/oauth/token", data=form())
                answer.raise_for_status()
                bare_refresh[0] = answer.json()["refresh_token"]

            for _ in range(3):
                await post()
                await manager.arefresh()
            for _ in range(rounds):
                for _ in range(block):
                    start = time.perf_counter()
                    await post()
                    bare.append(time.perf_counter() - start)
                for _ in range(block):
                    start = time.perf_counter()
                    await manager.arefresh()
                    library.append(time.perf_counter() - start)
        return library, bare

    alibrary, abare = asyncio.run(async_side())
    lib, raw = statistics.median(library), statistics.median(bare)
    alib, araw = statistics.median(alibrary), statistics.median(abare)
    return {
        "sync_library_ms": lib * 1e3,
        "sync_bare_ms": raw * 1e3,
        "sync_ratio": lib / raw,
        "async_library_ms": alib * 1e3,
        "async_bare_ms": araw * 1e3,
        "async_ratio": alib / araw,
        "load_average": os.getloadavg()[0],
    }


# -- (a') the token endpoint's client --------------------------------------------------------


def transports(url: str, rounds: int) -> dict[str, float]:
    """Median microseconds of one warm refresh-token POST and its answer read whole, through
    each client the flight host could use, in turns (one POST each per round, the order
    rotating), so that drift in the machine's load hits all alike: httpx's blocking client
    (the bare baseline of ``cost``), ``httpx.AsyncClient``, httpcore's async pool used
    directly, aiohttp (if installed) and the host's own ``http1`` pool."""
    import json as jsonlib
    from collections.abc import Awaitable, Callable
    from urllib.parse import urlencode

    import httpcore

    from freshtoken._runtime.http1 import Pool

    refresh = [str(login(url)["refresh_token"])]
    token_url = url + "/oauth/token"
    form_type = [(b"content-type", b"application/x-www-form-urlencoded")]

    def form() -> dict[str, str]:
        return {
            "grant_type": "refresh_token",
            "refresh_token": refresh[0],
            "client_id": "demo",
            "client_secret": "demo-secret",
        }

    async def each() -> dict[str, float]:
        sync_client = httpx.Client()
        async_client = httpx.AsyncClient()
        pool = httpcore.AsyncConnectionPool()
        http1 = Pool(httpx.create_ssl_context())
        timeout = httpx.Timeout(10.0)

        async def httpx_sync() -> str:
            return str(sync_client.post(token_url, data=form()).json()["refresh_token"])

        async def httpx_async() -> str:
            answer = await async_client.post(token_url, data=form())
            return str(answer.json()["refresh_token"])

        async def httpcore_async() -> str:
            body = urlencode(form()).encode()
            raw = await pool.request("POST", token_url, headers=form_type, content=body)
            return str(jsonlib.loads(raw.content)["refresh_token"])

        async def host_http1() -> str:
            request = httpx.Request("POST", token_url, data=form())
            _, _, body = await http1.send(request, timeout, 1 << 20)
            return str(jsonlib.loads(body)["refresh_token"])

        clients: dict[str, Callable[[], Awaitable[str]]] = {
            "httpx_sync_us": httpx_sync,
            "httpx_async_us": httpx_async,
            "httpcore_async_us": httpcore_async,
            "host_http1_us": host_http1,
        }
        session = None
        try:
            import aiohttp
        except ImportError:
            print("aiohttp is not installed: its column is left out", file=sys.stderr)
        else:
            session = aiohttp.ClientSession()

            async def aiohttp_post() -> str:
                assert session is not None
                async with session.post(token_url, data=form()) as reply:
                    body = await reply.read()
                return str(jsonlib.loads(body)["refresh_token"])

            clients["aiohttp_us"] = aiohttp_post
        samples: dict[str, list[float]] = {name: [] for name in clients}
        names = list(clients)
        for turn in range(rounds):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                start = time.perf_counter()
                refresh[0] = await clients[name]()
                samples[name].append(time.perf_counter() - start)
        sync_client.close()
        await async_client.aclose()
        await pool.aclose()
        http1.close()
        if session is not None:
            await session.close()
        # The first tenth warms up (connections, code paths).
        return {
            name: statistics.median(times[rounds // 10 :]) * 1e6 for name, times in samples.items()
        }

    result = asyncio.run(each())
    result["load_average"] = os.getloadavg()[0]
    return result


# -- (b) outage ---------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """The process's thread count, sampled (a measurement, not a synchronisation)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.most = threading.active_count()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            self.most = max(self.most, threading.active_count())


async def log_in_all(url: str, count: int) -> list[dict[str, Any]]:
    form = {
        "grant_type": "password",
        "username": "demo",
        "password": "demo",
        "client_id": "demo",
        "client_secret": "demo-secret",
    }
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        semaphore = asyncio.Semaphore(20)

        async def one() -> dict[str, Any]:
            async with semaphore:
                answer = await client.post(url + "/oauth/token", data=form)
                answer.raise_for_status()
                document: dict[str, Any] = answer.json()
                return document

        return await asyncio.gather(*(one() for _ in range(count)))


def fault(url: str, body: dict[str, Any]) -> None:
    httpx.post(url + "/admin/faults", json=body).raise_for_status()


def reset(url: str) -> None:
    httpx.post(url + "/admin/stats/reset").raise_for_status()


async def outage(url: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    sessions, ttl, warm, down = args.sessions, args.ttl, args.warm, args.outage
    import freshtoken

    options: dict[str, Any] = {}
    if "concurrency" in inspect.signature(freshtoken.OAuth2Refresher).parameters:
        options["concurrency"] = 8
    refresher = freshtoken.OAuth2Refresher(
        url + "/oauth/token", client_id="demo", client_secret="demo-secret", **options
    )
    retry = freshtoken.RetryPolicy(timeout=5.0)  # each attempt's deadline, both engines
    documents = await log_in_all(url, sessions)
    managers = []
    for index, document in enumerate(documents):
        manager = freshtoken.TokenManager(refresher, retry=retry)
        # Spread over the lifetime as sessions of a running BFF are (the client believes the
        # token older than it is: it refreshes early, never late).
        age = ttl * 0.7 * index / sessions
        tokens = freshtoken.TokenSet.from_response(document, sent_at=time.time() - age)
        manager.set_tokens(tokens)
        managers.append(manager)
    working = [True] * sessions
    lost: set[int] = set()
    calls = {"ok": 0, "failed": 0, "slow": 0}
    phase = ["warm"]
    latencies: dict[str, list[float]] = {"warm": [], "outage": [], "recovery": []}
    stop = asyncio.Event()

    async def caller(first: int, step: int) -> None:
        mine = list(range(first, sessions, step))
        pause = 1.0 / len(mine)
        while not stop.is_set():
            for index in mine:
                if stop.is_set():
                    return
                start = time.perf_counter()
                try:
                    tokens = await asyncio.wait_for(managers[index].aget_tokens(), CALL_DEADLINE)
                    good = tokens.expires_at is None or tokens.expires_at > time.time()
                except freshtoken.SessionExpired:
                    lost.add(index)
                    good = False
                except (freshtoken.AuthError, TimeoutError):
                    good = False
                took = time.perf_counter() - start
                latencies[phase[0]].append(took)
                if phase[0] == "outage":
                    calls["ok" if good else "failed"] += 1
                    calls["slow"] += took > CALL_DEADLINE + 0.5
                working[index] = good
                await asyncio.sleep(pause)

    sampler = Sampler()
    sampler.start()
    callers = [asyncio.ensure_future(caller(i, 50)) for i in range(50)]
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(warm)
    cpu1, wall1 = time.process_time(), time.monotonic()
    phase[0] = "outage"
    if mode == "503":
        fault(url, {"kind": "status_503", "count": 10_000})
    else:
        # Every token request that arrives during the outage hangs until just after it ends
        # (each engine's attempt deadline, 5 s here, gives up on it first).
        fault(url, {"latency": down + 1.0})
    await asyncio.sleep(down)
    cpu2, wall2 = time.process_time(), time.monotonic()
    phase[0] = "recovery"
    fault(url, {"clear": True, "latency": 0})
    await asyncio.to_thread(reset, url)
    back = time.monotonic()
    recovered = None
    while time.monotonic() - back < 120:
        await asyncio.sleep(0.1)
        if all(working) and not lost:
            recovered = time.monotonic() - back
            break
    after = await asyncio.to_thread(stats, url)
    stop.set()
    await asyncio.gather(*callers)
    sampler.stopped.set()
    during = sorted(latencies["outage"]) or [0.0]
    return {
        "peak_threads": sampler.most,
        "outage_calls": calls["ok"] + calls["failed"],
        "outage_answered_ok": calls["ok"],
        "outage_over_2.5s": calls["slow"],
        "outage_p99_ms": during[int(0.99 * (len(during) - 1))] * 1e3,
        "sessions_lost": len(lost),
        "most_in_air_after": after["most_token_requests_in_flight"],
        "recovered_s": recovered,
        "not_working_at_end": sessions - sum(working),
        "cpu_warm": (cpu1 - cpu0) / (wall1 - wall0),
        "cpu_outage": (cpu2 - cpu1) / (wall2 - wall1),
        "load_average": os.getloadavg()[0],
    }


# -- running each scenario in a process of its own ----------------------------------------------


def worker(args: argparse.Namespace) -> None:
    import logging

    import freshtoken

    logging.getLogger("freshtoken").setLevel(logging.ERROR)  # thousands of failure warnings

    where = str(Path(freshtoken.__file__).resolve().parent.parent)
    # The reference server is this checkout's for every engine (its in-flight gauge).
    os.environ["PYTHONPATH"] = str(SRC)
    flags = ["--access-ttl", str(args.ttl)] if args.scenario not in ("cost", "transports") else []
    with server_process(*flags) as url:
        if args.scenario == "cost":
            result: dict[str, Any] = cost(url, args.rounds, args.block)
        elif args.scenario == "transports":
            result = transports(url, args.rounds * 2)
        else:
            result = asyncio.run(outage(url, args.scenario, args))
    print(json.dumps({"src": where, **result}), flush=True)


def run(src: Path, scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(HERE)])}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", scenario]
    for name in ("sessions", "ttl", "warm", "outage", "rounds", "block"):
        command += [f"--{name}", str(getattr(args, name))]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{scenario} with {src} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def show(scenario: str, engines: dict[str, dict[str, Any]]) -> None:
    names = list(engines)
    keys = [key for key in engines[names[0]] if key != "src"]
    print(f"\n{scenario}")
    print(f"  {'':28}" + "".join(f"{name:>14}" for name in names))
    for key in keys:
        cells = []
        for name in names:
            value = engines[name].get(key)
            cells.append(f"{value:14.3f}" if isinstance(value, float) else f"{value!s:>14}")
        print(f"  {key:28}" + "".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="an older checkout's src directory")
    parser.add_argument("--modes", default="503,hang", help="outage modes: 503, hang")
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--ttl", type=float, default=20.0)
    parser.add_argument("--warm", type=float, default=10.0)
    parser.add_argument("--outage", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--block", type=int, default=2)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument(
        "--transports",
        action="store_true",
        help="only compare the clients a token request could go through (this checkout's)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.scenario = args.worker
        worker(args)
        return
    if args.transports:
        show("transports (one warm token POST, median us)", {"": run(SRC, "transports", args)})
        return
    sources = {"this engine": SRC}
    if args.baseline is not None:
        sources["baseline"] = args.baseline.resolve()
    scenarios = ([] if args.skip_cost else ["cost"]) + [m for m in args.modes.split(",") if m]
    for scenario in scenarios:
        engines = {name: run(src, scenario, args) for name, src in sources.items()}
        show(scenario, engines)
        if "sync_ratio" in engines["this engine"]:
            print("  goal: ratio <= 1.2 (a bare POST on a warm connection is 1.0)")


if __name__ == "__main__":
    main()
