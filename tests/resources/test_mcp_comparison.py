"""The comparison of the MCP clients page, each row run here: the same burst (8 tasks x 4
processes after expiry, sharing one token file) against the same strict MCP server, with
freshtoken.mcp.auth and with the MCP SDK's own OAuthClientProvider over a shared
freshtoken.mcp.TokenStorage. The SDK's failures are asserted as observed with mcp 2.3.0
(benchmarks/requirements-mcp.txt); benchmarks/bench_mcp_clients.py prints the numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mcp")

from freshtoken import FileStore
from freshtoken.server import MCPResourceServer, ReferenceServer

from .sdk_login import sdk_login
from .test_mcp_client import PROCESSES, TASKS, _burst, _expire_in_store


def test_the_sdk_provider_sends_every_process_to_the_browser_after_expiry(
    mcp_server: MCPResourceServer, strict_server: ReferenceServer, tmp_path: Path
) -> None:
    """Its stored token carries no expiry it reads back: sent stale, a 401, and the 401 path
    never refreshes: a browser login in every process, and the tool calls fail."""
    path = tmp_path / "tokens.json"
    store = FileStore(path, profile="sdk")
    assert sdk_login(mcp_server.url, store, strict_server).structured_content == {"result": 5}
    _expire_in_store(store, strict_server)
    strict_server.reset_stats()
    reports = _burst(path, "sdk", mcp_server.url, "sdk")
    browser_logins = sum(r["browser_logins"] for r in reports)
    ok = sum(r["ok"] for r in reports)
    assert browser_logins >= PROCESSES  # at least one per process
    assert ok < PROCESSES * TASKS
    assert strict_server.stats()["refreshes"] == 0
