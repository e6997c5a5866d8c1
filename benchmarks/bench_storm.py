"""The storm of issue 19: 200 concurrent requests on a token the client learnt late.

    python benchmarks/bench_storm.py [--requests 200] [--rounds 3] [--ttl 2] [--late 1]
                                     [--hog] [--baseline SRC]

The reference server issues tokens that live ``--ttl`` seconds. The client learns its token
``--late`` seconds after the server issued it (as when tokens come from a store or a slow
network), so it believes the token lives that much longer than it does. The storm starts as
the server expires it: the client still holds it fresh, and every first attempt is rejected.
Then ``--requests`` concurrent GETs go out on one client per integration (httpx async tasks,
httpx sync threads, requests threads, aiohttp tasks; each library's default pool), each
storm in a fresh process. Reported per integration: the 401s that reached callers (goal 0),
errors raised, the 401s the server sent, the refreshes it did, and how long the storm took.

``--hog`` loads every core with a busy process for the whole run (the "under load" case).
``--baseline SRC`` runs every storm a second time with the freshtoken package found in SRC
(an older checkout's ``src``, e.g. ``git worktree add --detach ../baseline 82b2fee``), side by
side in the same run, same server and same load, alternating which side goes first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _support import login, server_process, stats

HERE = Path(__file__).resolve().parent
CURRENT_SRC = HERE.parent / "src"
INTEGRATIONS = ("httpx-async", "httpx-sync", "requests", "aiohttp")


# -- one storm, in a child process (so that each side imports its own freshtoken) ------------


def late_manager(url: str, ttl: float, late: float) -> tuple[Any, float]:
    """A manager holding a token learnt ``late`` seconds after the server issued it; and the
    time (perf_counter) at which the server expires it."""
    import freshtoken

    refresher = freshtoken.OAuth2Refresher(
        url + "/oauth/token", client_id="demo", client_secret="demo-secret"
    )
    manager = freshtoken.TokenManager(refresher)
    sent, sent_perf = time.time(), time.perf_counter()
    answer = login(url)
    received_perf = time.perf_counter()
    assert abs(float(answer["expires_in"]) - ttl) < 0.01, "start the server with --access-ttl"
    manager.set_tokens(
        freshtoken.TokenSet(
            answer["access_token"],
            refresh_token=answer["refresh_token"],
            obtained_at=sent + late,
            expires_at=sent + late + ttl,
        )
    )
    # The server issued the token between sent_perf and received_perf: it has expired it for
    # sure a little after received_perf + ttl. The client refreshes it only from
    # sent + late + ttl * 0.75 (its window is a quarter of the lifetime).
    if received_perf - sent_perf > late - ttl * 0.25 - 0.1:
        raise SystemExit("the login took too long for the storm to start on a fresh token")
    return manager, received_perf + ttl + 0.02


def storm(integration: str, url: str, n: int, ttl: float, late: float) -> dict[str, Any]:
    manager, expired_at = late_manager(url, ttl, late)
    before = stats(url)
    runner = {
        "httpx-async": _httpx_async,
        "httpx-sync": _httpx_sync,
        "requests": _requests,
        "aiohttp": _aiohttp,
    }[integration]
    delay = expired_at - time.perf_counter()
    if delay > 0:
        time.sleep(delay)  # a benchmark's schedule, not a test's synchronisation
    started = time.perf_counter()
    outcomes = runner(manager, url + "/api/me", n)
    duration = time.perf_counter() - started
    after = stats(url)
    return {
        "final_401": sum(1 for outcome in outcomes if outcome == 401),
        "ok": sum(1 for outcome in outcomes if outcome == 200),
        "errors": sum(1 for outcome in outcomes if isinstance(outcome, str)),
        "served_401": after["unauthorized_401"] - before["unauthorized_401"],
        "refreshes": after["refreshes"] - before["refreshes"],
        "seconds": duration,
    }


Outcome = int | str  # a status, or the name of what was raised


def _httpx_async(manager: Any, url: str, n: int) -> list[Outcome]:
    import httpx

    from freshtoken.httpx import TokenAuth

    async def main() -> list[Outcome]:
        async with httpx.AsyncClient(auth=TokenAuth(manager), timeout=60.0) as client:

            async def one() -> Outcome:
                try:
                    return (await client.get(url)).status_code
                except Exception as error:  # noqa: BLE001 - counted, by name
                    return type(error).__name__

            return list(await asyncio.gather(*(one() for _ in range(n))))

    return asyncio.run(main())


def _aiohttp(manager: Any, url: str, n: int) -> list[Outcome]:
    import aiohttp

    from freshtoken.aiohttp import TokenMiddleware

    async def main() -> list[Outcome]:
        timeout = aiohttp.ClientTimeout(total=60.0)
        async with aiohttp.ClientSession(
            middlewares=(TokenMiddleware(manager),), timeout=timeout
        ) as session:

            async def one() -> Outcome:
                try:
                    async with session.get(url) as response:
                        await response.read()
                        return response.status
                except Exception as error:  # noqa: BLE001 - counted, by name
                    return type(error).__name__

            return list(await asyncio.gather(*(one() for _ in range(n))))

    return asyncio.run(main())


def _threads(n: int, one: Callable[[], Outcome]) -> list[Outcome]:
    barrier = threading.Barrier(n)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            outcome = one()
        except Exception as error:  # noqa: BLE001 - counted, by name
            outcome = type(error).__name__
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=run) for _ in range(n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return outcomes


def _httpx_sync(manager: Any, url: str, n: int) -> list[Outcome]:
    import httpx

    from freshtoken.httpx import TokenAuth

    with httpx.Client(auth=TokenAuth(manager), timeout=60.0) as client:
        return _threads(n, lambda: client.get(url).status_code)


def _requests(manager: Any, url: str, n: int) -> list[Outcome]:
    import requests

    from freshtoken.requests import TokenAuth

    with requests.Session() as session:
        session.auth = TokenAuth(manager)
        return _threads(n, lambda: session.get(url, timeout=60).status_code)


# -- the parent: server, load, sides, rounds ---------------------------------------------------


@contextlib.contextmanager
def cpu_hogs(enabled: bool) -> Iterator[int]:
    """One busy process per core while the storms run (none unless ``enabled``)."""
    if not enabled:
        yield 0
        return
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield len(hogs)
    finally:
        for hog in hogs:
            hog.terminate()
        for hog in hogs:
            hog.wait(10)


def run_side(
    src: Path, integration: str, url: str, args: argparse.Namespace
) -> dict[str, Any] | str:
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), str(HERE)]))
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        integration,
        "--url",
        url,
        "--requests",
        str(args.requests),
        "--ttl",
        str(args.ttl),
        "--late",
        str(args.late),
    ]
    done = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"failed: {last}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ttl", type=float, default=2.0, help="access token lifetime, s")
    parser.add_argument("--late", type=float, default=1.0, help="how late the client learns it")
    parser.add_argument("--hog", action="store_true", help="load every core with a busy loop")
    parser.add_argument("--baseline", type=Path, help="an older checkout's src directory")
    parser.add_argument("--only", choices=INTEGRATIONS, action="append", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=INTEGRATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(storm(args.child, args.url, args.requests, args.ttl, args.late)))
        return
    sides = {"current": CURRENT_SRC}
    if args.baseline is not None:
        if not (args.baseline / "freshtoken" / "__init__.py").is_file():
            raise SystemExit(f"{args.baseline} has no freshtoken package (give its src)")
        sides["baseline"] = args.baseline.resolve()
    integrations = args.only or INTEGRATIONS
    results: dict[tuple[str, str], list[dict[str, Any] | str]] = {}
    ttl = f"{args.ttl:g}"
    with server_process("--access-ttl", ttl) as url, cpu_hogs(args.hog) as hogs:
        print(
            f"{args.requests} concurrent GETs per storm on one client, {ttl} s tokens learnt "
            f"{args.late:g} s late; {args.rounds} rounds; "
            f"{'CPU hogs: ' + str(hogs) if hogs else 'no hog'}; "
            f"load average {os.getloadavg()[0]:.1f} at the start"
        )
        for index in range(args.rounds):
            order = list(sides.items())
            if index % 2:
                order.reverse()
            for integration in integrations:
                for name, src in order:
                    results.setdefault((integration, name), []).append(
                        run_side(src, integration, url, args)
                    )
    report(results, integrations, list(sides), args.requests)


def report(
    results: dict[tuple[str, str], list[dict[str, Any] | str]],
    integrations: tuple[str, ...] | list[str],
    sides: list[str],
    n: int,
) -> None:
    print(
        f"{'integration':<13}{'side':<10}{'final 401s per round':>24}{'errors':>8}"
        f"{'401s served':>13}{'refreshes':>11}{'median s':>10}"
    )
    for integration in integrations:
        for side in sides:
            runs = results[(integration, side)]
            done = [run for run in runs if isinstance(run, dict)]
            failed = [run for run in runs if isinstance(run, str)]
            finals = " ".join(f"{run['final_401']}/{n}" for run in done) or "-"
            seconds = statistics.median(run["seconds"] for run in done) if done else 0.0
            print(
                f"{integration:<13}{side:<10}{finals:>24}"
                f"{sum(run['errors'] for run in done):>8}"
                f"{sum(run['served_401'] for run in done):>13}"
                f"{sum(run['refreshes'] for run in done):>11}{seconds:>10.2f}"
            )
            for failure in failed:
                print(f"    {failure}")


if __name__ == "__main__":
    main()
