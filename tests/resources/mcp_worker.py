"""One process of the MCP burst: ``python mcp_worker.py STORE PROFILE URL TASKS [sdk]``.

It makes its MCP client, prints ``ready``, waits for ``go`` on stdin, then calls the ``add``
tool from TASKS tasks at once (a session each, over one httpx2 client), and prints one JSON
line: how many calls succeeded and the errors of the others. With ``sdk`` the auth is the MCP
SDK's own OAuthClientProvider over a freshtoken.mcp.TokenStorage on the same file (the
comparison), whose logins are counted instead of performed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

import freshtoken.mcp
from freshtoken import FileStore


def _auth(store: FileStore, url: str, kind: str, logins: list[str]) -> httpx2.Auth:
    if kind == "freshtoken":
        return freshtoken.mcp.auth(url, store=store, interactive=False)
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientMetadata

    async def redirect(authorization_url: str) -> None:
        logins.append("browser")
        raise RuntimeError("the SDK sent the user to the browser")

    async def callback() -> Any:
        raise RuntimeError("no browser here")

    return OAuthClientProvider(
        url,
        OAuthClientMetadata(redirect_uris=["http://127.0.0.1/callback"], client_name="sdk"),  # type: ignore[list-item]
        freshtoken.mcp.TokenStorage(store),
        redirect_handler=redirect,
        callback_handler=callback,
    )


async def main(path: str, profile: str, url: str, tasks: int, kind: str) -> None:
    logins: list[str] = []
    auth = _auth(FileStore(path, profile=profile), url, kind, logins)
    ok = 0
    errors: list[str] = []
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)

        async def call() -> None:
            nonlocal ok
            try:
                async with (
                    streamable_http_client(url, http_client=http) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    result = await session.call_tool("add", {"a": 2, "b": 3})
                    if result.structured_content == {"result": 5}:
                        ok += 1
                    else:
                        errors.append(f"tool answered {result!r}"[:200])
            except Exception as error:  # noqa: BLE001 - reported to the test, which judges
                errors.append(f"{type(error).__name__}: {error}"[:300])

        async with anyio.create_task_group() as group:
            for _ in range(tasks):
                group.start_soon(call)
    print(json.dumps({"ok": ok, "errors": errors, "browser_logins": len(logins)}), flush=True)


if __name__ == "__main__":
    path, profile, url, tasks = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    kind = sys.argv[5] if len(sys.argv) > 5 else "freshtoken"
    anyio.run(main, path, profile, url, tasks, kind)
