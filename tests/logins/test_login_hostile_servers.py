"""Logins against a hostile token endpoint (a small server over real TCP that answers what
the test says) and a loopback listener whose every connection slot is held by silent
clients."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

import freshtoken
from freshtoken import LoginFailed, TokenSet
from freshtoken._logins import loopback
from freshtoken.server import ReferenceServer

PASSWORD = "hunter2-the-password"
SECRET = "s3cret-of-the-client"


class Hostile:
    """A token endpoint that answers (status, headers, body) and counts its requests."""

    def __init__(self) -> None:
        self.answer: tuple[int, dict[str, str], bytes] = (200, {}, b"{}")
        self.requests: list[bytes] = []
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                hostile.requests.append(self.rfile.read(length))
                status, headers, body = hostile.answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # a client that stops reading
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    server = Hostile()
    yield server
    server.close()


def _login(url: str) -> TokenSet:
    return freshtoken.password_login(
        url,
        username="demo",
        password=PASSWORD,
        client_id="app",
        client_secret=SECRET,
        auth_method="client_secret_post",
    )


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


JSON = {"Content-Type": "application/json"}
TOKEN = {"access_token": "at", "token_type": "Bearer"}


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, b"<html>signed in</html>", "malformed_response"),
        (200, _json([TOKEN]), "malformed_response"),
        (200, _json({"token_type": "Bearer"}), "malformed_response"),
        (200, _json({**TOKEN, "token_type": "mac"}), "unsupported_token_type"),
        (200, _json({**TOKEN, "expires_in": "soon"}), "malformed_response"),
        (200, _json({**TOKEN, "access_token": f"echo {PASSWORD}"}), "malformed_response"),
        (400, _json({"error": "invalid_grant", "error_description": f"no {PASSWORD}"}), None),
        (401, _json({"error": "invalid_client", "error_description": f"bad {SECRET}"}), None),
        (500, b"Traceback: password=" + PASSWORD.encode(), None),
    ],
)
def test_a_hostile_answer_is_a_login_failure_without_secrets(
    hostile: Hostile, status: int, body: bytes, error: str | None
) -> None:
    """Whatever the token endpoint answers, the login raises LoginFailed, and neither the
    password nor the client secret is in its text or repr (even when the server echoes them)."""
    hostile.answer = (status, JSON, body)
    with pytest.raises(LoginFailed) as caught:
        _login(hostile.url)
    if error is not None:
        assert caught.value.error == error
    for text in (str(caught.value), repr(caught.value), caught.value.description or ""):
        assert PASSWORD not in text
        assert SECRET not in text
    assert len(hostile.requests) == 1


@pytest.mark.parametrize("expires_in", [-5, 10**400, "3600"])
def test_odd_lifetimes_are_read_or_refused_never_raised_raw(
    hostile: Hostile, expires_in: object
) -> None:
    """expires_in negative, of 400 digits, or a string of digits: tokens or LoginFailed."""
    body = json.dumps({**TOKEN, "expires_in": expires_in}).encode()
    hostile.answer = (200, JSON, body)
    errors: list[str] = []
    try:
        assert _login(hostile.url).access_token == "at"
    except LoginFailed as failure:
        errors.append(failure.error)
    assert errors in ([], ["malformed_response"])


def test_a_redirect_from_the_token_endpoint_is_never_followed(hostile: Hostile) -> None:
    """A 302 to another server: the password goes nowhere else, the login fails."""
    elsewhere = Hostile()
    try:
        hostile.answer = (302, {"Location": elsewhere.url}, b"")
        with pytest.raises(LoginFailed):
            _login(hostile.url)
        assert elsewhere.requests == []
    finally:
        elsewhere.close()


def test_an_answer_of_50_megabytes_is_cut_off(hostile: Hostile) -> None:
    """A 50 MB answer is refused as too long, read no further than the cap."""
    hostile.answer = (200, JSON, b'{"access_token": "' + b"a" * (50 << 20) + b'"}')
    with pytest.raises(LoginFailed) as caught:
        _login(hostile.url)
    assert caught.value.error == "invalid_response"
    assert "bytes long" in str(caught.value)


# -- the loopback listener under a flood of silent connections -------------------------------


def test_silent_connections_holding_every_slot_do_not_lock_out_the_browser(
    oauth_server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAX_CONNECTIONS clients connect and say nothing (their timeout is an hour here): the
    real browser's callback is still served, at once, and the login succeeds."""
    monkeypatch.setattr(loopback, "CONNECTION_TIMEOUT", 3600.0)
    silent: list[socket.socket] = []

    def flooded_browser(url: str) -> object:
        port = urlsplit(parse_qs(urlsplit(url).query)["redirect_uri"][0]).port or 0
        for _ in range(loopback.MAX_CONNECTIONS + 4):
            silent.append(socket.create_connection(("127.0.0.1", port)))
        return oauth_server.browser()(url)

    try:
        tokens = freshtoken.browser_login(
            oauth_server.issuer, client_id="demo-public", open_browser=flooded_browser, timeout=20
        )
    finally:
        for connection in silent:
            connection.close()
    assert tokens.access_token
