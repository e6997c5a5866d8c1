"""Refreshers against the reference server over real TCP, fault by fault."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from freshtoken import (
    ClientCredentials,
    InsecureTransportError,
    JSONRefresher,
    LoginFailed,
    ManualClock,
    OAuth2Refresher,
    RefreshFailed,
    RetryPolicy,
    SessionExpired,
    TokenManager,
    TokenSet,
    json_login,
)
from freshtoken._logins.flows import client_credentials_login, password_login  # deprecated
from freshtoken.httpx import TokenAuth
from freshtoken.server import ReferenceServer


def first_tokens(server: ReferenceServer, **login: Any) -> TokenSet:
    return TokenSet.from_response(server.login(**login), sent_at=server.clock())


@pytest.mark.parametrize(
    ("client_id", "secret", "method"),
    [
        ("demo", "demo-secret", "client_secret_basic"),
        ("demo", "demo-secret", "client_secret_post"),
        ("demo-public", None, None),
    ],
)
def test_oauth2_refresh_rotates_with_every_client_authentication(
    oauth_server: ReferenceServer, client_id: str, secret: str | None, method: Any
) -> None:
    current = first_tokens(oauth_server, client_id=client_id, client_secret=secret)
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id=client_id, client_secret=secret, auth_method=method
    )
    new = refresher.refresh(current, oauth_server.clock)
    assert new.access_token != current.access_token
    assert new.refresh_token not in (None, current.refresh_token)
    assert new.expires_at == pytest.approx(oauth_server.clock() + 300)
    assert new.scope == "read write"
    stats = oauth_server.stats()
    assert (stats["refreshes"], stats["reuse_detections"]) == (1, 0)


def test_a_refresh_may_narrow_the_scope(oauth_server: ReferenceServer) -> None:
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret", scope="read"
    )
    assert refresher.refresh(first_tokens(oauth_server), oauth_server.clock).scope == "read"


@pytest.mark.anyio
async def test_async_refresh_matches_the_sync_one(oauth_server: ReferenceServer) -> None:
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    new = await refresher.arefresh(first_tokens(oauth_server), oauth_server.clock)
    assert new.refresh_token is not None
    assert oauth_server.stats()["refreshes"] == 1


def test_json_endpoints_of_in_house_apis(oauth_server: ReferenceServer) -> None:
    current = json_login(
        oauth_server.url + "/auth/login",
        {"username": "demo", "password": "demo"},
        clock=oauth_server.clock,
    )
    new = JSONRefresher(oauth_server.url + "/auth/refresh").refresh(current, oauth_server.clock)
    assert new.access_token != current.access_token
    assert new.refresh_token != current.refresh_token
    assert new.expires_at is not None


def test_client_credentials_reacquire_without_a_refresh_token(
    oauth_server: ReferenceServer,
) -> None:
    source = ClientCredentials(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    manager = TokenManager(source, clock=oauth_server.clock)
    first = manager.get_tokens()  # nothing stored: acquired
    assert first.refresh_token is None
    oauth_server.advance(301)
    assert manager.get_tokens().access_token != first.access_token
    assert oauth_server.stats()["token_requests_by_grant"]["client_credentials"] == 2
    token = client_credentials_login(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    assert token.access_token


def test_password_login_and_a_wrong_password(oauth_server: ReferenceServer) -> None:
    """A wrong password is a failed login (not an expired session), with the server's code."""
    tokens = password_login(
        oauth_server.token_url,
        username="demo",
        password="demo",
        client_id="demo",
        client_secret="demo-secret",
    )
    assert tokens.refresh_token
    with pytest.raises(LoginFailed) as caught:
        password_login(
            oauth_server.token_url, username="demo", password="nope", client_id="demo-public"
        )
    assert caught.value.error == "invalid_grant"
    assert "nope" not in str(caught.value)


def test_revoked_family_ends_the_session_with_the_server_error(
    oauth_server: ReferenceServer,
) -> None:
    current = first_tokens(oauth_server)
    oauth_server.revoke("demo")
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    with pytest.raises(SessionExpired) as caught:
        refresher.refresh(current, oauth_server.clock)
    assert caught.value.error == "invalid_grant"
    assert caught.value.status == 400
    assert str(current.refresh_token) not in str(caught.value)


def test_wrong_client_secret_ends_the_session(oauth_server: ReferenceServer) -> None:
    refresher = OAuth2Refresher(oauth_server.token_url, client_id="demo", client_secret="bad")
    with pytest.raises(SessionExpired) as caught:
        refresher.refresh(first_tokens(oauth_server), oauth_server.clock)
    assert (caught.value.error, caught.value.status) == ("invalid_client", 401)


@pytest.mark.parametrize(
    ("fault", "error", "status", "lost"),
    [
        ("status_500", "server_error", 500, False),
        ("status_503", "temporarily_unavailable", 503, False),
        ("status_429", "slow_down", 429, False),
        # A 2xx may have rotated the refresh token: its unreadable answer counts as lost.
        ("malformed_json", "malformed_response", 200, True),
        ("html_502", "server_error", 502, False),
        ("drop_connection", "network_error", None, True),
    ],
)
def test_each_token_endpoint_fault_is_a_transient_failure(
    oauth_server: ReferenceServer, fault: Any, error: str, status: int | None, lost: bool
) -> None:
    current = first_tokens(oauth_server)
    oauth_server.inject(fault, 1, retry_after=2)
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    with pytest.raises(RefreshFailed) as caught:
        refresher.refresh(current, oauth_server.clock)
    assert (caught.value.error, caught.value.status, caught.value.answer_lost) == (
        error,
        status,
        lost,
    )
    if fault == "status_429":
        assert caught.value.retry_after == 2
    # The refresh token was not consumed: the same one works now.
    assert refresher.refresh(current, oauth_server.clock).access_token


