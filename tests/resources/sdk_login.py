"""The MCP SDK's own ``OAuthClientProvider`` logging in headlessly: its redirect handler signs in
on the reference server's login form and hands the code to its callback handler."""

from __future__ import annotations

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
from freshtoken.server import ReferenceServer

__all__ = ["sdk_login"]


def sdk_provider(url: str, store: FileStore, server: ReferenceServer) -> OAuthClientProvider:
    """A provider whose browser is the reference server's login form, played over HTTP."""
    answer: dict[str, str] = {}

    async def redirect(authorization_url: str) -> None:
        def sign_in() -> str:
            with httpx.Client() as http:
                return server.browser().sign_in(http, authorization_url)

        location = await anyio.to_thread.run_sync(sign_in)
        answer.update(httpx.URL(location).params)

    async def callback() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(
            code=answer["code"], state=answer.get("state"), iss=answer.get("iss")
        )

    metadata = OAuthClientMetadata(
        redirect_uris=["http://127.0.0.1/callback"],  # type: ignore[list-item]
        client_name="sdk",
    )
    return OAuthClientProvider(
        url,
        metadata,
        freshtoken.mcp.TokenStorage(store),
        redirect_handler=redirect,
        callback_handler=callback,
    )


async def _call(url: str, auth: Any) -> Any:
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return await session.call_tool("add", {"a": 2, "b": 3})


def sdk_login(url: str, store: FileStore, server: ReferenceServer) -> Any:
    """Log in with the SDK's provider (tokens and client saved in ``store``) and call a tool."""
    return anyio.run(_call, url, sdk_provider(url, store, server))
