"""Fault injection, as a client sees it over real HTTP."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from freshtoken.server import Faults, ReferenceServer, TokenFault
from freshtoken.testing import ServerFactory

LOGIN = {"grant_type": "password", "username": "demo", "password": "demo", "client_id": "demo"}
LOGIN["client_secret"] = "demo-secret"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        ("status_500", 500, "application/json"),
        ("status_503", 503, "application/json"),
        ("status_429", 429, "application/json"),
        ("html_502", 502, "text/html; charset=utf-8"),
    ],
)
def test_status_faults(
    oauth_server: ReferenceServer, http: httpx.Client, kind: str, status: int, content_type: str
) -> None:
    """The next token request fails as asked; the one after succeeds."""
    oauth_server.inject(kind)  # type: ignore[arg-type]
    failed = http.post(oauth_server.token_url, data=LOGIN)
    assert failed.status_code == status
    assert failed.headers["content-type"] == content_type
    assert http.post(oauth_server.token_url, data=LOGIN).status_code == 200
    assert oauth_server.stats()["faults_served"] == 1


def test_429_carries_retry_after(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """429 says when to come back: 1 s by default, or retry_after."""
    oauth_server.inject("status_429")
    oauth_server.inject("status_429", retry_after=7)
    oauth_server.inject("status_503", retry_after=3)
    assert http.post(oauth_server.token_url, data=LOGIN).headers["retry-after"] == "1"
    assert http.post(oauth_server.token_url, data=LOGIN).headers["retry-after"] == "7"
    assert http.post(oauth_server.token_url, data=LOGIN).headers["retry-after"] == "3"


def test_malformed_json_is_a_200_that_does_not_parse(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    oauth_server.inject("malformed_json")
    response = http.post(oauth_server.token_url, data=LOGIN)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_dropped_connection_is_a_remote_protocol_error(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """The socket closes with no answer; the same client then works again."""
    oauth_server.inject("drop_connection")
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(oauth_server.token_url, data=LOGIN)
    assert http.post(oauth_server.token_url, data=LOGIN).status_code == 200


def test_faults_apply_to_the_json_endpoints_too(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    oauth_server.inject("status_503", count=2)
    body = {"username": "demo", "password": "demo"}
    assert http.post(oauth_server.login_url, json=body).status_code == 503
    assert http.post(oauth_server.refresh_url, json={"refresh_token": "x"}).status_code == 503
    assert http.post(oauth_server.login_url, json=body).status_code == 200


def test_faults_do_not_touch_state(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """A failed refresh did not rotate: the same refresh token works afterwards."""
    tokens = oauth_server.login()
    oauth_server.inject("status_500")
    form = {**LOGIN, "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert http.post(oauth_server.token_url, data=form).status_code == 500
    assert http.post(oauth_server.token_url, data=form).status_code == 200
    assert oauth_server.stats()["rotations"] == 1


def test_latency_delays_token_answers(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    oauth_server.set_latency(0.2)
    started = time.monotonic()
    assert http.post(oauth_server.token_url, data=LOGIN).status_code == 200
    assert time.monotonic() - started >= 0.2
    oauth_server.set_latency(0)


def test_fail_api_answers_k_calls_with_invalid_token(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    token = oauth_server.login()["access_token"]
    oauth_server.fail_api(2)
    for _ in range(2):
        response = http.get(f"{oauth_server.api_url}/me", headers=bearer(token))
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert http.get(f"{oauth_server.api_url}/me", headers=bearer(token)).status_code == 200
    assert oauth_server.stats()["unauthorized_401"] == 2


def test_revoke_a_user(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """revoke(user) kills every session of that user and no other."""
    demo = [oauth_server.login() for _ in range(2)]
    alice = oauth_server.login("alice", "alice")
    assert oauth_server.revoke("demo") == 2
    for tokens in demo:
        assert (
            http.get(
                f"{oauth_server.api_url}/me", headers=bearer(tokens["access_token"])
            ).status_code
            == 401
        )
    assert (
        http.get(f"{oauth_server.api_url}/me", headers=bearer(alice["access_token"])).status_code
        == 200
    )
    assert oauth_server.stats()["family_revocations"] == 2


def test_faults_over_http(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """POST /admin/faults arms the same faults as the Python helpers."""
    tokens = oauth_server.login()
    admin = f"{oauth_server.url}/admin/faults"
    answer = http.post(admin, json={"kind": "status_429", "count": 2, "retry_after": 5})
    assert answer.json()["faults"]["token_failures"] == {"status_429": 2}
    assert http.post(oauth_server.token_url, data=LOGIN).headers["retry-after"] == "5"
    assert http.post(admin, json={"clear": True}).json()["faults"]["token_failures"] == {}

    assert http.post(admin, json={"fail_api": 1}).status_code == 200
    assert (
        http.get(f"{oauth_server.api_url}/me", headers=bearer(tokens["access_token"])).status_code
        == 401
    )
    http.post(admin, json={"expire_access_tokens": True})
    assert (
        http.get(f"{oauth_server.api_url}/me", headers=bearer(tokens["access_token"])).status_code
        == 401
    )
    assert http.post(admin, json={"revoke_user": "demo"}).json()["revoked_families"] == 1
    assert http.post(admin, json={"latency": 0}).json()["faults"]["latency"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "status_999"},
        {"kind": "status_500", "count": 0},
        {"kind": "status_500", "count": True},
        {"latency": -1},
        {"latency": "slow"},
        {"fail_api": 1.5},
        {"revoke_user": 3},
        {"surprise": 1},
    ],
)
def test_bad_fault_requests_are_400(
    oauth_server: ReferenceServer, http: httpx.Client, body: dict[str, object]
) -> None:
    response = http.post(f"{oauth_server.url}/admin/faults", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_faults_armed_at_start_up(oauth_server_factory: ServerFactory, http: httpx.Client) -> None:
    """ServerConfig(faults=...) arms faults before the first request."""
    server = oauth_server_factory(faults=Faults(token_failures=(TokenFault("status_503", 1),)))
    assert http.post(server.token_url, data=LOGIN).status_code == 503
    assert http.post(server.token_url, data=LOGIN).status_code == 200


def test_drop_after_processing_rotates_then_loses_the_answer(
    oauth_server_factory: ServerFactory, http: httpx.Client
) -> None:
    """The refresh is processed (rotated, counted), then the socket closes unanswered."""
    server = oauth_server_factory(reuse_grace=5)
    tokens = server.login()
    server.inject("drop_after_processing")
    form = {**LOGIN, "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(server.token_url, data=form)
    stats = server.stats()
    assert stats["rotations"] == 1
    assert stats["refreshes"] == 1
    assert stats["faults_served"] == 1
    # The answer that was lost: within the grace period the same refresh token replays it.
    replayed = http.post(server.token_url, data=form)
    assert replayed.status_code == 200
    assert replayed.json()["refresh_token"] != tokens["refresh_token"]
    assert server.stats()["grace_replays"] == 1
    assert server.stats()["rotations"] == 1


def test_drop_after_processing_without_grace_makes_the_retry_a_reuse(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """Without a grace period the server already retired the token: presenting it again is
    a reuse, and reuse detection revokes the session. That is the server's policy."""
    tokens = oauth_server.login()
    oauth_server.inject("drop_after_processing")
    form = {**LOGIN, "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(oauth_server.token_url, data=form)
    retried = http.post(oauth_server.token_url, data=form)
    assert retried.status_code == 400
    assert retried.json()["error"] == "invalid_grant"
    stats = oauth_server.stats()
    assert stats["reuse_detections"] == 1
    assert stats["family_revocations"] == 1


def test_drop_after_processing_applies_to_logins_and_errors(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """A login is processed (a session starts) and a refused grant is counted: both answers
    are lost all the same; the JSON endpoints behave alike."""
    oauth_server.inject("drop_after_processing", count=3)
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(oauth_server.token_url, data=LOGIN)
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(oauth_server.token_url, data={**LOGIN, "password": "wrong"})
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(oauth_server.login_url, json={"username": "demo", "password": "demo"})
    stats = oauth_server.stats()
    assert stats["logins"] == 2
    assert stats["invalid_grant"] == 1
    assert stats["faults_served"] == 3
    assert http.post(oauth_server.token_url, data=LOGIN).status_code == 200


def test_drop_after_processing_over_http(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    answer = http.post(f"{oauth_server.url}/admin/faults", json={"kind": "drop_after_processing"})
    assert answer.json()["faults"]["token_failures"] == {"drop_after_processing": 1}
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(oauth_server.token_url, data=LOGIN)
    assert oauth_server.stats()["logins"] == 1
