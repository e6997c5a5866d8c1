"""The BFF's key, changed under Redis sessions: a session no key opens is a 401
login_required, deleted at once, and never in the way of a new login; with the old key among
``previous_keys`` sessions, login cookies and logout links live on through the rotation, and
what the old key sealed is sealed again with the new one when next written."""

from __future__ import annotations

import base64
import os
from typing import Any
from urllib.parse import urlsplit

import fastapi
import httpx
import pytest

from freshtoken import ManualClock
from freshtoken.bff import RedisSessionStore
from freshtoken.bff._sessions import handle_of
from freshtoken.server import ReferenceServer

from .bff_support import Deployment, DeploymentFactory
from .test_login import Browser

pytestmark = pytest.mark.redis

OLD = base64.urlsafe_b64encode(os.urandom(32)).decode()
NEW = base64.urlsafe_b64encode(os.urandom(32)).decode()


@pytest.fixture
def session_kind() -> str:
    """Only Redis sessions outlive the process, and so meet a new key."""
    return "redis"


def retire(deployment: Deployment) -> None:
    """Stop a deployment as a rotation stops the old processes. Its warm managers go too: in
    one process, managers of equal stores share what they know of the tokens, and the next
    deployment must read them from Redis as a new process would."""
    deployment.close()
    deployment.bff._managers.clear()


def with_tokens_under_the_old_key(deploy: DeploymentFactory) -> str:
    """A session logged in under OLD, then read once under NEW with OLD as a previous key:
    its record is sealed again with NEW, its tokens (not refreshed since) still with OLD."""
    old = deploy(secret_key=OLD)
    session = old.login()
    retire(old)
    rotated = deploy(secret_key=NEW, previous_keys=[OLD])
    assert rotated.get("/bff/user", session).json()["authenticated"] is True
    retire(rotated)
    return session


def stored(deployment: Deployment, session: str) -> bool:
    sessions = deployment.bff.sessions
    assert isinstance(sessions, RedisSessionStore)
    return bool(sessions.client.exists(sessions.redis_key(handle_of(session))))


def test_a_session_sealed_with_another_key_is_login_required_and_deleted(
    deploy: DeploymentFactory,
) -> None:
    """After a key change without previous_keys: 401 login_required (not 503 forever), the
    cookie cleared, the record gone from Redis; /bff/user says unauthenticated."""
    old = deploy(secret_key=OLD)
    session = old.login()
    retire(old)
    new = deploy(secret_key=NEW)
    response = new.get("/api/me", session)
    assert response.status_code == 401
    assert response.json() == {"error": "login_required"}
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert not stored(new, session)
    assert new.get("/api/me", session).status_code == 401
    assert new.get("/bff/user", session).json() == {"authenticated": False}


def test_an_unreadable_session_never_blocks_a_new_login(deploy: DeploymentFactory) -> None:
    """A browser still holding a session sealed with another key logs in: the callback ends
    the unreadable session and starts a new one (it used to answer 503)."""
    old = deploy(secret_key=OLD)
    old_session = old.login()
    retire(old)
    new = deploy(secret_key=NEW)
    browser = Browser(new)
    browser.cookies[new.bff.cookie_name] = old_session
    done = browser.login("/orders")
    assert done.status_code == 302, done.text
    assert done.headers["location"] == "/orders"
    fresh = browser.cookies[new.bff.cookie_name]
    assert fresh != old_session
    assert new.get("/api/me", fresh).json()["sub"] == "demo"
    assert not stored(new, old_session)


