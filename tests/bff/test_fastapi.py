"""The FastAPI dependency: ``Depends(bff.user_client)`` hands a route an httpx.AsyncClient
authorised as the request's user, with the same fresh tokens the proxy uses; no session, or
one that cannot be refreshed, is the BFF's 401 login_required."""

from __future__ import annotations

from typing import Any

import fastapi
import httpx
import pytest

from freshtoken import ManualClock
from freshtoken.server import ReferenceServer

from .bff_support import Deployment, DeploymentFactory


@pytest.fixture
def with_fastapi(deploy: DeploymentFactory, oauth_server: ReferenceServer) -> Deployment:
    app = fastapi.FastAPI()
    deployment = deploy(app=app)
    bff = deployment.bff
    bff.install(app)
    user_client = fastapi.Depends(bff.user_client)

    @app.get("/server-side/me")
    async def me(client: httpx.AsyncClient = user_client) -> Any:
        answer = await client.get(f"{oauth_server.url}/api/me")
        return {"upstream_status": answer.status_code, "me": answer.json()}

    @app.get("/server-side/elsewhere")
    async def elsewhere(client: httpx.AsyncClient = user_client) -> Any:
        answer = await client.get("http://127.0.0.2:9/never", timeout=0.5)
        return {"status": answer.status_code}

    return deployment


def test_a_route_calls_downstream_as_the_user(with_fastapi: Deployment) -> None:
    """The dependency's client carries the session's token to the API."""
    session = with_fastapi.login()
    answer = with_fastapi.http.get("/server-side/me", headers=with_fastapi.cookie(session))
    assert answer.status_code == 200
    assert answer.json()["me"]["sub"] == "demo"


def test_without_a_session_the_route_is_login_required(with_fastapi: Deployment) -> None:
    """No session: 401 {"error": "login_required"}, the route never runs."""
    answer = with_fastapi.http.get("/server-side/me")
    assert answer.status_code == 401
    assert answer.json() == {"error": "login_required"}


def test_a_session_that_expires_during_the_call_is_login_required(
    with_fastapi: Deployment, clock: ManualClock
) -> None:
    """Revoked and expired: the dependency's refresh fails for good, 401, session ended."""
    session = with_fastapi.login()
    with_fastapi.server.revoke("demo")
    clock.advance(400)
    answer = with_fastapi.http.get("/server-side/me", headers=with_fastapi.cookie(session))
    assert answer.status_code == 401
    assert answer.json() == {"error": "login_required"}
    assert "Max-Age=0" in answer.headers["set-cookie"]
    assert with_fastapi.get("/bff/user", session).json() == {"authenticated": False}


def test_the_token_goes_only_to_configured_origins(
    with_fastapi: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request elsewhere leaves without the Authorization header."""
    seen: list[httpx.Request] = []
    original = httpx.AsyncHTTPTransport.handle_async_request

    async def spy(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return await original(self, request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", spy)
    session = with_fastapi.login()
    with_fastapi.http.get("/server-side/elsewhere", headers=with_fastapi.cookie(session))
    never = [r for r in seen if r.url.host == "127.0.0.2"]
    assert never
    assert all("authorization" not in r.headers for r in never)
