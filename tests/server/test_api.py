"""The protected demo API: RFC 6750 challenges, scopes, expiry, and the helper routes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from freshtoken.server import ReferenceServer
from freshtoken.testing import ServerFactory


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(oauth_server: ReferenceServer) -> Iterator[httpx.Client]:
    """A keep-alive client on the server's API, carrying the demo user's token."""
    token = oauth_server.login()["access_token"]
    with httpx.Client(base_url=oauth_server.api_url, headers=bearer(token), verify=False) as client:
        yield client


def test_no_token_gets_a_bare_challenge(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """RFC 6750 section 3.1: without credentials, the challenge has no error code."""
    response = http.get(f"{oauth_server.api_url}/me")
    assert response.status_code == 401
    metadata = f"{oauth_server.url}/.well-known/oauth-protected-resource/api"
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="freshtoken", resource_metadata="{metadata}"'
    )
    assert response.json()["error"] == "unauthorized"
    assert oauth_server.stats()["unauthorized_401"] == 1


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer not-a-jwt", "Bearer a.b.c", "Bearer " + "x" * 10_000],
)
def test_malformed_tokens_are_invalid_token(
    oauth_server: ReferenceServer, authorization: str, http: httpx.Client
) -> None:
    """A token that is not one of ours is invalid_token."""
    response = http.get(f"{oauth_server.api_url}/me", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_other_schemes_get_a_bare_challenge(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """Basic credentials on the API are no bearer token at all."""
    response = http.get(f"{oauth_server.api_url}/me", auth=("demo", "demo"))
    assert response.status_code == 401
    metadata = f"{oauth_server.url}/.well-known/oauth-protected-resource/api"
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="freshtoken", resource_metadata="{metadata}"'
    )


def test_token_signed_by_another_server_is_invalid(
    oauth_server_factory: ServerFactory, http: httpx.Client
) -> None:
    """A well-formed JWT with a foreign signature is refused."""
    first, second = oauth_server_factory(), oauth_server_factory()
    foreign = second.login()["access_token"]
    response = http.get(f"{first.api_url}/me", headers=bearer(foreign))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_tampered_token_is_invalid(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """Changing the payload breaks the signature."""
    header, payload, signature = oauth_server.login()["access_token"].split(".")
    tampered = f"{header}.{payload[:-2]}AA.{signature}"
    assert http.get(f"{oauth_server.api_url}/me", headers=bearer(tampered)).status_code == 401


def test_access_token_expires_on_the_server_clock(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """advance() past access_ttl makes the token expire, without sleeping."""
    token = oauth_server.login()["access_token"]
    oauth_server.advance(299)
    assert http.get(f"{oauth_server.api_url}/me", headers=bearer(token)).status_code == 200
    oauth_server.advance(1)
    response = http.get(f"{oauth_server.api_url}/me", headers=bearer(token))
    assert response.status_code == 401
    assert "expired" in response.headers["www-authenticate"]


def test_expire_access_tokens_now(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """expire_access_tokens() kills tokens issued so far, not the ones after."""
    old = oauth_server.login()
    oauth_server.expire_access_tokens()
    assert (
        http.get(f"{oauth_server.api_url}/me", headers=bearer(old["access_token"])).status_code
        == 401
    )
    new = oauth_server.refresh(old["refresh_token"])
    assert (
        http.get(f"{oauth_server.api_url}/me", headers=bearer(new["access_token"])).status_code
        == 200
    )


def test_missing_scope_is_403_insufficient_scope(
    api: httpx.Client, oauth_server: ReferenceServer
) -> None:
    """The demo user lacks "admin": 403 with the scope it needs."""
    response = api.get("/admin")
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="admin"' in challenge
    assert oauth_server.stats()["forbidden_403"] == 1


def test_admin_user_passes_the_scope_check(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """The admin user has the admin scope."""
    token = oauth_server.login("admin", "admin")["access_token"]
    assert http.get(f"{oauth_server.api_url}/admin", headers=bearer(token)).status_code == 200


def test_narrowed_token_loses_write(oauth_server: ReferenceServer) -> None:
    """A read-only token may list items but not create them."""
    token = oauth_server.login(scope="read")["access_token"]
    with httpx.Client(base_url=oauth_server.api_url, headers=bearer(token), verify=False) as client:
        assert client.get("/items").status_code == 200
        assert client.post("/items", json={"name": "x"}).status_code == 403


def test_items_are_kept_in_memory(api: httpx.Client, oauth_server: ReferenceServer) -> None:
    """POST /api/items answers 201 with an id; GET finds it again."""
    created = api.post("/items", json={"name": "widget"})
    assert created.status_code == 201
    item = created.json()
    assert item["name"] == "widget"
    assert api.get(f"/items/{item['id']}").json() == item
    assert api.get("/items").json()["items"] == [item]
    assert api.get("/items/999").status_code == 404
    assert api.get("/items/abc").json()["error"] == "not_found"
    assert oauth_server.stats()["api_ok"] == 3


def test_me_describes_the_token(api: httpx.Client) -> None:
    body = api.get("/me").json()
    assert (body["sub"], body["client_id"], body["scope"]) == ("demo", "demo", "read write")


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_echo_mirrors_the_request_but_not_the_token(api: httpx.Client, method: str) -> None:
    """/api/echo shows method, query, headers and body; only whether a token was sent."""
    response = api.request(method, "/echo?a=1&b=2", content=b"hello", headers={"X-Test": "yes"})
    body = response.json()
    assert body["method"] == method
    assert body["query"] == "a=1&b=2"
    assert body["headers"]["x-test"] == "yes"
    assert body["has_authorization"] is True
    assert "authorization" not in body["headers"]
    assert body["body"] == "hello"
    assert "Bearer" not in response.text


def test_echo_without_a_token_answers_too(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """The echo needs no token, so a test can see that none was sent."""
    body = http.get(f"{oauth_server.api_url}/echo").json()
    assert body["has_authorization"] is False


def test_redirect_needs_no_auth(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """/api/redirect?to=URL answers 302 Location: URL."""
    target = "http://localhost:1/api/echo"
    response = http.get(f"{oauth_server.api_url}/redirect", params={"to": target})
    assert response.status_code == 302
    assert response.headers["location"] == target
    bad = http.get(f"{oauth_server.api_url}/redirect", params={"to": "javascript:x"})
    assert bad.status_code == 400


def test_unknown_routes_and_methods_are_json(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    assert http.get(f"{oauth_server.url}/nope").json()["error"] == "not_found"
    response = http.get(oauth_server.token_url)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_admin_routes_are_absent_unless_enabled(
    oauth_server_factory: ServerFactory, http: httpx.Client
) -> None:
    """admin=False: /admin/* are 404, whatever the method."""
    server = oauth_server_factory(admin=False)
    assert http.get(f"{server.url}/admin/stats").status_code == 404
    assert http.post(f"{server.url}/admin/faults", json={"fail_api": 1}).status_code == 404
    assert http.post(f"{server.url}/admin/stats/reset").status_code == 404


def test_stats_over_http_and_reset(
    api: httpx.Client, oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """GET /admin/stats mirrors stats(); POST /admin/stats/reset zeroes it."""
    api.get("/me")
    stats = http.get(f"{oauth_server.url}/admin/stats").json()
    assert stats["api_ok"] == 1
    assert stats["token_requests"] == 1
    assert stats["token_requests_by_grant"]["password"] == 1
    reset = http.post(f"{oauth_server.url}/admin/stats/reset").json()
    assert reset["api_ok"] == 0
    assert oauth_server.stats()["token_requests"] == 0


def test_echo_reports_other_credentials_without_judging_them(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """A Basic header is no bearer token: the echo only says that something was sent."""
    response = http.post(f"{oauth_server.api_url}/echo", auth=("user", "secret"), content=b"x")
    assert response.status_code == 200
    assert response.json()["has_authorization"] is True
    assert "secret" not in response.text
