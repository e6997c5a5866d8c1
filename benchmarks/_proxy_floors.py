"""Bare Python proxies to measure the BFF against: what forwarding one call costs with each
client and server before the BFF adds anything (bench_bff.py --floors runs them side by side).

Each proxy forwards the browser's call as it is (its headers less Host, its body) to the API
and streams the answer back less its hop-by-hop headers: the least a proxy does. Every one is
served in a process of its own by the same server settings as the BFF (uvicorn, with uvloop
and httptools when installed), except aiohttp.web, which is its own server.

    python benchmarks/_proxy_floors.py KIND PORT API_URL [IDS_FILE]
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
KINDS = ("asgi-aiohttp", "aiohttp-web", "asgi-httpx", "asgi-httpx2", "bff")
SECRET = "the floors benchmark's passphrase"


def server_settings() -> dict[str, str]:
    """uvicorn's event loop and HTTP parser: the fastest installed (what ``auto`` picks)."""
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def asgi_aiohttp(api: str) -> Any:
    import aiohttp
    from yarl import URL

    sessions: list[aiohttp.ClientSession] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if not sessions:
            sessions.append(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=256),
                    cookie_jar=aiohttp.DummyCookieJar(),
                    auto_decompress=False,
                )
            )
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k != b"host"]
        body = await _body(receive)
        url = api + scope["raw_path"].decode()
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode()
        async with sessions[0].request(
            scope["method"],
            URL(url, encoded=True),
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as response:
            kept = [(k, v) for k, v in response.raw_headers if k.lower() not in _HOP]
            await send({"type": "http.response.start", "status": response.status, "headers": kept})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


def asgi_httpx(api: str, module_name: str) -> Any:
    module: Any = __import__(module_name)
    clients: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if not clients:
            limits = module.Limits(max_connections=256, max_keepalive_connections=256)
            clients.append(module.AsyncClient(limits=limits, timeout=30.0))
        client = clients[0]
        headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
        body = await _body(receive)
        url = api + scope["raw_path"].decode()
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode()
        request = client.build_request(scope["method"], url, headers=headers, content=body)
        response = await client.send(request, stream=True)
        try:
            kept = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP]
            start = {"type": "http.response.start", "status": response.status_code}
            await send({**start, "headers": kept})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    return app


def bff_app(api: str, ids_file: str, sessions: int) -> Any:
    from freshtoken import TokenSet
    from freshtoken.bff import BFF, MemorySessionStore

    bff = BFF(
        token_url="http://127.0.0.1:9/token",  # never called: the tokens live an hour
        client_id="bench",
        client_secret="bench-secret",
        secret_key=SECRET,
        routes={"/api/": f"{api}/api/"},
        sessions=MemorySessionStore(),
    )

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await bff(scope, receive, send)
            return

        async def started(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete":
                now = time.time()
                ids = []
                for n in range(sessions):
                    tokens = TokenSet(
                        access_token=f"access-token-of-session-{n:08d}-" + "a" * 600,
                        refresh_token=f"refresh-{n:08d}-" + "r" * 32,
                        expires_at=now + 3600,
                        obtained_at=now,
                    )
                    session_id, _ = await bff.start_session(tokens, {"sub": f"user{n}"})
                    ids.append(session_id)
                Path(ids_file).write_text("\n".join(ids))
                import gc

                if os.environ.get("BENCH_GC") == "off":
                    gc.disable()
                elif os.environ.get("BENCH_GC") == "freeze":
                    gc.freeze()
            await send(message)

        await bff(scope, receive, started)

    return app


def serve_aiohttp_web(api: str, port: int) -> None:
    import aiohttp
    from aiohttp import web
    from yarl import URL

    async def startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )

    async def cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() != "host"]
        body = await request.read()
        async with request.app["session"].request(
            request.method,
            URL(api + request.raw_path, encoded=True),
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as response:
            answer = web.StreamResponse(status=response.status)
            for k, v in response.raw_headers:
                if k.lower() not in _HOP and k.lower() != b"content-length":
                    answer.headers.add(k.decode(), v.decode())
            if response.content_length is not None:
                answer.content_length = response.content_length
            await answer.prepare(request)
            async for chunk in response.content.iter_any():
                await answer.write(chunk)
            await answer.write_eof()
            return answer

    # wrk closes its connections mid-call when its time is up: not worth a traceback each.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    app = web.Application()
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_route("*", "/{tail:.*}", handler)
    if server_settings()["loop"] == "uvloop":
        importlib.import_module("uvloop").install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def _fixed_api(port: int) -> None:
    """The API: a fixed small JSON answer, keep-alive, from a bare protocol (the least CPU,
    so that it is never what limits a proxy)."""
    body = b'{"items":[]}'
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                self.transport.write(answer)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Protocol, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    kind, port, api = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if kind == "api":
        if server_settings()["loop"] == "uvloop":
            importlib.import_module("uvloop").install()
        asyncio.run(_fixed_api(port))
        return
    if kind == "aiohttp-web":
        serve_aiohttp_web(api, port)
        return
    import uvicorn

    lifespan = "off"
    if kind == "asgi-aiohttp":
        app = asgi_aiohttp(api)
    elif kind == "asgi-httpx":
        app = asgi_httpx(api, "httpx")
    elif kind == "asgi-httpx2":
        app = asgi_httpx(api, "httpx2")
    elif kind == "bff":
        app = bff_app(api, sys.argv[4], int(sys.argv[5]))
        lifespan = "on"
    else:
        raise SystemExit(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    # BENCH_SERVER='{"loop": "asyncio", "http": "h11"}' measures another server setting.
    settings = json.loads(os.environ.get("BENCH_SERVER", "null")) or server_settings()
    profile = None
    if os.environ.get("BENCH_CPROFILE"):  # where to write a cProfile of the whole run
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        lifespan=lifespan,  # type: ignore[arg-type]
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        **settings,
    )
    if profile is not None:
        profile.disable()
        profile.dump_stats(os.environ["BENCH_CPROFILE"])


if __name__ == "__main__":
    main()
