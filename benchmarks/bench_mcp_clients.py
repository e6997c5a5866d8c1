"""MCP clients side by side against one strict MCP server: freshtoken.mcp.auth and the MCP
SDK's own OAuthClientProvider (over freshtoken.mcp.TokenStorage, so that 4 processes share its
tokens). Versions: benchmarks/requirements-mcp.txt.

The server: the SDK's MCPServer (streamable HTTP) whose tokens the reference server issues,
with rotation, reuse detection (a refresh token presented twice revokes the grant) and
``strict_resource`` (a refresh without its ``resource`` is refused), on the system clock.

Scenarios, each run for both clients, in one run:

1. burst: one login, then the stored token expires; 4 processes x 8 tasks call a tool at once.
2. one 503: one process logs in, its token expires, the next refresh answers 503 once.

Printed per client: tool calls that succeeded, refreshes and logins the server saw, browser
logins the client asked for (counted, not performed), grants revoked.

    python benchmarks/bench_mcp_clients.py
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
from mcp import ClientSession
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata

import freshtoken.mcp
from freshtoken import FileStore
from freshtoken.server import MCPResourceServer, ReferenceServer, ServerConfig

WORKER = Path(__file__).parent.parent / "tests" / "resources" / "mcp_worker.py"
PROCESSES = 4
TASKS = 8
ACCESS_TTL = 3.0


@dataclasses.dataclass
class Row:
    scenario: str
    client: str
    calls_ok: int
    calls: int
    refreshes: int
    logins: int
    browser_asked: int
    revoked: int


class Browser:
    """The person: signs in on the reference server's form; counts how often asked."""

    def __init__(self, server: ReferenceServer) -> None:
        self.server = server
        self.asked = 0
        self.answer: dict[str, str] = {}

    def __call__(self, url: str) -> bool:
        self.asked += 1
        return bool(self.server.browser()(url))

    async def redirect(self, url: str) -> None:
        self.asked += 1

        def sign_in() -> str:
            with httpx.Client() as http:
                return self.server.browser().sign_in(http, url)

        self.answer = dict(httpx.URL(await anyio.to_thread.run_sync(sign_in)).params)

    async def callback(self) -> AuthorizationCodeResult:
        answer = self.answer
        return AuthorizationCodeResult(
            code=answer["code"], state=answer.get("state"), iss=answer.get("iss")
        )


def _sdk(url: str, store: FileStore, browser: Browser) -> OAuthClientProvider:
    return OAuthClientProvider(
        url,
        OAuthClientMetadata(
            redirect_uris=["http://127.0.0.1/callback"],  # type: ignore[list-item]
            client_name="sdk",
        ),
        freshtoken.mcp.TokenStorage(store),
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
    )


FAILURES: list[str] = []


async def _calls(url: str, auth: Any, n: int) -> int:
    ok = 0
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
        for _ in range(n):
            try:
                async with (
                    streamable_http_client(url, http_client=http) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    result = await session.call_tool("add", {"a": 2, "b": 3})
                    ok += result.structured_content == {"result": 5}
            except Exception as error:  # noqa: BLE001 - a failed call is what is counted
                FAILURES.append(type(error).__name__)
    return ok


def _expire(store: FileStore, server: ReferenceServer) -> None:
    stored = store.load()
    assert stored is not None
    expired = dataclasses.replace(stored.tokens, expires_at=stored.tokens.obtained_at)
    store.save(expired, expected_generation=stored.generation)
    server.expire_access_tokens()


def _burst(path: Path, profile: str, url: str, kind: str) -> list[dict[str, Any]]:
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(path), profile, url, str(TASKS), kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        assert worker.stdout is not None
        worker.stdout.readline()  # ready
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    reports = []
    for worker in workers:
        out, _ = worker.communicate(timeout=300)
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def burst(kind: str, tmp: Path) -> Row:
    config = ServerConfig(admin=True, strict_resource=True, access_ttl=300)
    with ReferenceServer(config) as server, MCPResourceServer(server) as mcp:
        store = FileStore(tmp / f"burst-{kind}.json", profile=kind)
        browser = Browser(server)
        if kind == "freshtoken":
            auth: Any = freshtoken.mcp.auth(mcp.url, store=store, open_browser=browser)
        else:
            auth = _sdk(mcp.url, store, browser)
        anyio.run(_calls, mcp.url, auth, 1)
        _expire(store, server)
        server.reset_stats()
        reports = _burst(store.path, kind, mcp.url, kind)
        stats = server.stats()
        return Row(
            "burst after expiry, 4 processes x 8 tasks",
            kind,
            sum(r["ok"] for r in reports),
            PROCESSES * TASKS,
            stats["refreshes"],
            stats["logins"],
            sum(r["browser_logins"] for r in reports),
            stats["family_revocations"],
        )


def one_503(kind: str, tmp: Path) -> Row:
    config = ServerConfig(admin=True, strict_resource=True, access_ttl=ACCESS_TTL)
    with ReferenceServer(config) as server, MCPResourceServer(server) as mcp:
        store = FileStore(tmp / f"503-{kind}.json", profile=kind)
        browser = Browser(server)
        if kind == "freshtoken":
            auth: Any = freshtoken.mcp.auth(mcp.url, store=store, open_browser=browser)
        else:
            auth = _sdk(mcp.url, store, browser)

        async def scenario() -> int:
            first = await _calls(mcp.url, auth, 1)
            await anyio.sleep(ACCESS_TTL + 0.5)  # a benchmark may wait for a real expiry
            server.reset_stats()
            before = browser.asked
            server.inject("status_503")
            ok = await _calls(mcp.url, auth, 3)
            browser.asked -= before
            return first + ok - 1

        ok = anyio.run(scenario)
        stats = server.stats()
        return Row(
            "one 503 on the refresh after expiry",
            kind,
            ok,
            3,
            stats["refreshes"],
            stats["logins"],
            browser.asked,
            stats["family_revocations"],
        )


def main() -> None:
    from importlib import metadata

    versions = {name: metadata.version(name) for name in ("mcp", "httpx2", "freshtoken")}
    print(f"versions: {versions}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in (burst, one_503):
            for kind in ("freshtoken", "sdk"):
                started = time.perf_counter()
                row = scenario(kind, Path(tmp))
                rows.append(row)
                print(f"{row}  ({time.perf_counter() - started:.1f} s)", flush=True)
    print()
    print("| scenario | client | tool calls ok | refreshes | logins | browser asked | revoked |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        name = "freshtoken.mcp" if row.client == "freshtoken" else "SDK OAuthClientProvider"
        print(
            f"| {row.scenario} | {name} | {row.calls_ok}/{row.calls} | {row.refreshes} | "
            f"{row.logins} | {row.browser_asked} | {row.revoked} |"
        )


if __name__ == "__main__":
    main()
