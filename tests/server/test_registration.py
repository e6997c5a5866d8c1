"""The reference server's dynamic client registration (RFC 7591), resource indicators
(RFC 8707) and protected resource metadata (RFC 9728), over real TCP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from freshtoken.server import ReferenceServer
from freshtoken.testing import ServerFactory

LOOPBACK = "http://127.0.0.1/callback"


def _register(server: ReferenceServer, **body: Any) -> httpx.Response:
    body.setdefault("redirect_uris", [LOOPBACK])
    return httpx.post(f"{server.issuer}/oauth/register", json=body)


def test_metadata_names_the_registration_endpoint(oauth_server: ReferenceServer) -> None:
    document = httpx.get(oauth_server.metadata_url).json()
    assert document["registration_endpoint"] == f"{oauth_server.issuer}/oauth/register"


def test_a_public_client_registers_and_reads_its_registration(
    oauth_server: ReferenceServer,
) -> None:
    answer = _register(oauth_server, token_endpoint_auth_method="none", client_name="tool")
    assert answer.status_code == 201
    client = answer.json()
    assert "client_secret" not in client
    assert client["client_name"] == "tool"
    read = httpx.get(
        client["registration_client_uri"],
        headers={"Authorization": f"Bearer {client['registration_access_token']}"},
    )
    assert read.json()["client_id"] == client["client_id"]
    wrong = httpx.get(client["registration_client_uri"], headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 401
    assert oauth_server.stats()["registrations"] == 1


def test_a_confidential_client_gets_a_secret_that_never_expires(
    oauth_server: ReferenceServer,
) -> None:
    client = _register(oauth_server, token_endpoint_auth_method="client_secret_post").json()
    assert client["client_secret"]
    assert client["client_secret_expires_at"] == 0


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://example.com/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://example.com/cb#frag"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
        ({"grant_types": ["client_credentials"]}, "invalid_client_metadata"),
        ({"response_types": ["token"]}, "invalid_client_metadata"),
        ({"client_name": 7}, "invalid_client_metadata"),
    ],
)
def test_bad_registrations_are_refused(
    oauth_server: ReferenceServer, body: dict[str, Any], error: str
) -> None:
    answer = _register(oauth_server, **body)
    assert answer.status_code == 400
    assert answer.json()["error"] == error


def test_private_use_and_https_redirects_are_accepted(oauth_server: ReferenceServer) -> None:
    answer = _register(oauth_server, redirect_uris=["com.example.app:/cb", "https://a.example/cb"])
    assert answer.status_code == 201


def test_registration_can_be_switched_off(oauth_server_factory: ServerFactory) -> None:
    server = oauth_server_factory(registration=False)
    assert "registration_endpoint" not in httpx.get(server.metadata_url).json()
    assert _register(server).status_code == 404


def test_the_api_publishes_its_metadata_and_names_it_in_challenges(
    oauth_server: ReferenceServer,
) -> None:
    metadata_url = f"{oauth_server.url}/.well-known/oauth-protected-resource/api"
    document = httpx.get(metadata_url).json()
    assert document["resource"] == oauth_server.api_url
    assert document["authorization_servers"] == [oauth_server.issuer]
    challenge = httpx.get(f"{oauth_server.api_url}/me").headers["WWW-Authenticate"]
    assert f'resource_metadata="{metadata_url}"' in challenge


def _code_grant_tokens(server: ReferenceServer, resource: str | None) -> dict[str, Any]:
    """A browser login of a registered client, by hand, for ``resource``."""
    from freshtoken._logins.authorization import AuthorizationRequest
    from freshtoken._oauth.discovery import discover

    registered = _register(
        server,
        token_endpoint_auth_method="none",
        grant_types=["authorization_code", "refresh_token"],
    )
    client_id = registered.json()["client_id"]
    metadata = discover(server.issuer, cache=False)
    params = {"resource": resource} if resource else {}
    request = AuthorizationRequest.start(
        metadata, client_id=client_id, redirect_uri=LOOPBACK, scope="read", params=params
    )
    with httpx.Client() as http:
        location = server.browser().sign_in(http, request.url)
    code = dict(httpx.URL(location).params)["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": LOOPBACK,
        "code_verifier": request.code_verifier,
        "client_id": client_id,
    }
    answer = httpx.post(server.token_url, data=form)
    assert answer.status_code == 200, answer.text
    return {**answer.json(), "client_id": client_id}


def test_a_resource_grant_gives_tokens_good_only_at_that_resource(
    oauth_server: ReferenceServer,
) -> None:
    """RFC 8707: audience-restricted tokens; the API refuses a token for another resource."""
    tokens = _code_grant_tokens(oauth_server, f"{oauth_server.url}/mcp")
    answer = httpx.get(
        f"{oauth_server.api_url}/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert answer.status_code == 401
    assert "another resource" in answer.headers["WWW-Authenticate"]
    mine = _code_grant_tokens(oauth_server, oauth_server.api_url)
    answer = httpx.get(
        f"{oauth_server.api_url}/me", headers={"Authorization": f"Bearer {mine['access_token']}"}
    )
    assert answer.status_code == 200


@pytest.mark.parametrize("strict", [False, True])
def test_a_refresh_without_resource_is_refused_by_a_strict_server(
    oauth_server_factory: ServerFactory, strict: bool
) -> None:
    server = oauth_server_factory(strict_resource=strict)
    tokens = _code_grant_tokens(server, server.api_url)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": tokens["client_id"],
    }
    answer = httpx.post(server.token_url, data=form)
    assert server.stats()["refreshes_without_resource"] == 1
    if strict:
        assert answer.status_code == 400
        assert answer.json()["error"] == "invalid_target"
        with_resource = httpx.post(server.token_url, data={**form, "resource": server.api_url})
        assert with_resource.status_code == 200  # the refused attempt spent nothing
    else:
        assert answer.status_code == 200, answer.text


def test_a_refresh_for_another_resource_is_invalid_target(oauth_server: ReferenceServer) -> None:
    tokens = _code_grant_tokens(oauth_server, oauth_server.api_url)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": tokens["client_id"],
        "resource": "https://elsewhere.example.com/",
    }
    answer = httpx.post(oauth_server.token_url, data=form)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_target"
