"""httpx or httpx2 for freshtoken's own token endpoint requests? Measured side by side in one
run, against the reference server in its own process.

1. import: seconds to ``import httpx`` / ``import httpx2`` in a fresh interpreter (median of 5);
2. one client per request (what ``freshtoken._oauth.http.asend`` does): a client_credentials
   token request with a new ``AsyncClient`` each time;
3. one kept-alive client: the same requests through one ``AsyncClient`` (the flight host's
   connections);
4. sync: one kept-alive ``Client``.

Prints requests per second of each and the ratio httpx2 / httpx.

    python benchmarks/bench_httpx2.py [REQUESTS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

import anyio
import httpx
import httpx2
from _support import server_process

FORM = {"grant_type": "client_credentials", "client_id": "demo", "client_secret": "demo-secret"}


def import_seconds(module: str) -> float:
    times = []
    for _ in range(5):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import time; t = time.perf_counter(); import {module}; "
                "print(time.perf_counter() - t)",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(float(out.stdout))
    return statistics.median(times)


async def client_per_request(module: Any, url: str, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        async with module.AsyncClient(verify=False) as client:
            response = await client.post(url, data=FORM)
            response.raise_for_status()
    return n / (time.perf_counter() - started)


async def kept_alive(module: Any, url: str, n: int) -> float:
    async with module.AsyncClient(verify=False) as client:
        await client.post(url, data=FORM)
        started = time.perf_counter()
        for _ in range(n):
            response = await client.post(url, data=FORM)
            response.raise_for_status()
    return n / (time.perf_counter() - started)


def sync_kept_alive(module: Any, url: str, n: int) -> float:
    with module.Client(verify=False) as client:
        client.post(url, data=FORM)
        started = time.perf_counter()
        for _ in range(n):
            client.post(url, data=FORM).raise_for_status()
    return n / (time.perf_counter() - started)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    print(f"httpx {httpx.__version__}, httpx2 {httpx2.__version__}; {n} requests each")
    results: dict[str, dict[str, float]] = {}
    results["import (ms, lower is better)"] = {
        name: import_seconds(name) * 1000 for name in ("httpx", "httpx2")
    }
    with server_process() as base:
        url = f"{base}/oauth/token"
        for label, run in (
            ("async, a client per request (req/s)", client_per_request),
            ("async, one kept-alive client (req/s)", kept_alive),
        ):
            results[label] = {}
            # Interleaved rounds, so that a load change on the machine hits both alike.
            rounds: dict[str, list[float]] = {"httpx": [], "httpx2": []}
            for _ in range(3):
                for name, module in (("httpx", httpx), ("httpx2", httpx2)):
                    rounds[name].append(anyio.run(run, module, url, n // 3))
            results[label] = {name: statistics.median(values) for name, values in rounds.items()}
        rounds = {"httpx": [], "httpx2": []}
        for _ in range(3):
            for name, module in (("httpx", httpx), ("httpx2", httpx2)):
                rounds[name].append(sync_kept_alive(module, url, n // 3))
        results["sync, one kept-alive client (req/s)"] = {
            name: statistics.median(values) for name, values in rounds.items()
        }
    print()
    print("| measure | httpx | httpx2 | httpx2 / httpx |")
    print("|---|---|---|---|")
    for label, values in results.items():
        ratio = values["httpx2"] / values["httpx"]
        print(f"| {label} | {values['httpx']:.1f} | {values['httpx2']:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
