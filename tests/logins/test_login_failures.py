"""Failed logins are LoginFailed with the server's error, whatever the grant, sync or async."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest
from tools import refused_port

import freshtoken
from freshtoken import LoginFailed, SessionExpired
from freshtoken._logins import flows  # the free logins, deprecated in the public API
from freshtoken._oauth.http import unreachable
from freshtoken.server import Client, ReferenceServer
from freshtoken.testing import ServerFactory


def test_wrong_password(oauth_server: ReferenceServer) -> None:
    """invalid_grant with the server's description; the password is not repeated."""
    with pytest.raises(LoginFailed) as caught:
        flows.password_login(
            issuer=oauth_server.issuer,
            username="demo",
            password="not-the-password",
            client_id="demo-public",
        )
    assert caught.value.error == "invalid_grant"
    assert caught.value.description == "wrong username or password"
    assert caught.value.status == 400
    assert not isinstance(caught.value, SessionExpired)
    assert "not-the-password" not in str(caught.value)


@pytest.mark.anyio
async def test_async_twins(oauth_server: ReferenceServer) -> None:
    """apassword_login, aclient_credentials_login and ajson_login log in and fail alike."""
    tokens = await flows.apassword_login(
        oauth_server.token_url, username="alice", password="alice", client_id="demo-public"
    )
    assert tokens.refresh_token
    machine = await flows.aclient_credentials_login(
        issuer=oauth_server.issuer, client_id="demo", client_secret="demo-secret"
    )
    assert machine.access_token
    json_tokens = await freshtoken.ajson_login(
        oauth_server.login_url, {"username": "demo", "password": "demo"}
    )
    assert json_tokens.refresh_token
    with pytest.raises(LoginFailed) as caught:
        await freshtoken.ajson_login(oauth_server.login_url, {"username": "demo", "password": "x"})
    assert caught.value.error == "invalid_credentials"


def test_unsupported_grant_is_refused_before_the_password_is_sent(
    oauth_server_factory: ServerFactory,
) -> None:
    """A client without the password grant: unauthorized_client from the server."""
    server = oauth_server_factory(clients=(Client("web", None, frozenset({"authorization_code"})),))
    with pytest.raises(LoginFailed) as caught:
        flows.password_login(
            issuer=server.issuer, username="demo", password="demo", client_id="web"
        )
    assert caught.value.error == "unauthorized_client"


def test_a_server_that_does_not_offer_the_grant(oauth_server: ReferenceServer) -> None:
    """Metadata without the password grant: refused here, the password never leaves."""
    metadata = freshtoken.discover(oauth_server.issuer)
    raw = {**metadata.raw, "grant_types_supported": ["authorization_code", "refresh_token"]}
    certified = freshtoken.ServerMetadata.from_document(raw, issuer=metadata.issuer)
    with pytest.raises(LoginFailed) as caught:
        flows.password_login(
            issuer=certified, username="demo", password="demo", client_id="demo-public"
        )
    assert caught.value.error == "unsupported_grant_type"
    assert "does not offer the password grant" in str(caught.value)
    assert oauth_server.stats()["token_requests"] == 0


def test_unreachable_token_endpoint() -> None:
    """'cannot reach <url>: connection refused', as one LoginFailed."""
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}/oauth/token"
        with pytest.raises(LoginFailed) as caught:
            flows.password_login(url, username="a", password="b", client_id="c")
    assert caught.value.error == "network_error"
    assert f"cannot reach {url}: connection refused" in str(caught.value)


def test_server_errors_are_login_failures_too(oauth_server: ReferenceServer) -> None:
    """A 503 during login is LoginFailed (with status), not a RefreshFailed."""
    oauth_server.inject("status_503")
    with pytest.raises(LoginFailed) as caught:
        flows.client_credentials_login(
            oauth_server.token_url, client_id="demo", client_secret="demo-secret"
        )
    assert caught.value.error == "temporarily_unavailable"
    assert caught.value.status == 503


def test_token_url_or_issuer_not_both(oauth_server: ReferenceServer) -> None:
    """The endpoint is given one way."""
    with pytest.raises(ValueError, match="either a token_url or an issuer"):
        flows.password_login(
            oauth_server.token_url,
            issuer=oauth_server.issuer,
            username="demo",
            password="demo",
            client_id="demo",
        )


def test_refresher_password_login(oauth_server: ReferenceServer) -> None:
    """refresher.password_login uses the refresher's client and endpoint."""
    refresher = freshtoken.OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    assert refresher.password_login(username="demo", password="demo").refresh_token
    with pytest.raises(ValueError, match="from_issuer"):
        refresher.browser_login()


@pytest.mark.parametrize(
    ("error", "words"),
    [
        pytest.param(ConnectionRefusedError(111, "Connect call failed"), "connection refused"),
        pytest.param(socket.gaierror(-2, "Name or service not known"), "name or service not known"),
        pytest.param(ssl.SSLCertVerificationError(1, "[SSL] ..."), "TLS: handshake failed"),
    ],
)
def test_unreachable_says_why_in_the_systems_words(error: OSError, words: str) -> None:
    """Refused, unresolvable, untrusted: the reason under httpx's error, in plain words."""
    wrapped = httpx.ConnectError("wrapped")
    wrapped.__cause__ = error  # as httpx raises it: its error, caused by the system's
    failure = unreachable("https://id.example/token?x=secret", wrapped)
    assert failure.description == f"cannot reach https://id.example/token: {words}"
    assert "secret" not in str(failure)
