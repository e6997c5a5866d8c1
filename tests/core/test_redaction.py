"""No secret that was sent comes back in an error, whatever its length and however the server
echoes it (as sent, URL-encoded, JSON-escaped, inside Basic credentials): token refreshes,
logins and ``freshtoken logout``. The servers are real listeners that echo what they got."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st
from listener import Answer, Listener, Received, json_answer

from freshtoken import (
    AuthError,
    ClientCredentials,
    LoginFailed,
    ManualClock,
    OAuth2Refresher,
    RefreshFailed,
    TokenSet,
    json_login,
)
from freshtoken._core.policy import interpret_token_response
from freshtoken._logins.flows import client_credentials_login, password_login  # deprecated
from freshtoken.cli import main
from freshtoken.stores import FileStore


def echo(request: Received) -> Answer:
    """An error whose description repeats the request: its credentials, then its body."""
    said = f"auth {request.headers.get('authorization')} body {request.body.decode('latin-1')}"
    return json_answer({"error": "invalid_grant", "error_description": said}, 400)


def forms(secret: str) -> list[str]:
    return [secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]]


def error_from(
    call: Callable[[str], object], answer: Callable[[Received], Answer] = echo
) -> AuthError:
    with Listener(answer) as server, pytest.raises(AuthError) as caught:
        call(server.url + "/token")
    return caught.value


def shown(error: AuthError) -> str:
    return f"{error} {error!r} {getattr(error, 'description', '')} {getattr(error, 'error', '')}"


def assert_hidden(error: AuthError, *secrets: str) -> None:
    text = shown(error)
    leaked = [form for secret in secrets for form in forms(secret) if form in text]
    assert leaked == []


@pytest.mark.parametrize("password", ["hunt5", "p@ss w0rd&=+/ä", "tab\tand\nnewline"])
def test_password_login_never_shows_the_password(password: str) -> None:
    """A 5-character password, or one the form body had to URL-encode, is cut out."""
    error = error_from(
        lambda url: password_login(url, username="alice", password=password, client_id="app")
    )
    assert isinstance(error, LoginFailed)
    assert_hidden(error, password)
    assert "[redacted]" in str(error)


def test_a_secret_too_short_to_cut_out_withholds_the_description() -> None:
    """Replacing every 'pw' would mangle the text: the whole description is withheld instead."""
    error = error_from(
        lambda url: password_login(url, username="alice", password="pw", client_id="app")
    )
    assert isinstance(error, LoginFailed)
    assert error.description is not None
    assert error.description.startswith("[withheld")
    assert "pw" not in error.description


def test_basic_credentials_are_cut_out_in_their_base64_form() -> None:
    """client_secret_basic sends base64(id:secret): echoed, that is the secret too."""
    secret = "s3cr3t-value"
    basic = base64.b64encode(b"app:" + secret.encode()).decode()

    def refresh(url: str) -> object:
        refresher = OAuth2Refresher(url, client_id="app", client_secret=secret)
        return refresher.refresh(TokenSet("a-token", refresh_token="r-token"), ManualClock())

    error = error_from(refresh)
    assert_hidden(error, secret, basic, "r-token")


def test_a_refresh_token_echoed_from_the_form_is_cut_out() -> None:
    """The refresh token goes in a form body, URL-encoded: that form is cut out too."""
    current = TokenSet("access-token-1", refresh_token="r/+tok=en-secret")
    error = error_from(
        lambda url: OAuth2Refresher(url, client_id="app").refresh(current, ManualClock())
    )
    assert_hidden(error, "r/+tok=en-secret", "access-token-1")


def test_client_credentials_login_never_shows_the_posted_secret() -> None:
    """client_secret_post puts the secret in the form: URL-encoded, it is still cut out."""
    secret = "c+s/e=cret"
    error = error_from(
        lambda url: client_credentials_login(
            url, client_id="app", client_secret=secret, auth_method="client_secret_post"
        )
    )
    assert_hidden(error, secret)


def test_json_login_never_shows_a_json_escaped_password() -> None:
    """An in-house endpoint that echoes its raw JSON body shows the password JSON-escaped."""
    password = 'quo"te\\back'
    error = error_from(
        lambda url: json_login(url, {"username": "alice-user", "password": password})
    )
    assert_hidden(error, password)
    assert "[redacted]" in str(error)


def test_an_error_code_that_quotes_a_secret_is_cut_out_too() -> None:
    """A server may put anything in "error": an unknown code is server text like the rest."""

    def quoting(request: Received) -> Answer:
        return json_answer({"error": f"bad-{request.body.decode()}"}, 400)

    def acquire(url: str) -> object:
        refresher = ClientCredentials(
            url, client_id="app", client_secret="hunt5", auth_method="client_secret_post"
        )
        return refresher.refresh(None, ManualClock())

    error = error_from(acquire, quoting)
    assert_hidden(error, "hunt5")
    assert isinstance(error, RefreshFailed)
    assert error.error.startswith("bad-")
    assert "[redacted]" in error.error


secret_texts = st.text(min_size=1, max_size=12)


@given(
    secret=secret_texts,
    before=st.text(max_size=20),
    after=st.text(max_size=20),
    form=st.sampled_from([0, 1, 2, 3]),
)
def test_every_form_of_any_secret_is_cut_or_withheld(
    secret: str, before: str, after: str, form: int
) -> None:
    """Property: whatever the secret and the text around it, no piece of the description left
    between [redacted] marks holds any form of it (sans I/O: the body is built in memory)."""
    description = before + forms(secret)[form] + after
    body = json.dumps({"error": "invalid_request", "error_description": description}).encode()
    with pytest.raises(AuthError) as caught:
        interpret_token_response(400, body, secrets=[secret])
    text = getattr(caught.value, "description", None)
    assert text is not None
    if text.startswith("[withheld"):
        return
    for piece in text.split("[redacted]"):
        assert not any(form in piece for form in forms(secret) if form)


def test_logout_never_prints_the_token_a_revocation_endpoint_quotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`freshtoken logout`: the server's refusal is shown, the token it quotes is not."""
    refresh_token = "r-revoked-secret"

    def server(request: Received) -> Answer:
        if request.path.startswith("/.well-known/oauth-authorization-server"):
            base = "http://" + request.headers["host"]
            return json_answer(
                {
                    "issuer": base,
                    "token_endpoint": base + "/token",
                    "revocation_endpoint": base + "/revoke",
                }
            )
        said = f"cannot revoke {request.body.decode()}"
        return json_answer(
            {"error": f"token {refresh_token} unknown", "error_description": said}, 400
        )

    store_path = tmp_path / "tokens.json"
    monkeypatch.setenv("FRESHTOKEN_STORE", str(store_path))
    with Listener(server) as listener:
        FileStore(store_path).save_profile(
            TokenSet("access-secret", refresh_token=refresh_token),
            meta={"token_url": listener.url + "/token", "client_id": "app"},
        )
        code = main(["logout"])
        assert listener.received[-1].path == "/revoke"
    out, err = capsys.readouterr()
    assert code == 1
    assert "refused the revocation: HTTP 400" in err
    assert "[redacted]" in err
    for secret in (refresh_token, "access-secret"):
        assert not any(form in out + err for form in forms(secret))
    assert FileStore(store_path).load() is not None  # kept: the user may retry