def test_previous_keys_carry_sessions_through_a_rotation(
    deploy: DeploymentFactory, clock: ManualClock
) -> None:
    """With the old key in previous_keys the session works on; its record is sealed again with
    the new key at once, its tokens at their next refresh: then the old key can go."""
    old = deploy(secret_key=OLD)
    session = old.login()
    retire(old)
    rotated = deploy(secret_key=NEW, previous_keys=[OLD])
    assert rotated.get("/api/me", session).json()["sub"] == "demo"
    rotated.server.reset_stats()
    clock.advance(400)  # past the access token: the refresh saves the tokens anew
    assert rotated.get("/api/me", session).status_code == 200
    assert rotated.server.stats()["refreshes"] == 1
    retire(rotated)
    new_only = deploy(secret_key=NEW)
    assert new_only.get("/bff/user", session).json()["claims"]["sub"] == "demo"
    assert new_only.get("/api/me", session).json()["sub"] == "demo"
    assert new_only.server.stats()["refreshes"] == 1  # read from Redis, not refreshed again
    retire(new_only)
    old_only = deploy(secret_key=OLD)
    assert old_only.get("/bff/user", session).json() == {"authenticated": False}


def test_tokens_no_key_opens_end_the_session(deploy: DeploymentFactory) -> None:
    """The record was sealed again with the new key, but its tokens (not refreshed since) were
    not, and the old key was dropped too early: 401 login_required and the session deleted,
    not a 503 on every call."""
    session = with_tokens_under_the_old_key(deploy)
    new_only = deploy(secret_key=NEW)
    assert new_only.get("/bff/user", session).json()["authenticated"] is True
    response = new_only.get("/api/me", session)
    assert response.status_code == 401
    assert response.json() == {"error": "login_required"}
    assert not stored(new_only, session)


def test_a_login_started_before_the_rotation_finishes_after_it(
    deploy: DeploymentFactory,
) -> None:
    """The login cookie sealed with the old key opens with previous_keys."""
    old = deploy(secret_key=OLD)
    browser = Browser(old)
    start = browser.visit("/bff/login?returnTo=/back")
    callback = urlsplit(browser.sign_in(start.headers["location"]))
    retire(old)
    rotated = deploy(secret_key=NEW, previous_keys=[OLD])
    browser.http = rotated.http
    done = browser.visit(f"{callback.path}?{callback.query}")
    assert done.status_code == 302, done.text
    assert done.headers["location"] == "/back"
    assert rotated.get("/api/me", browser.cookies[rotated.bff.cookie_name]).status_code == 200


def test_a_logout_link_from_before_the_rotation_still_logs_out(
    deploy: DeploymentFactory,
) -> None:
    """The sid /user gave under the old key is honoured under the new one."""
    old = deploy(secret_key=OLD)
    session = old.login()
    link = old.get("/bff/user", session).json()["logout_url"]
    retire(old)
    rotated = deploy(secret_key=NEW, previous_keys=[OLD])
    response = rotated.http.get(link, headers=rotated.cookie(session))
    assert response.status_code == 302
    assert rotated.get("/api/me", session).status_code == 401


def test_previous_keys_must_be_a_list_of_keys(deploy: DeploymentFactory) -> None:
    """A single key given where a list belongs is refused, not read as its characters."""
    with pytest.raises(ValueError, match="previous_keys is a list"):
        deploy(secret_key=NEW, previous_keys=OLD)


def test_a_fastapi_route_with_unreadable_tokens_is_login_required(
    deploy: DeploymentFactory, oauth_server: ReferenceServer
) -> None:
    """Behind ``Depends(bff.user_client)`` too: tokens no key opens are the BFF's 401, and the
    session ends (not a 500 from a StoreError)."""
    session = with_tokens_under_the_old_key(deploy)
    app = fastapi.FastAPI()
    new_only = deploy(secret_key=NEW, app=app)
    new_only.bff.install(app)
    user_client = fastapi.Depends(new_only.bff.user_client)

    @app.get("/server-side/me")
    async def me(client: httpx.AsyncClient = user_client) -> Any:
        return (await client.get(f"{oauth_server.url}/api/me")).json()

    answer = new_only.http.get("/server-side/me", headers=new_only.cookie(session))
    assert answer.status_code == 401
    assert answer.json() == {"error": "login_required"}
    assert not stored(new_only, session)