def test_a_manager_rides_out_a_burst_of_faults(oauth_server: ReferenceServer) -> None:
    manager = TokenManager(
        OAuth2Refresher(oauth_server.token_url, client_id="demo", client_secret="demo-secret"),
        clock=oauth_server.clock,
        retry=RetryPolicy(attempts=4, initial=0.001, maximum=0.01),
    )
    manager.set_tokens(first_tokens(oauth_server))
    for fault in ("status_503", "drop_connection", "malformed_json"):
        oauth_server.inject(fault, 1)
    oauth_server.advance(301)
    assert manager.get_tokens().refresh_token
    stats = oauth_server.stats()
    assert (stats["refreshes"], stats["reuse_detections"]) == (1, 0)


def test_plain_http_token_endpoints_are_refused_off_loopback() -> None:
    refresher = OAuth2Refresher("http://auth.example.com/token", client_id="c")
    with pytest.raises(InsecureTransportError):
        refresher.refresh(TokenSet("a", refresh_token="r"), ManualClock())


class RecordingTokenEndpoint:
    """A raw TCP token endpoint that records the one request it gets and answers tokens."""

    def __init__(self, answer: bytes | None = None, access_token: str = "new") -> None:
        token = json.dumps({"access_token": access_token, "expires_in": 60}).encode()
        self.answer = answer or (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(token)}\r\n\r\n".encode()
            + token
        )
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/token"
        self.request = b""
        self.thread = threading.Thread(target=self.serve_once, daemon=True)
        self.thread.start()

    def serve_once(self) -> None:
        connection, _ = self.sock.accept()
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            while len(body) < length:
                body += connection.recv(65536)
            self.request = head + b"\r\n\r\n" + body
            connection.sendall(self.answer)


@pytest.fixture
def recording_endpoint(oauth_server: ReferenceServer) -> Iterator[RecordingTokenEndpoint]:
    """Answers with a token the reference server accepts, so the caller's request succeeds."""
    endpoint = RecordingTokenEndpoint(access_token=oauth_server.login()["access_token"])
    yield endpoint
    endpoint.sock.close()


def test_nothing_from_the_callers_request_reaches_the_token_endpoint(
    oauth_server: ReferenceServer, recording_endpoint: RecordingTokenEndpoint
) -> None:
    manager = TokenManager(
        OAuth2Refresher(recording_endpoint.url, client_id="demo-public"),
        clock=oauth_server.clock,
    )
    manager.set_tokens(TokenSet("old", refresh_token="r-old", expires_at=0.0))
    with httpx.Client(auth=TokenAuth(manager)) as client:
        response = client.post(
            oauth_server.url + "/api/echo",
            params={"caller_param": "p1"},
            headers={"X-Caller-Header": "h1", "Cookie": "session=c1"},
            content=b"caller-body-b1",
        )
    assert response.status_code == 200
    recording_endpoint.thread.join(5)
    sent = recording_endpoint.request
    assert b"grant_type=refresh_token" in sent
    assert b"refresh_token=r-old" in sent
    for leaked in (b"p1", b"h1", b"c1", b"b1", b"X-Caller-Header", b"Authorization"):
        assert leaked not in sent


def test_token_endpoint_redirects_are_not_followed(oauth_server: ReferenceServer) -> None:
    """Credentials stay with the configured URL: a 307 (which would re-POST them) is a failure."""
    redirect = RecordingTokenEndpoint(
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
        + oauth_server.token_url.encode()
        + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    try:
        refresher = OAuth2Refresher(redirect.url, client_id="demo", client_secret="demo-secret")
        with pytest.raises(RefreshFailed) as caught:
            refresher.refresh(first_tokens(oauth_server), oauth_server.clock)
    finally:
        redirect.sock.close()
    assert caught.value.status == 307
    assert oauth_server.stats()["token_requests_by_grant"]["refresh_token"] == 0


def test_a_server_echoing_secrets_in_its_error_never_gets_them_into_ours() -> None:
    """A hostile or careless server may quote the refresh token or the client secret."""
    echo = json.dumps(
        {
            "error": "invalid_grant",
            "error_description": "refresh token r-secret-1 rejected for client secret c-secret-2",
        }
    ).encode()
    endpoint = RecordingTokenEndpoint(
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(echo)}\r\n\r\n".encode()
        + echo
    )
    try:
        refresher = OAuth2Refresher(endpoint.url, client_id="app", client_secret="c-secret-2")
        with pytest.raises(SessionExpired) as caught:
            refresher.refresh(TokenSet("access-1", refresh_token="r-secret-1"), ManualClock())
    finally:
        endpoint.sock.close()
    text = f"{caught.value} {caught.value!r} {caught.value.description}"
    assert "r-secret-1" not in text
    assert "c-secret-2" not in text
    assert "[redacted]" in text
    assert caught.value.error == "invalid_grant"
