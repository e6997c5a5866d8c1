"""The authorization code flow at the server: login form, PKCE, redirects, codes, id_tokens."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest

from freshtoken.server import Browser, BrowserError, Client, ReferenceServer
from freshtoken.server._browser import submit_form
from freshtoken.testing import ServerFactory

REDIRECT = "http://127.0.0.1:53682/callback"


def challenge_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(server: ReferenceServer, **params: str) -> str:
    query = {
        "response_type": "code",
        "client_id": "demo-public",
        "redirect_uri": REDIRECT,
        "state": "st4te",
        **params,
    }
    if "code_challenge" in params:
        query.setdefault("code_challenge_method", "S256")
    return f"{server.authorize_url}?{urlencode({k: v for k, v in query.items() if v})}"


def answer_of(location: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


def sign_in(server: ReferenceServer, url: str, **browser: Any) -> dict[str, str]:
    with httpx.Client(verify=False) as http:
        location = Browser(**browser).sign_in(http, url)
    return answer_of(location)


def redeem(
    http: httpx.Client, server: ReferenceServer, code: str, verifier: str | None, **extra: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "demo-public",
        **extra,
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    return http.post(server.token_url, data=form)


@pytest.fixture
def verifier() -> str:
    return secrets.token_urlsafe(48)


def test_login_form_then_code_then_tokens(
    oauth_server: ReferenceServer, http: httpx.Client, verifier: str
) -> None:
    """The form signs the user in; the redirect carries code, state and iss; PKCE redeems it."""
    url = authorize_url(oauth_server, code_challenge=challenge_of(verifier), scope="openid read")
    page = http.get(url)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.startswith("<!DOCTYPE html>")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    answer = sign_in(oauth_server, url, username="alice", password="alice")
    assert answer["state"] == "st4te"
    assert answer["iss"] == oauth_server.issuer
    response = redeem(http, oauth_server, answer["code"], verifier, code_challenge_method="S256")
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["scope"] == "openid read"
    assert tokens["refresh_token"]
    me = http.get(
        f"{oauth_server.api_url}/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["username"] == "alice"
    assert oauth_server.stats()["authorization_codes"] == 1


def test_id_token_is_signed_with_the_jwks_key_and_carries_the_nonce(
    oauth_server: ReferenceServer, http: httpx.Client, verifier: str
) -> None:
    """With scope openid the token response has an id_token for this client, nonce included."""
    url = authorize_url(
        oauth_server, code_challenge=challenge_of(verifier), scope="openid", nonce="n-0S6"
    )
    answer = sign_in(oauth_server, url)
    tokens = redeem(http, oauth_server, answer["code"], verifier).json()
    jwks = jwt.PyJWKSet.from_dict(http.get(oauth_server.jwks_url).json())
    claims = jwt.decode(
        tokens["id_token"],
        jwks.keys[0],
        algorithms=["ES256"],
        audience="demo-public",
        issuer=oauth_server.issuer,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["sub"] == "demo"
    assert claims["nonce"] == "n-0S6"
    assert claims["auth_time"] <= claims["iat"]
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    # Asking for openid alone still grants the user's API scopes.
    assert tokens["scope"] == "openid read write"
    refreshed = oauth_server.refresh(
        tokens["refresh_token"], client_id="demo-public", client_secret=None
    )
    refreshed_claims = jwt.decode(refreshed["id_token"], options={"verify_signature": False})
    assert "nonce" not in refreshed_claims  # OpenID Connect Core 12.2
    assert refreshed_claims["auth_time"] == claims["auth_time"]


def test_a_replayed_code_revokes_what_it_issued(
    oauth_server: ReferenceServer, http: httpx.Client, verifier: str
) -> None:
    """A code is single use; presenting it again revokes the tokens of its first redemption."""
    answer = sign_in(
        oauth_server, authorize_url(oauth_server, code_challenge=challenge_of(verifier))
    )
    first = redeem(http, oauth_server, answer["code"], verifier).json()
    replay = redeem(http, oauth_server, answer["code"], verifier)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert "revoked" in replay.json()["error_description"]
    me = http.get(
        f"{oauth_server.api_url}/me", headers={"Authorization": f"Bearer {first['access_token']}"}
    )
    assert me.status_code == 401
    refresh = http.post(
        oauth_server.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": "demo-public",
        },
    )
    assert refresh.json()["error"] == "invalid_grant"
    assert oauth_server.stats()["code_replays"] == 1


@pytest.mark.parametrize(
    ("sent_verifier", "description"),
    [
        pytest.param(None, "code_verifier is required", id="missing"),
        pytest.param("x" * 43, "does not match", id="wrong"),
        pytest.param("short", "code_verifier is required", id="malformed"),
    ],
)
def test_pkce_verifier_must_match(
    oauth_server: ReferenceServer,
    http: httpx.Client,
    verifier: str,
    sent_verifier: str | None,
    description: str,
) -> None:
    """A code bound to a challenge is redeemed only with the matching verifier."""
    answer = sign_in(
        oauth_server, authorize_url(oauth_server, code_challenge=challenge_of(verifier))
    )
    response = redeem(http, oauth_server, answer["code"], sent_verifier)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert description in response.json()["error_description"]


def test_a_confidential_client_without_pkce_cannot_add_a_verifier_later(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """No challenge at authorization: a verifier at redemption is refused (no downgrade)."""
    answer = sign_in(oauth_server, authorize_url(oauth_server, client_id="demo"))
    response = redeem(
        http, oauth_server, answer["code"], "v" * 43, client_id="demo", client_secret="demo-secret"
    )
    assert response.json()["error"] == "invalid_grant"


def test_a_confidential_client_may_skip_pkce(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """PKCE is required of public clients only; a confidential one authenticates instead."""
    answer = sign_in(oauth_server, authorize_url(oauth_server, client_id="demo"))
    response = redeem(
        http, oauth_server, answer["code"], None, client_id="demo", client_secret="demo-secret"
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("params", "error"),
    [
        pytest.param({}, "invalid_request", id="public-without-pkce"),
        pytest.param(
            {"code_challenge": "a" * 43, "code_challenge_method": "plain"},
            "invalid_request",
            id="plain",
        ),
        pytest.param({"code_challenge": "short"}, "invalid_request", id="bad-challenge"),
        pytest.param(
            {"code_challenge": "a" * 43, "code_challenge_method": "S256", "response_type": "token"},
            "unsupported_response_type",
            id="implicit",
        ),
        pytest.param(
            {"code_challenge": "a" * 43, "code_challenge_method": "S256", "scope": "admin"},
            "invalid_scope",
            id="scope-beyond-the-user",
        ),
        pytest.param(
            {"code_challenge": "a" * 43, "code_challenge_method": "S256", "prompt": "none"},
            "login_required",
            id="prompt-none",
        ),
    ],
)
def test_refusals_go_back_to_the_client(
    oauth_server: ReferenceServer, http: httpx.Client, params: dict[str, str], error: str
) -> None:
    """With a valid client and redirect URI, a refusal redirects with error, state and iss."""
    url = authorize_url(oauth_server, **params)
    response = http.get(url)
    if response.status_code == 200:  # invalid_scope is known only once the user is known
        answer = sign_in(oauth_server, url)
    else:
        assert response.status_code == 303
        answer = answer_of(response.headers["location"])
    assert answer["error"] == error
    assert answer["state"] == "st4te"
    assert answer["iss"] == oauth_server.issuer
    assert "code" not in answer


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"client_id": "nobody"}, id="unknown-client"),
        pytest.param({"redirect_uri": "https://evil.example/callback"}, id="foreign-redirect"),
        pytest.param({"redirect_uri": "http://127.0.0.1:1/other"}, id="other-path"),
        pytest.param({"redirect_uri": "http://user@127.0.0.1:1/callback"}, id="userinfo"),
        pytest.param({"redirect_uri": "http://127.0.0.1:99999/callback"}, id="bad-port"),
        pytest.param({"redirect_uri": "http://127.0.0.1:1/callback#x"}, id="fragment"),
        pytest.param({"redirect_uri": ""}, id="missing-redirect"),
    ],
)
def test_untrusted_redirects_are_not_followed(
    oauth_server: ReferenceServer, http: httpx.Client, params: dict[str, str]
) -> None:
    """An unknown client or unregistered redirect URI gets an error page, never a redirect."""
    response = http.get(authorize_url(oauth_server, code_challenge="a" * 43, **params))
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "Sign-in failed" in response.text


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://127.0.0.1:1/callback", "http://[::1]:65535/callback", "http://localhost:8/callback"],
)
def test_any_loopback_port_is_allowed(
    oauth_server: ReferenceServer, http: httpx.Client, redirect_uri: str
) -> None:
    """RFC 8252 section 7.3: the registered loopback URI matches whatever port is used."""
    url = authorize_url(oauth_server, redirect_uri=redirect_uri, code_challenge="a" * 43)
    assert http.get(url).status_code == 200


def test_deny_redirects_access_denied(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """Pressing Deny sends the client access_denied with its state."""
    url = authorize_url(oauth_server, code_challenge="a" * 43, code_challenge_method="S256")
    answer = sign_in(oauth_server, url, approve=False)
    assert answer["error"] == "access_denied"
    assert answer["state"] == "st4te"
    assert oauth_server.stats()["consents_denied"] == 1


def test_wrong_password_shows_the_form_again(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """A wrong password keeps the request alive: the form comes back with the error."""
    url = authorize_url(oauth_server, code_challenge="a" * 43, code_challenge_method="S256")
    with pytest.raises(BrowserError, match="HTTP 401: wrong username or password"):
        sign_in(oauth_server, url, password="nope")
    page = http.get(url)
    action, data = submit_form(page, {"username": "demo", "password": "nope"}, "approve")
    again = http.post(action, data=data)
    assert again.status_code == 401
    retry_action, retry = submit_form(again, {"password": "demo"}, "approve")
    assert retry["request_id"] == data["request_id"]
    assert http.post(retry_action, data=retry).status_code == 303


def test_a_form_answers_once(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """Submitting the same login form twice gets an error page, not a second code."""
    url = authorize_url(oauth_server, code_challenge="a" * 43, code_challenge_method="S256")
    action, data = submit_form(http.get(url), {"password": "demo"}, "approve")
    assert http.post(action, data=data).status_code == 303
    second = http.post(action, data=data)
    assert second.status_code == 400
    assert "expired" in second.text


def test_codes_expire(oauth_server: ReferenceServer, http: httpx.Client, verifier: str) -> None:
    """A code older than code_ttl is refused."""
    answer = sign_in(
        oauth_server, authorize_url(oauth_server, code_challenge=challenge_of(verifier))
    )
    oauth_server.advance(oauth_server.config.code_ttl)
    response = redeem(http, oauth_server, answer["code"], verifier)
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "the authorization code expired",
    }


def test_code_is_bound_to_client_and_redirect(
    oauth_server_factory: ServerFactory, http: httpx.Client, verifier: str
) -> None:
    """Another client, or another redirect URI, cannot redeem the code."""
    server = oauth_server_factory(
        clients=(
            Client("a", None, frozenset({"authorization_code"})),
            Client("b", None, frozenset({"authorization_code"})),
        )
    )
    challenge = challenge_of(verifier)
    for extra, reason in (
        ({"client_id": "b"}, "another client"),
        ({"redirect_uri": "http://127.0.0.1:9/callback"}, "redirect_uri differs"),
    ):
        answer = sign_in(server, authorize_url(server, client_id="a", code_challenge=challenge))
        response = redeem(http, server, answer["code"], verifier, **{"client_id": "a", **extra})
        assert reason in response.json()["error_description"]


def test_iss_can_be_left_out(oauth_server_factory: ServerFactory, http: httpx.Client) -> None:
    """authorization_response_iss=False: no iss parameter, and the metadata says so."""
    server = oauth_server_factory(authorization_response_iss=False)
    answer = sign_in(server, authorize_url(server, code_challenge="a" * 43))
    assert "iss" not in answer
    assert (
        http.get(server.metadata_url).json()["authorization_response_iss_parameter_supported"]
        is False
    )


def test_userinfo_needs_the_openid_scope(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """The userinfo endpoint names the user for an openid token, 403 for others."""
    with_openid = oauth_server.login(scope="openid")["access_token"]
    without = oauth_server.login()["access_token"]
    ok = http.get(oauth_server.userinfo_url, headers={"Authorization": f"Bearer {with_openid}"})
    assert ok.json() == {"sub": "demo", "preferred_username": "demo"}
    refused = http.get(oauth_server.userinfo_url, headers={"Authorization": f"Bearer {without}"})
    assert refused.status_code == 403


def test_rotated_keys_sign_new_tokens_and_old_ones_still_work(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """After a rotation the JWKS has both keys; old tokens verify, new ones use the new kid."""
    old = oauth_server.login()["access_token"]
    new_kid = oauth_server.rotate_signing_key()
    new = oauth_server.login()["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    kids = [key["kid"] for key in http.get(oauth_server.jwks_url).json()["keys"]]
    assert kids[0] == new_kid
    assert len(kids) == 2
    for token in (old, new):
        me = http.get(f"{oauth_server.api_url}/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200
