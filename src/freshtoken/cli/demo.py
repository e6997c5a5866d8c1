"""``freshtoken demo``: dozens of concurrent clients keep working through token expiry.

An embedded reference server issues short-lived tokens with rotation and reuse detection on.
Async clients share one [`TokenManager`][freshtoken.TokenManager] through ``httpx.AsyncClient``
while, a third of the way in, the token endpoint fails a few times in a row (503, a dropped
connection, 429 with Retry-After) and, two thirds in, the server expires every access token
at once. The summary compares refreshes with expiries; the exit code is 0 only if no request
failed and the server never saw a refresh token reused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import sys
import time
from collections import Counter
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from .._arguments import seconds, whole_number
from .._core.policy import RefreshPolicy, RetryPolicy
from .._engine.manager import TokenManager
from .._logins.flows import password_login
from ..httpx import TokenAuth
from ..refreshers import OAuth2Refresher
from ..server import ReferenceServer, ServerConfig

__all__ = ["DemoResult", "configure_parser", "elapsed", "run", "run_demo"]

_log = logging.getLogger("freshtoken.demo")


def elapsed(seconds: float) -> str:
    """How the demo stamps its lines and its progress: seconds since it started."""
    return f"t = {max(0.0, seconds):5.1f} s"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=seconds(positive=True), default=15.0, help="seconds (15)"
    )
    parser.add_argument(
        "--concurrency", type=whole_number(1, 1000), default=40, help="clients (40)"
    )
    parser.add_argument(
        "--ttl", type=seconds(positive=True), default=4.0, help="access token TTL (4 s)"
    )
    parser.add_argument(
        "--pause", type=seconds(), default=0.2, help="each client's pause between requests"
    )
    parser.add_argument("--no-faults", action="store_true", help="skip the injected failures")


def run(args: argparse.Namespace) -> int:
    console = Console()
    # Server and clients share this process: hand the GIL over more often than every 5 ms so
    # that neither side's latency is mostly waiting for the other (measured: 2x throughput).
    sys.setswitchinterval(0.0005)
    started = time.time()
    # Every line is stamped as the progress table is: seconds since the start.
    handler = RichHandler(
        console=console,
        show_path=False,
        omit_repeated_times=False,
        log_time_format=lambda moment: Text(elapsed(moment.timestamp() - started)),
    )
    logging.getLogger("freshtoken").addHandler(handler)
    logging.getLogger("freshtoken").setLevel(logging.INFO)
    result = asyncio.run(
        run_demo(
            duration=args.duration,
            concurrency=args.concurrency,
            ttl=args.ttl,
            pause=args.pause,
            faults=not args.no_faults,
            console=console,
            started=started,
        )
    )
    console.print(result.table())
    if result.ok:
        console.print("[bold green]OK[/]: no request failed, no refresh token was reused.")
        return 0
    console.print("[bold red]FAILED[/]: see the table above.")
    return 1


@dataclasses.dataclass
class DemoResult:
    duration: float
    ttl: float
    cycle: float  # seconds from obtaining a token to its proactive refresh
    requests: int = 0
    failed: int = 0
    failures: Counter[str] = dataclasses.field(default_factory=Counter)
    server: dict[str, Any] = dataclasses.field(default_factory=dict)
    client: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def expiries(self) -> int:
        """Tokens that reached their refresh point during the run, plus the forced expiry."""
        return math.floor(self.duration / self.cycle) + 1

    @property
    def refreshes_per_expiry(self) -> float:
        return float(self.server.get("refreshes", 0)) / self.expiries

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.server.get("reuse_detections", 0) == 0

    def table(self) -> Table:
        table = Table(title="freshtoken demo", show_header=True)
        table.add_column("measure")
        table.add_column("value", justify="right")
        rows = [
            ("requests sent", self.requests),
            ("requests failed", self.failed),
            ("requests/s", f"{self.requests / self.duration:.0f}"),
            (f"tokens due for refresh (one per {self.cycle:g} s, + 1 forced)", self.expiries),
            ("refreshes at the server", self.server.get("refreshes", 0)),
            ("refreshes per expiry (at most 1)", f"{self.refreshes_per_expiry:.2f}"),
            ("refreshes by the client", self.client.get("refreshes", 0)),
            ("refresh attempts that failed (injected)", self.client.get("refresh_failures", 0)),
            ("auth retries after a 401", self.client.get("retries", 0)),
            ("401s served by the API", self.server.get("unauthorized_401", 0)),
            ("refresh tokens reused", self.server.get("reuse_detections", 0)),
        ]
        for name, value in rows:
            table.add_row(name, str(value))
        for reason, count in sorted(self.failures.items()):
            table.add_row(f"  failed: {reason}", str(count))
        return table


async def run_demo(
    *,
    duration: float = 15.0,
    concurrency: int = 40,
    ttl: float = 4.0,
    pause: float = 0.2,
    faults: bool = True,
    console: Console | None = None,
    started: float | None = None,
) -> DemoResult:
    """Run the demo; ``console`` shows its progress (a live table on a terminal only: in a
    file or a pipe, only the log lines and the caller's summary), timed from ``started``
    (``time.time()``; default: now)."""
    console = console or Console(quiet=True)
    started = time.time() if started is None else started
    config = ServerConfig(access_ttl=ttl, reuse_detection=True, rotation=True)
    with ReferenceServer(config) as server:
        manager = TokenManager(
            OAuth2Refresher(server.token_url, client_id="demo", client_secret="demo-secret"),
            policy=RefreshPolicy(leeway=ttl / 4),
            retry=RetryPolicy(attempts=6, initial=0.1, maximum=1.5),
        )
        manager.set_tokens(
            password_login(
                server.token_url,
                username="demo",
                password="demo",
                client_id="demo",
                client_secret="demo-secret",
            )
        )
        window = min(manager.policy.leeway, manager.policy.window_fraction * ttl)
        result = DemoResult(duration=duration, ttl=ttl, cycle=ttl - window)
        console.print(
            f"reference server at {server.url}: {concurrency} clients, {ttl:g} s tokens, "
            f"{duration:g} s"
        )
        auth = TokenAuth(manager, origins=[server.url])
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=server.url, auth=auth, limits=limits, timeout=10.0
        ) as client:
            deadline = time.monotonic() + duration
            workers = [
                asyncio.create_task(_client_loop(client, n, deadline, pause, result))
                for n in range(concurrency)
            ]
            script = asyncio.create_task(_incidents(server, manager, duration, faults))
            # A live table redraws itself in place, which only a terminal can show: elsewhere
            # it would be frames run together with the log lines and the summary.
            live = (
                Live(_progress(result, manager, server, time.time() - started), console=console)
                if console.is_interactive
                else None
            )
            with live or contextlib.nullcontext():
                while not all(worker.done() for worker in workers):
                    await asyncio.sleep(0.25)
                    if live is not None:
                        live.update(_progress(result, manager, server, time.time() - started))
            await asyncio.gather(*workers)
            await script
        result.server = server.stats()
        result.client = manager.stats.snapshot()
        return result


async def _client_loop(
    client: httpx.AsyncClient, number: int, deadline: float, pause: float, result: DemoResult
) -> None:
    """One client: a mix of reads and writes with a pause between them, as an app would.

    Without pauses the embedded server (sharing this process's GIL) saturates, answers take
    seconds, and a request may outlive two tokens; that measures the queue, not refresh.
    """
    jitter = random.Random(number)
    step = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(pause * jitter.uniform(0.5, 1.5))
        step += 1
        try:
            if step % 5 == 0:
                response = await client.post(
                    "/api/items", json={"name": f"item {number}-{step}", "client": number}
                )
            elif step % 5 == 1:
                response = await client.get("/api/me")
            else:
                response = await client.get("/api/items", params={"limit": 5})
        except Exception as error:  # noqa: BLE001 - counted and shown in the summary
            result.requests += 1
            result.failed += 1
            result.failures[type(error).__name__] += 1
            continue
        result.requests += 1
        if response.is_error:
            result.failed += 1
            result.failures[f"HTTP {response.status_code}"] += 1


async def _incidents(
    server: ReferenceServer, manager: TokenManager, duration: float, faults: bool
) -> None:
    start = time.monotonic()
    await asyncio.sleep(duration / 3)
    if faults:
        server.inject("status_503", 1)
        server.inject("drop_connection", 1)
        server.inject("status_429", 1, retry_after=1)
        _log.info("injected: the next 3 token requests fail (503, dropped connection, 429)")
    await asyncio.sleep(max(0.0, start + 2 * duration / 3 - time.monotonic()))
    # Strike in the middle of a token's life, not while a scheduled refresh is in flight: a
    # server that kills both the old and the brand-new token at once leaves a request no
    # second chance (one auth retry per request is the rule), and that is not this scene.
    while True:
        tokens = await manager.aget_tokens()
        lifetime, obtained = tokens.lifetime, tokens.obtained_at
        if lifetime is None or obtained is None:
            break
        age = time.time() - obtained
        if 0.25 * lifetime <= age <= 0.5 * lifetime:
            break
        await asyncio.sleep(0.05)
    server.expire_access_tokens()
    _log.info("forced: the server expired every access token")


def _progress(
    result: DemoResult, manager: TokenManager, server: ReferenceServer, seconds: float
) -> Table:
    stats = manager.stats.snapshot()
    table = Table(show_header=True, title=elapsed(seconds))
    for name in ("requests", "refreshes", "failed refresh attempts", "retries", "errors"):
        table.add_column(name, justify="right")
    table.add_row(
        str(result.requests),
        str(stats["refreshes"]),
        str(stats["refresh_failures"]),
        str(stats["retries"]),
        str(result.failed),
    )
    return table
