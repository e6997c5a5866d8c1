"""Steady-state requests/s with RedisStore versus MemoryStore, and Redis round trips per 1,000
requests. Starts its own redis-server and reference server on loopback.

    python benchmarks/bench_redis.py [--seconds 5] [--tasks 8]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import redis

import freshtoken
from freshtoken.httpx import TokenAuth
from freshtoken.server import ReferenceServer, ServerConfig
from freshtoken.stores.redis import RedisStore


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
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
            time.sleep(0.01)
    probe.close()
    return process, port


async def measure(manager: freshtoken.TokenManager, url: str, seconds: float, tasks: int) -> int:
    done = 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(auth=TokenAuth(manager)) as client:

        async def task() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                response = await client.get(url)
                response.raise_for_status()
                done += 1

        await asyncio.gather(*(task() for _ in range(tasks)))
    return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        process, port = start_redis(directory)
        admin = redis.Redis(port=port)
        server = ReferenceServer(ServerConfig(access_ttl=60.0)).start()
        try:
            api = f"{server.url}/api/me"
            refresher = freshtoken.OAuth2Refresher(
                server.token_url, client_id="demo", client_secret="demo-secret"
            )
            memory = freshtoken.TokenManager(refresher, freshtoken.MemoryStore())
            memory.set_tokens(freshtoken.TokenSet.from_response(server.login()))
            store = RedisStore(f"redis://127.0.0.1:{port}/0", "freshtoken:bench")
            fleet = freshtoken.TokenManager(refresher, store)
            fleet.set_tokens(freshtoken.TokenSet.from_response(server.login()))
            asyncio.run(measure(memory, api, 0.5, args.tasks))  # warm up both paths
            asyncio.run(measure(fleet, api, 0.5, args.tasks))
            rates: dict[str, list[float]] = {"memory": [], "redis": []}
            commands = requests = 0
            for _ in range(args.rounds):  # interleaved, so drift hits both alike
                rates["memory"].append(
                    asyncio.run(measure(memory, api, args.seconds, args.tasks)) / args.seconds
                )
                before = int(admin.info("stats")["total_commands_processed"])
                done = asyncio.run(measure(fleet, api, args.seconds, args.tasks))
                commands += int(admin.info("stats")["total_commands_processed"]) - before - 1
                requests += done
                rates["redis"].append(done / args.seconds)
            memory_rate = sorted(rates["memory"])[len(rates["memory"]) // 2]
            redis_rate = sorted(rates["redis"])[len(rates["redis"]) // 2]
            ratio = redis_rate / memory_rate
            print(f"MemoryStore: {memory_rate:8.0f} requests/s (median of {args.rounds})")
            print(f"RedisStore:  {redis_rate:8.0f} requests/s (median of {args.rounds})")
            print(f"ratio:       {ratio:8.3f} (target >= 0.95)")
            print(
                f"Redis round trips per 1,000 requests: {1000 * commands / max(requests, 1):.3f} "
                f"({commands} commands over {requests} requests)"
            )
            store.close()
            sys.exit(0 if ratio >= 0.95 else 1)
        finally:
            server.stop()
            admin.close()
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
