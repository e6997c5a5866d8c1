"""Where the token goes: only to allowed origins, never across a redirect to another origin,
never over plain HTTP to a host that is not loopback."""

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest

import freshtoken

from .conftest import Env

pytestmark = pytest.mark.not_bff(
    "a BFF sends the token only to its configured routes and follows no redirect: the "
    "browser names a route, never an origin (its path checks: tests/bff/test_proxy_refusals.py)"
)


def _redirect(env: Env, target: str) -> str:
    return env.url(f"/api/redirect?to={quote(target, safe='')}")


def test_token_is_attached_without_an_allow_list(env: Env) -> None:
    """With no ``origins`` every request of the client carries the token."""
    status, body = env.driver().get(env.url("/api/echo"))
    assert status == 200
    assert body["has_authorization"] is True
    assert body["sub"] == "demo"


def test_token_goes_only_to_allowed_origins(env: Env, other_origin: str) -> None:
    """With ``origins`` a request to any other origin goes out without the token."""
    client = env.driver(origins=[env.server.url])
    assert client.get(env.url("/api/echo"))[1]["has_authorization"] is True
    status, body = client.get(f"{other_origin}/echo")
    assert status == 200
    assert body["has_authorization"] is False


def test_allow_list_ignores_default_port_spelling(env: Env, other_origin: str) -> None:
    """Origins compare scheme, host and port: the same host on another port is elsewhere."""
    host_only = env.server.url.rsplit(":", 1)[0]  # http://127.0.0.1, i.e. port 80
    client = env.driver(origins=[host_only])
    assert client.get(env.url("/api/echo"))[1]["has_authorization"] is False


def test_same_origin_redirect_keeps_the_token(env: Env) -> None:
    """A redirect within the origin still authenticates (sanity check of the next test)."""
    status, body = env.driver().get(_redirect(env, env.url("/api/echo")))
    assert status == 200
    assert body["has_authorization"] is True


def test_401_after_a_redirect_within_the_origin_refreshes_and_retries(env: Env) -> None:
    """A redirect (an answer that needs no decision) to a target of the origin that rejects
    the token: one refresh, and the request arrives with the new token."""
    old = env.manager.get_tokens()
    env.server.fail_api(1)
    status, body = env.driver().get(_redirect(env, env.url("/api/me")))
    assert status == 200
    assert body["sub"] == "demo"
    assert env.stats()["refreshes"] == 1
    assert env.stats()["unauthorized_401"] == 1
    assert env.manager.stats.snapshot()["retries"] == 1
    assert env.manager.get_tokens().access_token != old.access_token


@pytest.mark.parametrize("allow_list", [False, True], ids=["any-origin", "both-allowed"])
def test_redirect_to_another_origin_never_carries_the_token(
    env: Env, other_origin: str, allow_list: bool
) -> None:
    """Even when both origins are allowed, a cross-origin redirect drops the token."""
    origins = [env.server.url, other_origin] if allow_list else None
    status, body = env.driver(origins=origins).get(_redirect(env, f"{other_origin}/echo"))
    assert status == 200
    assert body["path"] == "/echo"
    assert body["has_authorization"] is False


def test_401_from_a_redirect_target_elsewhere_is_not_ours(env: Env, other_origin: str) -> None:
    """Another origin's 401 after a redirect is answered as is: no refresh, no retry."""
    status, body = env.driver().get(_redirect(env, f"{other_origin}/401"))
    assert status == 401
    assert body["has_authorization"] is False
    assert env.stats()["refreshes"] == 0
    assert env.manager.stats.snapshot()["retries"] == 0


def test_plain_http_to_a_remote_host_is_refused(env: Env) -> None:
    """The token is not sent over plain HTTP except to loopback, unless explicitly allowed."""
    client = env.driver()
    with pytest.raises(freshtoken.InsecureTransportError) as caught:
        client.get("http://api.example.invalid/me")
    assert "allow_insecure_http" in str(caught.value)


def test_a_redirect_leaves_no_trace_on_later_requests(env: Env, other_origin: str) -> None:
    """After a cross-origin redirect, a direct request there follows the allow-list as usual."""
    client = env.driver()
    assert client.get(_redirect(env, f"{other_origin}/echo"))[1]["has_authorization"] is False
    assert client.get(f"{other_origin}/echo")[1]["has_authorization"] is True


def _origin_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "freshtoken"
        and record.levelno == logging.WARNING
        and "not in origins" in record.getMessage()
    ]


def test_a_request_sent_without_the_token_says_why_once_per_origin(
    env: Env, other_origin: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``localhost`` allowed, ``127.0.0.1`` asked: one WARNING per origin naming both."""
    port = env.server.url.rsplit(":", 1)[1]
    allowed = f"http://localhost:{port}"
    client = env.driver(origins=[allowed])
    with caplog.at_level(logging.WARNING, logger="freshtoken"):
        for _ in range(3):
            assert client.get(env.url("/api/echo"))[1]["has_authorization"] is False
        assert client.get(f"{other_origin}/echo")[1]["has_authorization"] is False
        assert client.get(f"{other_origin}/echo")[1]["has_authorization"] is False
    (first, second) = _origin_warnings(caplog)
    assert f"http://127.0.0.1:{port} without a token" in first
    assert f"not in origins ({allowed})" in first
    assert f"{other_origin} without a token" in second
    assert f"not in origins ({allowed})" in second


def test_requests_that_carry_the_token_log_nothing(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """Allowed origins, and clients without an allow-list, are silent."""
    with caplog.at_level(logging.WARNING, logger="freshtoken"):
        assert env.driver(origins=[env.server.url]).get(env.url("/api/me"))[0] == 200
        assert env.driver().get(env.url("/api/me"))[0] == 200
    assert _origin_warnings(caplog) == []
