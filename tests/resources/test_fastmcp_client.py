"""FastMCP's ``Client(url, auth=...)`` with ``freshtoken.mcp.auth``: FastMCP hands any
``httpx2.Auth`` to its HTTP client. Runs where FastMCP is installed
(``pip install -r benchmarks/requirements-mcp.txt``); it is no dependency of freshtoken."""

from __future__ import annotations

import anyio
import pytest

import freshtoken.mcp
from freshtoken import MemoryStore
from freshtoken.server import MCPResourceServer, ReferenceServer

fastmcp = pytest.importorskip("fastmcp")


def test_a_fastmcp_client_logs_in_and_calls_tools(
    mcp_server: MCPResourceServer, strict_server: ReferenceServer
) -> None:
    auth = freshtoken.mcp.auth(
        mcp_server.url,
        store=MemoryStore(),
        open_browser=strict_server.browser("alice", "alice"),
        clock=strict_server.clock,
    )

    async def main() -> list[object]:
        async with fastmcp.Client(mcp_server.url, auth=auth) as client:
            first = await client.call_tool("whoami", {})
            strict_server.advance(301)  # expired: the next call refreshes, with its resource
            second = await client.call_tool("add", {"a": 2, "b": 3})
            return [first.structured_content, second.structured_content]

    assert anyio.run(main) == [{"result": "alice"}, {"result": 5}]
    stats = strict_server.stats()
    assert (stats["logins"], stats["refreshes"], stats["refreshes_without_resource"]) == (1, 1, 0)
