"""The proxy streams: a large upload reaches the API while the browser is still sending it,
and a large download reaches the browser while the API is still producing it; neither is held
in the BFF's memory. An upstream of the test's own, on a real port, waits on the other side."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator

import anyio.to_thread
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from freshtoken.bff._serving import ServedApp

from .bff_support import CSRF, DeploymentFactory

CHUNK = 256 * 1024
CHUNKS = 32  # 8 MiB each way
WAIT = 10.0


class Upstream:
    """An API that reports when a body starts arriving, and streams a body in two halves."""

    def __init__(self) -> None:
        self.upload_started = threading.Event()
        self.browser_got_first_chunk = threading.Event()
        self.received = 0
        self.authorization: str | None = None

    async def upload(self, request: Request) -> Response:
        self.authorization = request.headers.get("authorization")
        async for chunk in request.stream():
            self.received += len(chunk)
            if chunk:
                self.upload_started.set()
        return JSONResponse({"received": self.received})

    async def download(self, request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"a" * CHUNK
            # Only a browser that already holds the first chunk lets the rest come.
            got = await anyio.to_thread.run_sync(self.browser_got_first_chunk.wait, WAIT)
            if not got:
                return
            for _ in range(CHUNKS - 1):
                yield b"b" * CHUNK

        return StreamingResponse(body(), media_type="application/octet-stream")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/upload", self.upload, methods=["POST"]),
                Route("/download", self.download, methods=["GET"]),
            ]
        )


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    api = Upstream()
    with ServedApp(api.app()) as served:
        yield api, served.url


def test_an_upload_streams_through_before_it_ends(
    deploy: DeploymentFactory, upstream: tuple[Upstream, str]
) -> None:
    """Past replay_limit the body is forwarded as it comes: the API sees it begin while the
    browser still holds back the rest."""
    api, url = upstream
    deployment = deploy(routes={"/stream/": f"{url}/"}, replay_limit=64 * 1024)
    session = deployment.login()

    def body() -> Iterator[bytes]:
        yield b"x" * CHUNK
        assert api.upload_started.wait(WAIT), "the API saw nothing before the upload ended"
        for _ in range(CHUNKS - 1):
            yield b"y" * CHUNK

    response = deployment.http.post(
        "/stream/upload", content=body(), headers={**CSRF, **deployment.cookie(session)}
    )
    assert response.status_code == 200
    assert response.json() == {"received": CHUNK * CHUNKS}
    assert api.authorization is not None
    assert api.authorization.startswith("Bearer ")


def test_a_download_streams_through_before_it_ends(
    deploy: DeploymentFactory, upstream: tuple[Upstream, str]
) -> None:
    """The browser gets the first chunk while the API has not yet produced the second."""
    api, url = upstream
    deployment = deploy(routes={"/stream/": f"{url}/"})
    session = deployment.login()
    total = 0
    with deployment.http.stream(
        "GET", "/stream/download", headers={**CSRF, **deployment.cookie(session)}
    ) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            total += len(chunk)
            api.browser_got_first_chunk.set()
    assert total == CHUNK * CHUNKS


def test_an_unreachable_upstream_is_a_502(deploy: DeploymentFactory) -> None:
    """A route whose API is down answers 502 bad_gateway, and the session lives on."""
    deployment = deploy(routes={"/down/": "http://127.0.0.1:9/"})
    session = deployment.login()
    response = deployment.get("/down/x", session)
    assert response.status_code == 502
    assert response.json() == {"error": "bad_gateway"}
    assert deployment.get("/bff/user", session).json()["authenticated"] is True


def test_upstream_set_cookie_never_reaches_the_browser(deploy: DeploymentFactory) -> None:
    """An API's Set-Cookie (one that could shadow the session cookie) is dropped."""

    async def api(scope, receive, send):  # type: ignore[no-untyped-def]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"set-cookie", b"__Host-bff=attacker; Path=/; Secure"),
                    (b"x-api", b"1"),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    with ServedApp(api) as served:
        deployment = deploy(routes={"/evil/": f"{served.url}/"})
        session = deployment.login()
        response = deployment.get("/evil/x", session)
        assert response.status_code == 200
        assert "set-cookie" not in response.headers
        assert response.headers["x-api"] == "1"
        assert isinstance(response, httpx.Response)


def test_an_apis_cookie_for_one_user_never_reaches_another(deploy: DeploymentFactory) -> None:
    """The BFF's upstream client keeps no cookie jar: a Set-Cookie answered to one session's
    call is not sent with the next call, whoever makes it."""
    cookies_seen: list[str | None] = []

    async def api(scope, receive, send):  # type: ignore[no-untyped-def]
        cookies_seen.append(dict(scope["headers"]).get(b"cookie", b"").decode() or None)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"set-cookie", b"api-session=first-user; Path=/")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    with ServedApp(api) as served:
        deployment = deploy(routes={"/api2/": f"{served.url}/"})
        first, second = deployment.login("demo"), deployment.login("alice")
        assert deployment.get("/api2/x", first).status_code == 200
        assert deployment.get("/api2/x", second).status_code == 200
        assert deployment.get("/api2/x", first).status_code == 200
    assert cookies_seen == [None, None, None]
