"""The agent's HTTP API over its unix socket: tokens, errors, status, and refreshes."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from agent_fixture import RunningAgent
from profile_fixture import LoggedIn, log_in

from freshtoken.agent._protocol import parse_instant, token_id


def body(response: Any) -> dict[str, Any]:
    document: dict[str, Any] = response.json()
    return document


def test_a_token_answer_has_the_access_token_expiry_and_scope_and_costs_no_network(
    running_agent: RunningAgent, logged_in: LoggedIn
) -> None:
    """GET /v1/token: access token, RFC 3339 expiry, scope, when to come back; no request to
    the token endpoint for a fresh token; no refresh token; not cacheable."""
    response = running_agent.get("/v1/token", profile="default")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    document = body(response)
    tokens = logged_in.tokens()
    assert set(document) == {
        "profile", "access_token", "token_type", "token_id", "expires_at", "expires_in",
        "issued_at", "refresh_at", "scope",
    }  # fmt: skip
    assert document["access_token"] == tokens.access_token
    assert document["token_id"] == token_id(tokens.access_token)
    assert document["scope"] == "read write"
    assert tokens.expires_at is not None
    assert parse_instant(document["expires_at"]) == pytest.approx(tokens.expires_at, abs=0.001)
    refresh_at = parse_instant(document["refresh_at"])
    assert refresh_at is not None
    assert refresh_at < tokens.expires_at
    assert tokens.refresh_token is not None
    assert tokens.refresh_token not in response.text
    assert logged_in.server.stats()["token_requests"] == 0


def test_the_profile_defaults_to_default(running_agent: RunningAgent) -> None:
    """No profile parameter: the 'default' profile (curl one-liners stay short)."""
    assert body(running_agent.get("/v1/token"))["profile"] == "default"


def test_an_expired_token_is_refreshed_once_and_saved(
    running_agent: RunningAgent, logged_in: LoggedIn
) -> None:
    """Past expiry the agent refreshes once, saves the rotated tokens, serves the new token."""
    before = body(running_agent.get("/v1/token"))["access_token"]
    logged_in.server.advance(301)
    answers = {body(running_agent.get("/v1/token"))["access_token"] for _ in range(5)}
    assert len(answers) == 1
    after = answers.pop()
    assert after != before
    assert logged_in.tokens().access_token == after
    stats = logged_in.server.stats()
    assert stats["refreshes"] == 1
    assert stats["reuse_detections"] == 0


def test_stale_names_a_rejected_token_and_refreshes_it_once(
    running_agent: RunningAgent, logged_in: LoggedIn
) -> None:
    """stale=<token_id of the current token>: one refresh; the same report again, or one for
    an older token, gets the current token without another refresh."""
    first = body(running_agent.get("/v1/token"))
    logged_in.server.advance(2)  # the agent does not force a refresh of a brand-new token
    second = body(running_agent.get("/v1/token", stale=first["token_id"]))
    assert second["access_token"] != first["access_token"]
    again = body(running_agent.get("/v1/token", stale=first["token_id"]))
    assert again["access_token"] == second["access_token"]
    assert logged_in.server.stats()["refreshes"] == 1
    status = body(running_agent.get("/v1/status"))
    assert status["counters"]["forced_refreshes"] == 1


def test_stale_does_not_refresh_a_token_just_obtained(
    running_agent: RunningAgent, logged_in: LoggedIn
) -> None:
    """A client rejecting every token cannot drive a refresh loop: a token younger than a
    second is served again."""
    logged_in.server.advance(301)
    fresh = body(running_agent.get("/v1/token"))
    again = body(running_agent.get("/v1/token", stale=fresh["token_id"]))
    assert again["access_token"] == fresh["access_token"]
    assert logged_in.server.stats()["refreshes"] == 1


def test_a_revoked_session_is_409_with_the_servers_reason(
    running_agent: RunningAgent, logged_in: LoggedIn
) -> None:
    """The token endpoint says invalid_grant: 409 session_expired, reason invalid_grant."""
    logged_in.server.revoke("demo")
    logged_in.server.advance(301)
    response = running_agent.get("/v1/token")
    assert response.status_code == 409
    document = body(response)
    assert document["error"] == "session_expired"
    assert document["reason"] == "invalid_grant"
    assert "log in again" in document["error_description"]


def test_a_failing_token_endpoint_is_502_with_retry_after(
    running_agent: RunningAgent, logged_in: LoggedIn
) -> None:
    """503 with Retry-After at the token endpoint: 502 refresh_failed, Retry-After passed on."""
    logged_in.server.inject("status_503", retry_after=7)
    logged_in.server.advance(301)
    response = running_agent.get("/v1/token")
    assert response.status_code == 502
    assert body(response)["error"] == "refresh_failed"
    assert response.headers["retry-after"] == "7"


def test_a_slow_refresh_answers_504_and_still_lands(
    running_agent: RunningAgent, logged_in: LoggedIn
) -> None:
    """wait=0.05 with a 0.5 s token endpoint: 504 refresh_pending; the refresh completes and
    the next request gets its token, with one refresh in all."""
    logged_in.server.set_latency(0.5)
    logged_in.server.advance(301)
    pending = running_agent.get("/v1/token", wait="0.05")
    assert pending.status_code == 504
    assert body(pending)["error"] == "refresh_pending"
    done = running_agent.get("/v1/token", wait="5")
    assert done.status_code == 200
    assert logged_in.server.stats()["refreshes"] == 1


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({"profile": "nobody"}, 404, "unknown_profile"),
        ({"profile": "../etc"}, 400, "invalid_request"),
        ({"stale": "not-a-token-id"}, 400, "invalid_request"),
        ({"wait": "-1"}, 400, "invalid_request"),
        ({"wait": "nan"}, 400, "invalid_request"),
    ],
)
def test_bad_token_requests_are_clear_errors(
    running_agent: RunningAgent, params: dict[str, str], status: int, error: str
) -> None:
    """Unknown or malformed profile, stale or wait: a JSON error naming the problem."""
    response = running_agent.get("/v1/token", **params)
    assert response.status_code == status
    assert body(response)["error"] == error
    assert body(response)["error_description"]


def test_unknown_routes_and_methods(running_agent: RunningAgent) -> None:
    """404 for an unknown path; 405 with Allow for a wrong method."""
    assert running_agent.get("/v2/token").status_code == 404
    response = running_agent.http.post("/v1/token")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


def test_status_and_health_tell_no_secret(running_agent: RunningAgent, logged_in: LoggedIn) -> None:
    """status: pid, socket, store, counters and per-profile expiry; no token of any kind."""
    running_agent.get("/v1/token")
    health = running_agent.get("/v1/health")
    assert body(health)["ok"] is True
    status = running_agent.get("/v1/status")
    document = body(status)
    assert document["socket"] == str(running_agent.socket_path)
    assert document["store"] == str(logged_in.store)
    assert document["counters"]["tokens_served"] == 1
    [profile] = document["profiles"]
    assert profile["profile"] == "default"
    assert profile["scope"] == "read write"
    tokens = logged_in.tokens()
    for secret in (tokens.access_token, tokens.refresh_token or "-", "demo-secret"):
        assert secret not in status.text


def test_a_new_login_is_picked_up_without_a_restart(
    running_agent: RunningAgent, logged_in: LoggedIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`freshtoken login` again (a new session): the agent serves the new session's token."""
    old = body(running_agent.get("/v1/token"))["access_token"]
    log_in(logged_in.server, logged_in.store, monkeypatch)
    new = logged_in.tokens().access_token
    assert new != old
    # The agent learns of the new file through the store's watcher (a stat once a second).
    deadline = time.monotonic() + 10
    while body(running_agent.get("/v1/token"))["access_token"] != new:
        assert time.monotonic() < deadline, "the agent kept serving the old session"
        time.sleep(0.05)
    assert logged_in.server.stats()["refreshes"] == 0


