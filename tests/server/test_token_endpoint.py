"""The token endpoints: discovery, grants, client authentication, rotation and reuse."""

from __future__ import annotations

import base64
import email.utils
from typing import Any

import httpx
import jwt
import pytest

from freshtoken.server import ReferenceServer
from freshtoken.testing import ServerFactory


def post_token(
    http: httpx.Client, server: ReferenceServer, form: dict[str, str], **kwargs: Any
) -> httpx.Response:
    return http.post(server.token_url, data=form, **kwargs)


def basic(client_id: str, secret: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


def refresh_form(refresh_token: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": "demo",
        "client_secret": "demo-secret",
        **extra,
    }


def api_me(http: httpx.Client, server: ReferenceServer, access_token: str) -> httpx.Response:
    return http.get(f"{server.api_url}/me", headers={"Authorization": f"Bearer {access_token}"})


def test_metadata_names_the_endpoints(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """RFC 8414 metadata points at this server's endpoints."""
    metadata = http.get(oauth_server.metadata_url).json()
    assert metadata["issuer"] == oauth_server.url
    assert metadata["token_endpoint"] == oauth_server.token_url
    assert metadata["revocation_endpoint"] == oauth_server.revoke_url
    assert metadata["jwks_uri"] == oauth_server.jwks_url
    assert set(metadata["grant_types_supported"]) == {
        "authorization_code",
        "urn:ietf:params:oauth:grant-type:device_code",
        "password",
        "refresh_token",
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "urn:ietf:params:oauth:grant-type:token-exchange",
    }
    assert "client_secret_basic" in metadata["token_endpoint_auth_methods_supported"]


def test_access_token_verifies_against_the_jwks(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """PyJWT verifies an access token with the published key and finds every claim."""
    tokens = oauth_server.login()
    jwks = jwt.PyJWKSet.from_dict(http.get(oauth_server.jwks_url).json())
    kid = jwt.get_unverified_header(tokens["access_token"])["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims = jwt.decode(
        tokens["access_token"],
        key,
        algorithms=["ES256"],
        audience="freshtoken-api",
        issuer=oauth_server.url,
        options={"verify_exp": False},  # the ManualClock may differ from PyJWT's time
    )
    assert claims["sub"] == "demo"
    assert claims["client_id"] == "demo"
    assert claims["scope"] == "read write"
    assert claims["exp"] - claims["iat"] in (299, 300)
    assert claims["jti"]


def test_success_follows_rfc6749_section_5_1(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """A token response has the RFC fields and must not be cached."""
    response = post_token(
        http,
        oauth_server,
        {"grant_type": "password", "username": "demo", "password": "demo"},
        headers=basic("demo", "demo-secret"),
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "read write"
    assert body["refresh_token"]
    assert "refresh_in" not in body


@pytest.mark.parametrize(
    ("form", "headers"),
    [
        pytest.param({"client_id": "demo", "client_secret": "demo-secret"}, {}, id="post"),
        pytest.param({}, basic("demo", "demo-secret"), id="basic"),
        pytest.param({"client_id": "demo-public"}, {}, id="public"),
    ],
)
def test_client_authentication_methods(
    oauth_server: ReferenceServer, form: dict[str, str], headers: dict[str, str], http: httpx.Client
) -> None:
    """client_secret_post, client_secret_basic and public clients all log in."""
    grant = {"grant_type": "password", "username": "alice", "password": "alice"}
    response = post_token(http, oauth_server, {**grant, **form}, headers=headers)
    assert response.status_code == 200, response.text


def test_wrong_basic_secret_is_invalid_client_with_challenge(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """invalid_client is a 401 and, after Basic, carries WWW-Authenticate: Basic."""
    response = post_token(
        http,
        oauth_server,
        {"grant_type": "client_credentials"},
        headers=basic("demo", "wrong"),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"] == 'Basic realm="freshtoken"'


def test_wrong_post_secret_is_invalid_client_without_challenge(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """Without Basic there is nothing to challenge, but it is still a 401."""
    form = {"grant_type": "client_credentials", "client_id": "demo", "client_secret": "x"}
    response = post_token(http, oauth_server, form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize(
    ("form", "error", "status"),
    [
        ({"username": "demo", "password": "demo"}, "invalid_request", 400),
        ({"grant_type": "implicit"}, "unsupported_grant_type", 400),
        ({"grant_type": "password", "username": "demo"}, "invalid_request", 400),
        ({"grant_type": "password", "username": "demo", "password": "x"}, "invalid_grant", 400),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, "invalid_grant", 400),
        ({"grant_type": "client_credentials", "scope": "admin"}, "invalid_scope", 400),
        ({"grant_type": "client_credentials", "scope": 'read "x"'}, "invalid_scope", 400),
    ],
)
def test_errors_follow_rfc6749_section_5_2(
    oauth_server: ReferenceServer, form: dict[str, str], error: str, status: int, http: httpx.Client
) -> None:
    """Each refusal names its RFC 6749 error code."""
    form = {"client_id": "demo", "client_secret": "demo-secret", **form}
    response = post_token(http, oauth_server, form)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


def test_public_client_may_not_use_client_credentials(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """A grant the client is not registered for is unauthorized_client."""
    response = post_token(
        http, oauth_server, {"grant_type": "client_credentials", "client_id": "demo-public"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


def test_repeated_parameter_is_invalid_request(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """RFC 6749 section 3.2: a parameter sent twice is refused."""
    body = "grant_type=client_credentials&client_id=demo&client_secret=demo-secret"
    body += "&scope=read&scope=write"
    response = http.post(
        oauth_server.token_url,
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "scope" in response.json()["error_description"]


def test_two_client_authentication_methods_are_refused(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """Basic and a client_secret in the body at once is invalid_request."""
    form = {"grant_type": "client_credentials", "client_secret": "demo-secret"}
    response = post_token(http, oauth_server, form, headers=basic("demo", "demo-secret"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_client_credentials_issue_no_refresh_token(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """client_credentials gives an access token only, for the client itself."""
    tokens = oauth_server.client_credentials()
    assert "refresh_token" not in tokens
    assert api_me(http, oauth_server, tokens["access_token"]).json()["sub"] == "demo"


def test_refresh_rotates_and_counts(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """A refresh returns a new pair; the counters see one refresh and one rotation."""
    first = oauth_server.login()
    second = post_token(http, oauth_server, refresh_form(first["refresh_token"])).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert api_me(http, oauth_server, second["access_token"]).status_code == 200
    stats = oauth_server.stats()
    assert (stats["refreshes"], stats["rotations"]) == (1, 1)
    assert stats["token_requests_by_grant"]["refresh_token"] == 1


def test_reuse_of_a_rotated_refresh_token_revokes_the_family(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """Replaying an old refresh token kills every token of its family."""
    first = oauth_server.login()
    second = post_token(http, oauth_server, refresh_form(first["refresh_token"])).json()

    replay = post_token(http, oauth_server, refresh_form(first["refresh_token"]))
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"

    after = api_me(http, oauth_server, second["access_token"])
    assert after.status_code == 401
    assert 'error="invalid_token"' in after.headers["www-authenticate"]
    successor = post_token(http, oauth_server, refresh_form(second["refresh_token"]))
    assert successor.json()["error"] == "invalid_grant"
    stats = oauth_server.stats()
    assert stats["reuse_detections"] == 1
    assert stats["family_revocations"] == 1
    assert stats["invalid_grant"] == 2


def test_reuse_leaves_other_families_alone(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """Only the family of the replayed token dies."""
    other = oauth_server.login("alice", "alice")
    first = oauth_server.login()
    post_token(http, oauth_server, refresh_form(first["refresh_token"]))
    post_token(http, oauth_server, refresh_form(first["refresh_token"]))
    assert api_me(http, oauth_server, other["access_token"]).status_code == 200


def test_grace_accepts_the_previous_token_with_the_same_answer(
    oauth_server_factory: ServerFactory, http: httpx.Client
) -> None:
    """Within reuse_grace the retired token answers with its successor pair."""
    server = oauth_server_factory(reuse_grace=2)
    first = server.login()
    second = post_token(http, server, refresh_form(first["refresh_token"])).json()
    server.advance(1.5)
    again = post_token(http, server, refresh_form(first["refresh_token"])).json()
    assert again["refresh_token"] == second["refresh_token"]
    assert again["access_token"] == second["access_token"]
    assert again["expires_in"] == 298.5  # what is left of the successor's lifetime
    assert api_me(http, server, second["access_token"]).status_code == 200
    assert server.stats()["grace_replays"] == 1

    server.advance(1)
    late = post_token(http, server, refresh_form(first["refresh_token"]))
    assert late.json()["error"] == "invalid_grant"
    assert server.stats()["reuse_detections"] == 1


def test_grace_can_be_configured_at_run_time(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """configure(reuse_grace=...) applies to the next refresh."""
    oauth_server.configure(reuse_grace=5)
    first = oauth_server.login()
    post_token(http, oauth_server, refresh_form(first["refresh_token"]))
    assert post_token(http, oauth_server, refresh_form(first["refresh_token"])).status_code == 200


def test_without_reuse_detection_a_replay_is_only_refused(
    oauth_server_factory: ServerFactory, http: httpx.Client
) -> None:
    """reuse_detection=False refuses the old token but keeps the family."""
    server = oauth_server_factory(reuse_detection=False)
    first = server.login()
    second = post_token(http, server, refresh_form(first["refresh_token"])).json()
    assert post_token(http, server, refresh_form(first["refresh_token"])).status_code == 400
    assert api_me(http, server, second["access_token"]).status_code == 200
    assert server.stats()["reuse_detections"] == 0


def test_without_rotation_the_refresh_token_lives_on(
    oauth_server_factory: ServerFactory, http: httpx.Client
) -> None:
    """rotation=False: the same refresh token works again, and none is returned."""
    server = oauth_server_factory(rotation=False)
    first = server.login()
    for _ in range(2):
        response = post_token(http, server, refresh_form(first["refresh_token"])).json()
        assert "refresh_token" not in response
    assert server.stats()["rotations"] == 0


def test_refresh_may_narrow_but_never_widen_the_scope(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """A refresh asks for less than the login granted, never more."""
    first = oauth_server.login(scope="read write")
    narrow = post_token(http, oauth_server, refresh_form(first["refresh_token"], scope="read"))
    assert narrow.json()["scope"] == "read"
    wide = post_token(
        http, oauth_server, refresh_form(narrow.json()["refresh_token"], scope="read admin")
    )
    assert wide.status_code == 400
    assert wide.json()["error"] == "invalid_scope"
    # The original grant still bounds the family: "write" can come back.
    back = post_token(
        http, oauth_server, refresh_form(narrow.json()["refresh_token"], scope="write")
    )
    assert back.json()["scope"] == "write"


def test_refresh_token_of_another_client_is_invalid_grant(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """A refresh token only works for the client it was issued to."""
    tokens = oauth_server.login(client_id="demo-public", client_secret=None)
    response = post_token(http, oauth_server, refresh_form(tokens["refresh_token"]))
    assert response.json()["error"] == "invalid_grant"


def test_session_ends_after_the_absolute_refresh_ttl(
    oauth_server_factory: ServerFactory, http: httpx.Client
) -> None:
    """refresh_ttl counts from the login, whatever the refreshes in between."""
    server = oauth_server_factory(refresh_ttl=100, refresh_idle_ttl=None)
    tokens = server.login()
    server.advance(60)
    tokens = post_token(http, server, refresh_form(tokens["refresh_token"])).json()
    server.advance(41)
    assert post_token(http, server, refresh_form(tokens["refresh_token"])).json()["error"] == (
        "invalid_grant"
    )


def test_session_ends_when_idle(oauth_server_factory: ServerFactory, http: httpx.Client) -> None:
    """refresh_idle_ttl counts from the last login or refresh."""
    server = oauth_server_factory(refresh_idle_ttl=10)
    tokens = server.login()
    server.advance(9)
    tokens = post_token(http, server, refresh_form(tokens["refresh_token"])).json()
    server.advance(9)
    tokens = post_token(http, server, refresh_form(tokens["refresh_token"])).json()
    server.advance(10)
    assert post_token(http, server, refresh_form(tokens["refresh_token"])).status_code == 400


def test_refresh_in_hint(oauth_server_factory: ServerFactory, http: httpx.Client) -> None:
    """refresh_in adds a hint to OAuth and JSON token responses."""
    server = oauth_server_factory(refresh_in=240)
    assert server.login()["refresh_in"] == 240
    login = http.post(server.login_url, json={"username": "demo", "password": "demo"})
    assert login.json()["refresh_in"] == 240


def test_clock_offset_skews_the_tokens_and_the_date(
    oauth_server_factory: ServerFactory, http: httpx.Client
) -> None:
    """The server's time is the shared clock plus clock_offset: in claims and Date."""
    server = oauth_server_factory(clock_offset=-3600)
    response = http.post(
        server.token_url,
        data={"grant_type": "client_credentials"},
        headers=basic("demo", "demo-secret"),
    )
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert abs(claims["iat"] - (server.clock() - 3600)) <= 1
    date = email.utils.parsedate_to_datetime(response.headers["date"])
    assert abs(date.timestamp() - claims["iat"]) <= 1


def test_revoking_a_refresh_token_revokes_its_family(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """RFC 7009: the family's tokens die; unknown tokens still answer 200."""
    tokens = oauth_server.login()
    form = {"token": tokens["refresh_token"], "client_id": "demo", "client_secret": "demo-secret"}
    assert http.post(oauth_server.revoke_url, data=form).status_code == 200
    assert api_me(http, oauth_server, tokens["access_token"]).status_code == 401
    unknown = {**form, "token": "never-issued"}
    assert http.post(oauth_server.revoke_url, data=unknown).status_code == 200
    assert oauth_server.stats()["family_revocations"] == 1


def test_revoking_an_access_token_revokes_only_it(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """An access token can be revoked alone; its refresh token still works."""
    tokens = oauth_server.login()
    form = {"token": tokens["access_token"], "client_id": "demo", "client_secret": "demo-secret"}
    http.post(oauth_server.revoke_url, data=form)
    assert api_me(http, oauth_server, tokens["access_token"]).status_code == 401
    assert post_token(http, oauth_server, refresh_form(tokens["refresh_token"])).status_code == 200


def test_json_login_and_refresh_share_families_with_oauth(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """/auth/login and /auth/refresh speak JSON and rotate the same families."""
    login = http.post(oauth_server.login_url, json={"username": "demo", "password": "demo"})
    assert login.status_code == 200
    first = login.json()
    assert set(first) == {"access_token", "refresh_token", "expires_in"}
    refreshed = http.post(oauth_server.refresh_url, json={"refresh_token": first["refresh_token"]})
    assert set(refreshed.json()) == {"access_token", "refresh_token", "expires_in"}
    # The JSON endpoints act as the public client: its OAuth refresh continues the family.
    oauth = post_token(
        http,
        oauth_server,
        {
            "grant_type": "refresh_token",
            "refresh_token": refreshed.json()["refresh_token"],
            "client_id": "demo-public",
        },
    )
    assert oauth.status_code == 200
    replay = http.post(oauth_server.refresh_url, json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_grant"
    assert api_me(http, oauth_server, oauth.json()["access_token"]).status_code == 401


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"json": {"username": "demo", "password": "nope"}}, 401, "invalid_credentials"),
        ({"json": {"username": "demo"}}, 400, "invalid_request"),
        ({"json": ["demo", "demo"]}, 400, "invalid_request"),
        (
            {"content": b"{", "headers": {"Content-Type": "application/json"}},
            400,
            "invalid_request",
        ),
        ({"data": {"username": "demo", "password": "demo"}}, 415, "unsupported_media_type"),
    ],
)
def test_json_login_errors(
    oauth_server: ReferenceServer,
    kwargs: dict[str, Any],
    status: int,
    error: str,
    http: httpx.Client,
) -> None:
    """The JSON endpoints answer {"error", "error_description"} with 400, 401 or 415."""
    response = http.post(oauth_server.login_url, **kwargs)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["error_description"]


FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        pytest.param(
            b"grant_type=" + b"x" * 70_000,
            {"Content-Type": FORM},
            413,
            "request_too_large",
            id="oversized",
        ),
        pytest.param(
            b"grant_type=password&username=\xff",
            {"Content-Type": FORM},
            400,
            "invalid_request",
            id="not-utf8",
        ),
        pytest.param(
            b"grant_type=password&username=%ff",
            {"Content-Type": FORM},
            400,
            "invalid_request",
            id="bad-escape",
        ),
        pytest.param(
            b'{"grant_type": "password"}',
            {"Content-Type": "application/json"},
            400,
            "invalid_request",
            id="json",
        ),
        pytest.param(
            b"grant_type=client_credentials", {}, 400, "invalid_request", id="no-content-type"
        ),
        pytest.param(
            b"grant_type=client_credentials",
            {"Content-Type": FORM, "Authorization": "Basic !!!"},
            401,
            "invalid_client",
            id="garbage-basic",
        ),
        pytest.param(
            b"grant_type=client_credentials",
            {
                "Content-Type": FORM,
                "Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode(),
            },
            401,
            "invalid_client",
            id="basic-not-utf8",
        ),
    ],
)
def test_bad_input_is_a_json_4xx(
    oauth_server: ReferenceServer,
    http: httpx.Client,
    *,
    body: bytes,
    headers: dict[str, str],
    status: int,
    error: str,
) -> None:
    """Malformed requests get the RFC error shape, never a 500."""
    response = http.post(oauth_server.token_url, content=body, headers=headers)
    assert response.status_code == status
    assert response.json()["error"] == error


def test_oversized_api_body_is_413(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    token = oauth_server.login()["access_token"]
    response = http.post(
        f"{oauth_server.api_url}/items",
        json={"blob": "x" * 70_000},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"
