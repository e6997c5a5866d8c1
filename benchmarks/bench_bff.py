"""The BFF at scale: memory per idle session, session starts per second, proxied calls per
second (hot sessions, and 100,000 sessions in turn), and two worker processes on one Redis
(refreshes per session expiry).

    python benchmarks/bench_bff.py [--sessions 100000] [--seconds 5] [--concurrency 32]
    python benchmarks/bench_bff.py --floors [--rounds 3] [--seconds 5]

--floors measures the BFF against bare Python proxies (benchmarks/_proxy_floors.py) in the
same run, and prints each one's rate and its ratio to the fastest.

Everything runs on loopback: a redis-server, the reference server and a trivial upstream API
in processes of their own, the BFF in this process (served by uvicorn from a thread), and
the load from another process, so that load and BFF never compete for one GIL: wrk (Debian's
package) when installed, else an httpx client, which caps what it can measure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
from _support import server_process, stats

from freshtoken import TokenSet
from freshtoken.bff import BFF, MemorySessionStore, RedisSessionStore, SessionStore
from freshtoken.bff._serving import ServedApp

SECRET = "the benchmark's passphrase, shared by every worker"
HERE = Path(__file__).resolve()


# -- helpers run in subprocesses (this file, invoked with --upstream or --load) ----------------


def run_upstream(port: int) -> None:
    """A trivial API that answers 200 and counts the distinct access tokens it is shown."""
    import uvicorn

    seen: set[str] = set()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/__tokens":
            body = json.dumps(sorted(seen)).encode()
        else:
            authorization = dict(scope["headers"]).get(b"authorization", b"")
            seen.add(hashlib.sha256(authorization).hexdigest())
            body = b'{"items":[]}'
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def run_load(urls: list[str], ids_file: str, seconds: float, concurrency: int) -> None:
    """GET /api/items with session cookies taken in turn from ``ids_file``, round-robin over
    ``urls``, for ``seconds``; prints one JSON line of counts."""
    ids = Path(ids_file).read_text().split()

    async def main() -> dict[str, Any]:
        counts: dict[str, int] = {}
        position = 0
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:

            async def worker(index: int) -> None:
                nonlocal position
                while time.monotonic() < deadline:
                    session = ids[position % len(ids)]
                    url = urls[position % len(urls)]
                    position += 1
                    response = await client.get(
                        f"{url}/api/items",
                        headers={"X-CSRF": "1", "Cookie": f"__Host-bff={session}"},
                    )
                    key = str(response.status_code)
                    counts[key] = counts.get(key, 0) + 1

            started = time.monotonic()
            await asyncio.gather(*(worker(index) for index in range(concurrency)))
            elapsed = time.monotonic() - started
        return {"counts": counts, "elapsed": elapsed}

    print(json.dumps(asyncio.run(main())), flush=True)


# -- the benchmark ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    directory = tempfile.mkdtemp(prefix="bench-bff-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory],
        stdout=subprocess.DEVNULL,
    )
    probe = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:  # start-up: poll PING with a deadline
        try:
            probe.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        probe.close()
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def upstream() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE), "--upstream", str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:  # a subprocess's readiness: poll its port
        try:
            httpx.get(url + "/__tokens", timeout=1.0)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)


def load(urls: list[str], ids: list[str], seconds: float, concurrency: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False) as handle:
        handle.write("\n".join(ids))
    try:
        done = subprocess.run(
            [
                sys.executable,
                str(HERE),
                "--load",
                ",".join(urls),
                "--ids",
                handle.name,
                "--seconds",
                str(seconds),
                "--concurrency",
                str(concurrency),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(handle.name)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def password_tokens(url: str, user: str = "demo") -> TokenSet:
    form = {
        "grant_type": "password",
        "username": user,
        "password": user,
        "client_id": "demo",
        "client_secret": "demo-secret",
        "scope": "read write",
    }
    answer = httpx.post(url + "/oauth/token", data=form)
    answer.raise_for_status()
    return TokenSet.from_response(answer.json())


def unique(tokens: TokenSet, n: int) -> TokenSet:
    """The same shapes and sizes, strings of their own (as real sessions would have)."""
    return TokenSet(
        access_token=f"{tokens.access_token[:-12]}{n:012d}",
        refresh_token=f"{(tokens.refresh_token or 'r' * 43)[:-12]}{n:012d}",
        expires_at=tokens.expires_at,
        obtained_at=tokens.obtained_at,
        scope=tokens.scope,
    )


def make_bff(issuer: str, api: str, sessions: SessionStore, client_id: str = "demo") -> BFF:
    return BFF(
        issuer=issuer,
        client_id=client_id,
        client_secret="demo-secret",
        secret_key=SECRET,
        routes={"/api/": f"{api}/"},
        sessions=sessions,
    )


async def start_sessions(bff: BFF, tokens: TokenSet, count: int, batch: int = 200) -> list[str]:
    claims = {"sub": "demo", "name": "Demo User", "email": "demo@example.com"}
    ids: list[str] = []
    for start in range(0, count, batch):
        made = await asyncio.gather(
            *(
                bff.start_session(unique(tokens, n), claims)
                for n in range(start, min(count, start + batch))
            )
        )
        ids.extend(session_id for session_id, _ in made)
    return ids


def memory_per_session(issuer: str, api: str, tokens: TokenSet, count: int) -> None:
    """tracemalloc over ``count`` sessions started in a MemorySessionStore."""
    bff = make_bff(issuer, api, MemorySessionStore(max_sessions=count))
    asyncio.run(bff.ready())
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    ids = asyncio.run(start_sessions(bff, tokens, count))
    elapsed = time.perf_counter() - started
    gc.collect()
    total = tracemalloc.get_traced_memory()[0] - before
    warm = len(bff._managers)
    bff._managers.clear()  # managers and credentials of idle sessions are dropped
    gc.collect()
    idle = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    size = len(tokens.access_token) + len(tokens.refresh_token or "")
    print(f"memory sessions: {count:,} started in {elapsed:.1f} s ({count / elapsed:,.0f}/s)")
    print(
        f"  idle: {idle / count:,.0f} B per session ({idle / 2**20:,.0f} MiB for {count:,}; "
        f"tokens {size} B of it)"
    )
    print(
        f"  with the {warm:,} most recent sessions' managers warm: {total / 2**20:,.0f} MiB "
        f"({(total - idle) / max(warm, 1):,.0f} B per warm manager)"
    )
    assert len(ids) == count


def redis_per_session(
    issuer: str, api: str, redis_url: str, tokens: TokenSet, count: int
) -> tuple[BFF, ServedApp, list[str]]:
    raw = redis.Redis.from_url(redis_url)
    before = int(raw.info("memory")["used_memory"])
    bff = make_bff(issuer, api, RedisSessionStore.from_url(redis_url, prefix="bench:"))
    served = ServedApp(bff).start()
    started = time.perf_counter()
    ids = served.call(start_sessions(bff, tokens, count), timeout=3600)
    elapsed = time.perf_counter() - started
    used = int(raw.info("memory")["used_memory"]) - before
    raw.close()
    print(f"redis sessions: {count:,} started in {elapsed:.1f} s ({count / elapsed:,.0f}/s)")
    print(f"  Redis memory: {used / count:,.0f} B per session ({used / 2**20:,.0f} MiB)")
    return bff, served, ids


WRK_SCRIPT = """
local ids = {}
local position = 0
init = function(args)
  for line in io.lines(args[1]) do ids[#ids + 1] = line end
  position = math.random(#ids)
end
request = function()
  position = position % #ids + 1
  local headers = {["X-CSRF"] = "1", ["Cookie"] = "__Host-bff=" .. ids[position]}
  return wrk.format("GET", "/api/items", headers)
end
"""


def wrk_load(url: str, ids: list[str], seconds: float, concurrency: int) -> dict[str, Any]:
    """wrk (Debian's package) from two threads: a load generator that is not the bottleneck."""
    with tempfile.TemporaryDirectory() as directory:
        script, id_file = Path(directory, "load.lua"), Path(directory, "ids")
        script.write_text(WRK_SCRIPT)
        id_file.write_text("\n".join(ids))
        done = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{concurrency}",
                f"-d{seconds:g}s",
                "-s",
                str(script),
                url,
                "--",
                str(id_file),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    total, non_2xx = 0, 0
    for line in done.stdout.splitlines():
        words = line.split()
        if "requests in" in line:
            total = int(words[0])
        elif line.strip().startswith("Non-2xx"):
            non_2xx = int(words[-1])
    return {"counts": {"200": total - non_2xx, "other": non_2xx}, "elapsed": seconds}


def proxied(name: str, url: str, ids: list[str], seconds: float, concurrency: int) -> float:
    if shutil.which("wrk"):
        result = wrk_load(url, ids, seconds, concurrency)
        if not result["counts"]["other"]:
            del result["counts"]["other"]
    else:
        result = load([url], ids, seconds, concurrency)
    ok = result["counts"].get("200", 0)
    rate = float(ok / result["elapsed"])
    others = {k: v for k, v in result["counts"].items() if k != "200"}
    print(f"  {name}: {rate:,.0f} calls/s" + (f"  (non-200: {others})" if others else ""))
    return rate


def login_throughput(issuer: str, api: str, count: int) -> None:
    """Full browser logins over HTTP: /bff/login, the provider's form, /bff/callback."""
    from freshtoken.server._browser import submit_form

    bff = make_bff(issuer, api, MemorySessionStore(), client_id="bench-bff")
    with ServedApp(bff) as served, httpx.Client(timeout=30.0) as http:
        started = time.perf_counter()
        for _ in range(count):
            start = http.get(f"{served.url}/bff/login")
            cookie = start.headers["set-cookie"].split(";", 1)[0]
            page = http.get(start.headers["location"])
            action, form = submit_form(page, {"username": "demo", "password": "demo"}, "approve")
            callback = http.post(action, data=form).headers["location"]
            done = http.get(callback, headers={"Cookie": cookie})
            assert done.status_code == 302, done.text
        elapsed = time.perf_counter() - started
    print(
        f"browser logins over HTTP (BFF + provider's form + code exchange): "
        f"{count / elapsed:,.0f}/s, {1000 * elapsed / count:.1f} ms each"
    )


def two_workers(redis_url: str, seconds: float, sessions: int) -> None:
    """Two ``freshtoken bff`` processes on one Redis, access tokens living 2 s."""
    directory = Path(tempfile.mkdtemp(prefix="bench-bff-workers-"))
    with server_process("--access-ttl", "2") as issuer, upstream() as api:
        creator = make_bff(issuer, api, RedisSessionStore.from_url(redis_url, prefix="fleet:"))
        config = {
            "issuer": issuer,
            "client_id": "demo",
            "client_secret": "demo-secret",
            "secret_key": SECRET,
            "leeway": 0.5,
            "routes": {"/api/": f"{api}/"},
            "sessions": {"kind": "redis", "url": redis_url, "prefix": "fleet:"},
        }
        workers, urls = [], []
        for _ in range(2):
            port = free_port()
            path = directory / f"{port}.json"
            path.write_text(json.dumps({**config, "server": {"port": port}}))
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "freshtoken.cli", "bff", "--config", str(path)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        try:
            for url in urls:
                deadline = time.monotonic() + 20
                while True:  # a subprocess's readiness: poll its port
                    try:
                        httpx.get(url + "/bff/user", headers={"X-CSRF": "1"}, timeout=1.0)
                        break
                    except httpx.TransportError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
            logins: set[str] = set()
            with ServedApp(creator) as served:
                ids = []
                for n in range(sessions):  # each session its own login: its own refresh token
                    tokens = password_tokens(issuer, "alice" if n % 2 else "demo")
                    logins.add(hashlib.sha256(tokens.authorization.encode()).hexdigest())
                    session_id, _ = served.call(creator.start_session(tokens))
                    ids.append(session_id)
            before = stats(issuer)
            result = load(urls, ids, seconds, 16)
            after = stats(issuer)
            seen = set(httpx.get(api + "/__tokens").json())
        finally:
            for worker in workers:
                worker.terminate()
                worker.wait(10)
    refreshes = after["refreshes"] - before["refreshes"]
    # Every access token the API saw that no login gave: one per session expiry (a refresh
    # landing in the last moments, its token not yet used, would count as a refresh only).
    expiries = len(seen - logins)
    reuse = after["reuse_detections"] - before["reuse_detections"]
    print(
        f"2 workers on one Redis, {sessions} sessions, {seconds:g} s, access tokens of 2 s: "
        f"{sum(result['counts'].values()):,} calls {result['counts']}"
    )
    print(
        f"  refreshes {refreshes}, new access tokens the API saw {expiries}: "
        f"{refreshes / max(expiries, 1):.2f} refreshes per session expiry; reuse detections {reuse}"
        f"\n  ({refreshes / sessions:.1f} refreshes per session in {seconds:g} s; a 2 s token is "
        f"refreshed 1.5 s into its life, so at most {seconds / 1.5:.1f}; refreshes landing as "
        "the load stops give tokens nobody used yet)"
    )


FLOORS = HERE.parent / "_proxy_floors.py"


@contextlib.contextmanager
def floor_process(*args: str) -> Iterator[tuple[str, int]]:
    """One of _proxy_floors.py's servers in a process of its own; yields its URL and pid once
    it answers on its port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(FLOORS), args[0], str(port), *args[1:]],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # a subprocess's readiness: poll its port
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{args[0]} did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(10)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def floors(seconds: float, rounds: int, concurrency: int, sessions: int) -> None:
    """The BFF against bare Python proxies, each in its own process, measured in turn in the
    same run (rounds interleaved, so that a busy moment of the machine falls on all alike);
    the median of each kind's rounds, and its ratio to the fastest bare proxy. Also the CPU
    time each proxy process spent per call: on a machine others load too, calls per second
    follow the scheduler, CPU per call much less."""
    from _proxy_floors import KINDS, server_settings

    if not shutil.which("wrk"):
        raise SystemExit("--floors needs wrk (apt-get install wrk)")
    kinds = [kind for kind in KINDS if kind != "asgi-httpx2" or _importable("httpx2")]
    directory = Path(tempfile.mkdtemp(prefix="bench-bff-floors-"))
    ids_file = directory / "ids"
    settings = os.environ.get("BENCH_SERVER") or json.dumps(server_settings())
    print(
        f"proxied calls per second, one worker each, {concurrency} connections, "
        f"{rounds} rounds of {seconds:g} s (median), server {settings}; the BFF with "
        f"{sessions} hot sessions (memory store)"
    )
    with contextlib.ExitStack() as stack:
        api, _ = stack.enter_context(floor_process("api", "-"))
        urls, pids = {}, {}
        for kind in kinds:
            extra = [str(ids_file), str(sessions)] if kind == "bff" else []
            urls[kind], pids[kind] = stack.enter_context(floor_process(kind, api, *extra))
        deadline = time.monotonic() + 60
        while not ids_file.exists() or not ids_file.read_text():  # the BFF's sessions
            if time.monotonic() > deadline:
                raise SystemExit("the BFF did not start its sessions")
            time.sleep(0.05)
        ids = ids_file.read_text().split()
        rates: dict[str, list[float]] = {kind: [] for kind in kinds}
        costs: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(rounds):
            for kind in kinds:
                before = cpu_seconds(pids[kind])
                result = wrk_load(urls[kind], ids, seconds, concurrency)
                spent = cpu_seconds(pids[kind]) - before
                if result["counts"]["other"]:
                    raise SystemExit(f"{kind}: {result['counts']['other']} answers not 200")
                calls = result["counts"]["200"]
                rates[kind].append(calls / seconds)
                costs[kind].append(1e6 * spent / max(calls, 1))
    shutil.rmtree(directory, ignore_errors=True)

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    rate = {kind: median(found) for kind, found in rates.items()}
    cost = {kind: median(found) for kind, found in costs.items()}
    fastest = max(found for kind, found in rate.items() if kind != "bff")
    cheapest = min(found for kind, found in cost.items() if kind != "bff")
    header = f"{'calls/s':>8}  {'x fastest':>9}  {'CPU/call':>9}  {'x cheapest':>10}"
    print(f"  {'':13} {header}  rounds")
    for kind in kinds:
        rounds_text = ", ".join(f"{found:,.0f}" for found in rates[kind])
        print(
            f"  {kind:13} {rate[kind]:8,.0f}  {rate[kind] / fastest:9.2f}  "
            f"{cost[kind]:7.0f} us  {cost[kind] / cheapest:10.2f}  {rounds_text}"
        )
    print(
        f"  the BFF: {rate['bff'] / fastest:.2f}x the fastest bare proxy's calls/s, "
        f"{cost['bff'] / cheapest:.2f}x the cheapest one's CPU per call"
    )


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--floors", action="store_true", help="the BFF against bare proxies, side by side"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream is not None:
        run_upstream(args.upstream)
        return
    if args.load is not None:
        run_load(args.load.split(","), args.ids, args.seconds, args.concurrency)
        return

    if args.floors:
        floors(args.seconds, args.rounds, args.concurrency, min(args.sessions, 100))
        return

    from freshtoken.bff._demo import bff_server_config
    from freshtoken.server import ReferenceServer

    with redis_server() as redis_url, server_process("--access-ttl", "3600") as issuer:
        with upstream() as api:
            tokens = password_tokens(issuer)
            memory_per_session(issuer, api, tokens, args.sessions)
            print("proxied calls (BFF in this process, load from another, trivial upstream):")
            proxied("upstream directly (no BFF)", api, ["-"], args.seconds, args.concurrency)
            memory_bff = make_bff(issuer, api, MemorySessionStore(max_sessions=args.sessions))
            with ServedApp(memory_bff) as served:
                ids = served.call(start_sessions(memory_bff, tokens, args.sessions), timeout=600)
                proxied(
                    "memory, 100 hot sessions",
                    served.url,
                    ids[:100],
                    args.seconds,
                    args.concurrency,
                )
                proxied(
                    f"memory, {args.sessions:,} sessions in turn",
                    served.url,
                    ids,
                    args.seconds,
                    args.concurrency,
                )
            del memory_bff, ids
            gc.collect()
            _, served, ids = redis_per_session(issuer, api, redis_url, tokens, args.sessions)
            try:
                proxied(
                    "redis, 100 hot sessions", served.url, ids[:100], args.seconds, args.concurrency
                )
                proxied(
                    f"redis, {args.sessions:,} sessions in turn",
                    served.url,
                    ids,
                    args.seconds,
                    args.concurrency,
                )
            finally:
                served.stop()
        provider = ReferenceServer(bff_server_config(clients=_bench_clients()))
        with provider, upstream() as api:
            login_throughput(provider.url, api, args.logins)
    with redis_server() as redis_url:
        two_workers(redis_url, max(args.seconds, 8.0), 50)


def _bench_clients() -> Any:
    from freshtoken.server._config import ALL_GRANTS, DEMO_CLIENTS, Client

    callback = ("http://127.0.0.1/bff/callback",)
    return (*DEMO_CLIENTS, Client("bench-bff", "demo-secret", ALL_GRANTS, redirect_uris=callback))


if __name__ == "__main__":
    main()