def test_nothing_the_agent_sends_holds_a_refresh_token(
    running_agent: RunningAgent, logged_in: LoggedIn
) -> None:
    """Every byte of every kind of answer (token, refresh, errors, status, refusals) is
    scanned for every refresh token of the session and the client secret."""
    refresh_tokens = {logged_in.tokens().refresh_token}
    sent = b""
    requests = [
        b"GET /v1/token?profile=default HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        b"GET /v1/token?profile=nobody HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        b"GET /nowhere HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        b"garbage\r\n\r\n",
    ]
    for request in requests:
        sent += running_agent.exchange(request)
    logged_in.server.advance(301)  # a refresh, then a forced one
    sent += running_agent.exchange(requests[0])
    refresh_tokens.add(logged_in.tokens().refresh_token)
    logged_in.server.advance(2)
    current = json.loads(running_agent.exchange(requests[0]).split(b"\r\n\r\n", 1)[1])
    stale = f"GET /v1/token?stale={current['token_id']} HTTP/1.1\r\nhost: a\r\n\r\n".encode()
    sent += running_agent.exchange(stale.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n"))
    refresh_tokens.add(logged_in.tokens().refresh_token)
    assert logged_in.server.stats()["refreshes"] == 2
    for secret in {*refresh_tokens, "demo-secret"}:
        assert secret is not None
        assert secret.encode() not in sent
