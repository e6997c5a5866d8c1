"""The MCP resource server mode of the test bed: the SDK's MCPServer, tokens checked against
the reference server, audience-restricted (RFC 8707), metadata published (RFC 9728)."""

from __future__ import annotations

import httpx

from freshtoken import MemoryStore, for_resource
from freshtoken.server import MCPResourceServer, ReferenceServer

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
HEADERS = {"Accept": "application/json, text/event-stream"}


def test_no_token_gets_a_challenge_naming_the_metadata(mcp_server: MCPResourceServer) -> None:
    answer = httpx.post(mcp_server.url, json=INITIALIZE, headers=HEADERS)
    assert answer.status_code == 401
    challenge = answer.headers["WWW-Authenticate"]
    metadata_url = mcp_server.url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    assert f'resource_metadata="{metadata_url}"' in challenge
    document = httpx.get(metadata_url).json()
    assert document["resource"] == mcp_server.url
    servers = [server.rstrip("/") for server in document["authorization_servers"]]
    assert servers == [mcp_server.auth_server.issuer]


def test_only_tokens_for_this_resource_are_accepted(
    mcp_server: MCPResourceServer, strict_server: ReferenceServer
) -> None:
    """A token of the same server for another resource, or for none, is refused."""
    legacy = strict_server.login()["access_token"]  # a password grant: no resource
    for_api = for_resource(
        strict_server.api_url, store=MemoryStore(), open_browser=strict_server.browser()
    ).get_tokens()
    for token in (legacy, for_api.access_token):
        answer = httpx.post(
            mcp_server.url, json=INITIALIZE, headers={**HEADERS, "Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 401
    mine = for_resource(
        mcp_server.url, store=MemoryStore(), open_browser=strict_server.browser()
    ).get_tokens()
    answer = httpx.post(
        mcp_server.url, json=INITIALIZE, headers={**HEADERS, "Authorization": mine.authorization}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["serverInfo"]["name"] == "freshtoken reference MCP server"
