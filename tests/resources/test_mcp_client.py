"""``freshtoken.mcp.auth`` with the MCP Python SDK's client against a real MCP server (the SDK's
MCPServer) protected by a strict reference server: rotation, reuse detection revoking the grant,
no refresh without its resource. Logins are played headlessly on the server's login form."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from workers import released_together

pytest.importorskip("mcp")

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

import freshtoken.httpx2
import freshtoken.mcp
from freshtoken import FileStore, MemoryStore, RetryPolicy, SessionExpired, TokenSet
from freshtoken.server import MCPResourceServer, ReferenceServer

WORKER = Path(__file__).with_name("mcp_worker.py")
PROCESSES = 4
TASKS = 8


async def _call_tools(url: str, auth: httpx2.Auth, calls: int = 1) -> list[Any]:
    results = []
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        results.append(await session.call_tool("whoami", {}))
        for _ in range(calls - 1):
            results.append(await session.call_tool("add", {"a": 1, "b": 2}))
    return results


def _stored(auth: freshtoken.httpx2.TokenAuth) -> TokenSet | None:
    stored = auth.manager.store.load()
    return None if stored is None else stored.tokens


def test_the_first_tool_call_logs_in_with_only_the_url(
    mcp_server: MCPResourceServer, strict_server: ReferenceServer
) -> None:
    auth = freshtoken.mcp.auth(
        mcp_server.url, store=MemoryStore(), open_browser=strict_server.browser("alice", "alice")
    )
    results = anyio.run(_call_tools, mcp_server.url, auth, 3)
    assert results[0].structured_content == {"result": "alice"}
    assert [r.structured_content for r in results[1:]] == [{"result": 3}] * 2
    stats = strict_server.stats()
    assert (stats["registrations"], stats["logins"], stats["refreshes"]) == (1, 1, 0)
    assert mcp_server.tool_calls == 3


def _expire_in_store(store: FileStore, server: ReferenceServer) -> None:
    """Every process will find the stored token expired (and the server refuses it too)."""
    stored = store.load()
    assert stored is not None
    expired = dataclasses.replace(stored.tokens, expires_at=stored.tokens.obtained_at)
    store.save(expired, expected_generation=stored.generation)
    server.expire_access_tokens()


def _burst(store_path: Path, profile: str, url: str, kind: str = "freshtoken") -> list[Any]:
    """PROCESSES processes, TASKS tool calls each, all let go at once."""
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(store_path), profile, url, str(TASKS), kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    return released_together(workers)


def test_expiry_during_a_burst_from_8_tasks_in_4_processes_is_one_refresh(
    mcp_server: MCPResourceServer, strict_server: ReferenceServer, tmp_path: Path
) -> None:
    """32 tool calls after expiry: one refresh (with its resource), no login, no revocation."""
    path = tmp_path / "tokens.json"
    store = FileStore(path, profile="mcp")
    auth = freshtoken.mcp.auth(mcp_server.url, store=store, open_browser=strict_server.browser())
    anyio.run(_call_tools, mcp_server.url, auth)
    auth.manager.close()
    _expire_in_store(store, strict_server)
    strict_server.reset_stats()
    reports = _burst(path, "mcp", mcp_server.url)
    assert [r["errors"] for r in reports] == [[]] * PROCESSES
    assert sum(r["ok"] for r in reports) == PROCESSES * TASKS
    stats = strict_server.stats()
    assert stats["refreshes"] == 1
    assert stats["logins"] == 0
    assert stats["reuse_detections"] == stats["family_revocations"] == 0
    assert stats["refreshes_without_resource"] == 0


def test_a_transient_refresh_failure_keeps_the_tokens(
    mcp_server: MCPResourceServer, strict_server: ReferenceServer
) -> None:
    """A 503 on the refresh of a token that still works: the tool call goes on with it."""
    auth = freshtoken.mcp.auth(
        mcp_server.url,
        store=MemoryStore(),
        open_browser=strict_server.browser(),
        clock=strict_server.clock,
        retry=RetryPolicy(attempts=1),
    )
    anyio.run(_call_tools, mcp_server.url, auth)
    before = auth.manager.get_tokens()
    strict_server.inject("status_503", count=5)
    strict_server.advance(290)  # within the leeway of its 300 s: due, still valid
    results = anyio.run(_call_tools, mcp_server.url, auth, 2)
    assert all(not r.is_error for r in results)
    assert _stored(auth) == before
    strict_server.clear_faults()
    assert auth.manager.refresh() != before
    stats = strict_server.stats()
    assert (stats["logins"], stats["family_revocations"]) == (1, 0)


def test_a_refresh_refused_while_the_token_works_keeps_it_until_expiry(
    mcp_server: MCPResourceServer, strict_server: ReferenceServer
) -> None:
    """400 invalid_grant (the grant idled out) with 10 s left: tool calls use the token."""
    auth = freshtoken.mcp.auth(
        mcp_server.url,
        store=MemoryStore(),
        open_browser=strict_server.browser(),
        clock=strict_server.clock,
        retry=RetryPolicy(attempts=1),
    )
    anyio.run(_call_tools, mcp_server.url, auth)
    tokens: TokenSet = auth.manager.get_tokens()
    strict_server.configure(refresh_idle_ttl=100)
    strict_server.advance(290)
    results = anyio.run(_call_tools, mcp_server.url, auth, 2)
    assert all(not r.is_error for r in results)
    assert _stored(auth) == tokens
    assert strict_server.stats()["invalid_grant"] >= 1
    assert strict_server.stats()["logins"] == 1


def test_no_tokens_and_not_interactive_is_session_expired(
    mcp_server: MCPResourceServer, strict_server: ReferenceServer
) -> None:
    auth = freshtoken.mcp.auth(mcp_server.url, store=MemoryStore(), interactive=False)
    with pytest.raises(SessionExpired, match="freshtoken login --resource"):
        auth.manager.get_tokens()
    assert strict_server.stats()["registrations"] == 0
