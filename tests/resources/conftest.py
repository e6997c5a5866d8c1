"""An MCP server (the MCP SDK's MCPServer) protected by a strict reference server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from freshtoken.server import MCPResourceServer, ReferenceServer
from freshtoken.testing import ServerFactory


@pytest.fixture
def strict_server(oauth_server_factory: ServerFactory) -> ReferenceServer:
    """Rotation, reuse detection, and no refresh without its resource."""
    return oauth_server_factory(strict_resource=True, rotation=True, reuse_detection=True)


@pytest.fixture
def mcp_server(strict_server: ReferenceServer) -> Iterator[MCPResourceServer]:
    pytest.importorskip("mcp")
    with MCPResourceServer(strict_server) as server:
        yield server
