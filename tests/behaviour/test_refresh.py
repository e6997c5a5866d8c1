"""When a refresh happens: before expiry (proactive), on a 401 (reactive, one retry), not for
a stale 401, not for a 403."""

from __future__ import annotations

import pytest

from freshtoken.server import ServerState

from .conftest import Env

pytestmark = pytest.mark.dpop

ACCESS_TTL = 300.0  # the reference server's default; refresh window min(30, 0.25 * 300) = 30


def test_fresh_token_is_used_as_is(env: Env) -> None:
    """No refresh while the token is fresh."""
    client = env.driver()
    for _ in range(3):
        assert client.get(env.url("/api/me"))[0] == 200
    assert env.stats()["refreshes"] == 0
    assert env.stats()["api_ok"] == 3


@pytest.mark.every_store
def test_proactive_refresh_inside_the_window(env: Env) -> None:
    """In the refresh window the token is refreshed in the background while the request goes
    out with the old one: no 401 is ever served, nobody waits."""
    client = env.driver()
    old = env.manager.get_tokens()
    env.server.advance(ACCESS_TTL - 10)
    status, body = client.get(env.url("/api/me"))
    assert status == 200
    assert body["sub"] == "demo"
    assert env.manager.wait_idle(10)
    assert env.stats()["refreshes"] == 1
    assert env.stats()["unauthorized_401"] == 0
    assert env.manager.get_tokens().access_token != old.access_token
    assert client.get(env.url("/api/me"))[0] == 200
    assert env.stats()["refreshes"] == 1


@pytest.mark.every_store
def test_expired_token_is_refreshed_before_sending(env: Env) -> None:
    """Past expiry the caller waits for the refresh; the server never sees the dead token."""
    env.server.advance(ACCESS_TTL + 1)
    assert env.driver().get(env.url("/api/me"))[0] == 200
    assert env.stats()["refreshes"] == 1
    assert env.stats()["unauthorized_401"] == 0


@pytest.mark.every_store
def test_401_refreshes_and_retries_once(env: Env) -> None:
    """One 401: one refresh, one retry, the caller sees success."""
    env.server.fail_api(1)
    status, body = env.driver().get(env.url("/api/me"))
    assert status == 200
    assert body["sub"] == "demo"
    assert env.stats()["refreshes"] == 1
    assert env.stats()["unauthorized_401"] == 1
    assert env.manager.stats.snapshot()["retries"] == 1


def test_second_401_reaches_the_caller(env: Env) -> None:
    """Two 401s in a row: exactly one retry, then the caller gets the second 401."""
    env.server.fail_api(2)
    status, body = env.driver().get(env.url("/api/me"))
    assert status == 401
    assert body["error"] == "invalid_token"
    assert env.stats()["refreshes"] == 1
    assert env.stats()["unauthorized_401"] == 2
    assert env.manager.stats.snapshot()["retries"] == 1
    assert env.driver().get(env.url("/api/me"))[0] == 200  # the fault is spent


def test_401_for_an_older_token_retries_without_refreshing(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 401 for a token that was replaced meanwhile is retried with the current one."""
    sent = env.manager.get_tokens()
    newer = env.login()  # as if another client had refreshed while the request was in flight
    state = env.server.state
    authenticate = state.authenticate

    def replaced_in_flight(token: str, required_scope: str | None) -> object:
        if token == sent.access_token:
            env.manager.set_tokens(newer)
            state.fail_api(1)
        return authenticate(token, required_scope)

    monkeypatch.setattr(state, "authenticate", replaced_in_flight)
    status, body = env.driver().get(env.url("/api/echo"))
    assert status == 200
    assert body["has_authorization"] is True
    assert env.stats()["unauthorized_401"] == 1
    assert env.stats()["refreshes"] == 0
    assert env.manager.stats.snapshot()["refreshes"] == 0
    assert env.manager.stats.snapshot()["retries"] == 1
    assert isinstance(state, ServerState)


def test_a_retry_whose_token_was_replaced_in_flight_goes_again_with_the_newest(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry's token is rejected after it was replaced (the retry waited in a pool until
    its token expired, and a newer one landed meanwhile): a third send with the newest token,
    with no refresh for it. The 401 never reaches the caller."""
    first = env.manager.get_tokens()
    newer = env.login()  # what lands while the retry is in flight
    state = env.server.state
    authenticate = state.authenticate
    presented: list[str] = []

    def expired_in_the_pool(token: str, required_scope: str | None) -> object:
        presented.append(token)
        if token not in (first.access_token, newer.access_token):  # the refresh's token
            env.manager.set_tokens(newer)
            state.fail_api(1)
        return authenticate(token, required_scope)

    monkeypatch.setattr(state, "authenticate", expired_in_the_pool)
    env.server.fail_api(1)  # the first attempt's token is rejected: one refresh
    status, body = env.driver().get(env.url("/api/echo"))
    assert status == 200
    assert body["has_authorization"] is True
    assert len(presented) == 3
    assert presented[0] == first.access_token
    assert presented[2] == newer.access_token
    assert env.stats()["unauthorized_401"] == 2
    assert env.stats()["refreshes"] == 1
    assert env.manager.stats.snapshot()["refreshes"] == 1
    assert env.manager.stats.snapshot()["retries"] == 2


def test_403_insufficient_scope_is_not_refreshed(env: Env) -> None:
    """A 403 insufficient_scope is the caller's answer: no refresh, no retry."""
    status, body = env.driver().get(env.url("/api/admin"))
    assert status == 403
    assert body["error"] == "insufficient_scope"
    assert env.stats()["refreshes"] == 0
    assert env.manager.stats.snapshot()["retries"] == 0
