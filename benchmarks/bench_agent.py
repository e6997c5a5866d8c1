"""What a token costs a program that is not Python: the agent versus a process per call.

Side by side, in one run, against one reference server and one token file (tokens fresh, so
neither side refreshes):

1. ``freshtoken token`` as a process per call (what ``gcloud auth print-access-token``-style
   scripts do): latency p50/p99 and tokens/s.
2. The agent, ``GET /v1/token`` on a kept-alive connection from one client: round trip
   p50/p99 (raw HTTP/1.1 on the unix socket, as curl, Go or Node send it).
3. The agent under load: ``--clients`` processes each asking as fast as they can for
   ``--seconds``: tokens/s served.

    python benchmarks/bench_agent.py [--calls 40] [--requests 2000] [--clients 8] [--seconds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _support import server_process, stats

TOKEN_REQUEST = b"GET /v1/token?profile=default HTTP/1.1\r\nhost: agent\r\n\r\n"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def read_answer(conn: socket.socket, buffer: bytearray) -> bytes:
    """One HTTP answer (Content-Length framed) from a kept-alive connection."""
    while b"\r\n\r\n" not in buffer:
        buffer += conn.recv(65536)
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = int(
        next(
            line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        ).split(b":")[1]
    )
    while len(rest) < length:
        rest += conn.recv(65536)
    buffer[:] = rest[length:]
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"the agent answered {head.splitlines()[0]!r}")
    return rest[:length]


def round_trips(socket_path: str, count: int) -> list[float]:
    samples = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(socket_path)
        buffer = bytearray()
        for _ in range(count):
            started = time.perf_counter()
            conn.sendall(TOKEN_REQUEST)
            read_answer(conn, buffer)
            samples.append(time.perf_counter() - started)
    return samples


def hammer(socket_path: str, seconds: float, results: multiprocessing.SimpleQueue[int]) -> None:
    served = 0
    deadline = time.perf_counter() + seconds
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(socket_path)
        buffer = bytearray()
        while time.perf_counter() < deadline:
            conn.sendall(TOKEN_REQUEST)
            read_answer(conn, buffer)
            served += 1
    results.put(served)


def process_per_call(env: dict[str, str], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "freshtoken.cli", "token"],
            env=env, stdout=subprocess.DEVNULL, check=True,
        )  # fmt: skip
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40, help="freshtoken token processes")
    parser.add_argument("--requests", type=int, default=2000, help="agent round trips")
    parser.add_argument("--clients", type=int, default=8, help="agent load processes")
    parser.add_argument("--seconds", type=float, default=3.0, help="agent load duration")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftb-", dir="/tmp") as work, server_process() as url:
        store = Path(work) / "tokens.json"
        socket_path = str(Path(work) / "run" / "agent.sock")
        env = {**os.environ, "FRESHTOKEN_STORE": str(store), "FRESHTOKEN_PASSWORD": "demo",
               "FRESHTOKEN_CLIENT_SECRET": "demo-secret"}  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "freshtoken.cli", "login", "--token-url", url + "/oauth/token",
             "--client-id", "demo", "--username", "demo"],
            env=env, stdout=subprocess.DEVNULL, check=True,
        )  # fmt: skip
        agent_cli = [sys.executable, "-m", "freshtoken.cli", "agent"]
        subprocess.run([*agent_cli, "start", "--socket", socket_path], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            before = stats(url)["token_requests"]
            per_call = process_per_call(env, args.calls)
            round_trips(socket_path, 50)  # warm: the agent reads the profile once
            trips = round_trips(socket_path, args.requests)
            results: multiprocessing.SimpleQueue[int] = multiprocessing.SimpleQueue()
            clients = [
                multiprocessing.Process(target=hammer, args=(socket_path, args.seconds, results))
                for _ in range(args.clients)
            ]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            served = sum(results.get() for _ in clients)
            token_requests = stats(url)["token_requests"] - before
        finally:
            subprocess.run([*agent_cli, "stop", "--socket", socket_path], env=env, check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
    ms = 1000.0
    print(f"{'':34} {'p50 ms':>9} {'p99 ms':>9} {'tokens/s':>10}")
    print(
        f"{'freshtoken token (a process/call)':34} {statistics.median(per_call) * ms:9.1f} "
        f"{percentile(per_call, 0.99) * ms:9.1f} {len(per_call) / sum(per_call):10.1f}"
    )
    print(
        f"{'agent, one client, kept alive':34} {statistics.median(trips) * ms:9.3f} "
        f"{percentile(trips, 0.99) * ms:9.3f} {len(trips) / sum(trips):10.0f}"
    )
    label = f"agent, {args.clients} client processes"
    print(f"{label:34} {'':9} {'':9} {served / args.seconds:10.0f}")
    ratio = statistics.median(per_call) / statistics.median(trips)
    print(
        f"agent round trip vs a process per call: {ratio:.0f}x faster at the median; "
        f"token endpoint requests during the run: {token_requests}"
    )


if __name__ == "__main__":
    main()
