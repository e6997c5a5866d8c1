"""The device flow (RFC 8628), private_key_jwt (RFC 7523) and metadata at both discovery paths."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from freshtoken.server import Browser, BrowserError, Client, ReferenceServer
from freshtoken.testing import ServerFactory

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def start_device(
    http: httpx.Client, server: ReferenceServer, client_id: str = "demo-public", **extra: str
) -> dict[str, Any]:
    response = http.post(server.device_authorization_url, data={"client_id": client_id, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def poll(http: httpx.Client, server: ReferenceServer, device_code: str) -> httpx.Response:
    return http.post(
        server.token_url,
        data={"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": "demo-public"},
    )


def test_device_authorization_answer(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """RFC 8628 3.2: codes, the verification page with and without the code, lifetime, interval."""
    grant = start_device(http, oauth_server)
    assert grant["verification_uri"] == oauth_server.device_url
    assert grant["verification_uri_complete"].startswith(oauth_server.device_url + "?user_code=")
    assert len(grant["user_code"]) == 9
    assert grant["user_code"][4] == "-"
    assert grant["expires_in"] == 600
    assert grant["interval"] == 5


def test_pending_then_approved_then_used(
    oauth_server_factory: ServerFactory, http: httpx.Client
) -> None:
    """Polls answer authorization_pending until the user approves; then tokens, once."""
    server = oauth_server_factory(device_interval=0)
    grant = start_device(http, server, scope="openid read")
    assert poll(http, server, grant["device_code"]).json()["error"] == "authorization_pending"
    heading = server.browser("alice", "alice").approve_device(grant["verification_uri_complete"])
    assert heading == "Device connected"
    tokens = poll(http, server, grant["device_code"]).json()
    assert tokens["scope"] == "openid read"
    assert jwt.decode(tokens["id_token"], options={"verify_signature": False})["sub"] == "alice"
    assert poll(http, server, grant["device_code"]).json()["error"] == "invalid_grant"
    assert server.stats()["device_approvals"] == 1


def test_the_code_can_be_typed_in_any_case(
    oauth_server_factory: ServerFactory, http: httpx.Client
) -> None:
    """The user code is matched without case, dashes or spaces."""
    server = oauth_server_factory(device_interval=0)
    grant = start_device(http, server)
    typed = " " + grant["user_code"].replace("-", "").lower() + " "
    assert server.browser().approve_device(server.device_url, typed) == "Device connected"
    assert "access_token" in poll(http, server, grant["device_code"]).json()


def test_denied_device(oauth_server_factory: ServerFactory, http: httpx.Client) -> None:
    """Deny on the device page: the next poll is access_denied."""
    server = oauth_server_factory(device_interval=0)
    grant = start_device(http, server)
    heading = server.browser(approve=False).approve_device(grant["verification_uri_complete"])
    assert heading == "Access denied"
    assert poll(http, server, grant["device_code"]).json()["error"] == "access_denied"


def test_polling_too_fast_slows_down_by_five_seconds(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """A poll sooner than the interval is slow_down, and the interval grows by 5 s for good."""
    grant = start_device(http, oauth_server)
    assert poll(http, oauth_server, grant["device_code"]).json()["error"] == "authorization_pending"
    oauth_server.advance(4)
    too_fast = poll(http, oauth_server, grant["device_code"]).json()
    assert too_fast["error"] == "slow_down"
    assert "10" in too_fast["error_description"]
    oauth_server.advance(9)
    assert poll(http, oauth_server, grant["device_code"]).json()["error"] == "slow_down"
    oauth_server.advance(15)
    assert poll(http, oauth_server, grant["device_code"]).json()["error"] == "authorization_pending"


def test_device_code_expires(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """After expires_in the poll answers expired_token and the page refuses the code."""
    grant = start_device(http, oauth_server)
    oauth_server.advance(grant["expires_in"])
    with pytest.raises(BrowserError, match="unknown, already used or expired"):
        oauth_server.browser().approve_device(grant["verification_uri_complete"])
    assert poll(http, oauth_server, grant["device_code"]).json()["error"] == "expired_token"


def test_device_page_wrong_password(oauth_server: ReferenceServer, http: httpx.Client) -> None:
    """A wrong password on the device page shows it again; the code stays pending."""
    grant = start_device(http, oauth_server)
    with pytest.raises(BrowserError, match="wrong username or password"):
        oauth_server.browser(password="nope").approve_device(grant["verification_uri_complete"])
    assert oauth_server.browser().approve_device(grant["verification_uri_complete"])


def test_device_flow_needs_the_grant(
    oauth_server_factory: ServerFactory, http: httpx.Client
) -> None:
    """A client not registered for the device grant is unauthorized_client."""
    server = oauth_server_factory(clients=(Client("tv", None, frozenset({"refresh_token"})),))
    response = http.post(server.device_authorization_url, data={"client_id": "tv"})
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


# -- private_key_jwt ---------------------------------------------------------------------


def pem_pair(kind: str) -> tuple[Any, str]:
    private: Any
    if kind == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "ec":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


ALGORITHM = {"rsa": "RS256", "ec": "ES256", "ed25519": "EdDSA"}


def assertion(private: Any, algorithm: str, audience: str, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": "signer",
        "sub": "signer",
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
        **claims,
    }
    return jwt.encode(
        {name: value for name, value in body.items() if value is not None},
        private,
        algorithm=algorithm,
    )


@pytest.fixture(params=["rsa", "ec", "ed25519"])
def signer(request: pytest.FixtureRequest, oauth_server_factory: ServerFactory) -> Any:
    private, public = pem_pair(request.param)
    client = Client("signer", None, frozenset({"client_credentials"}), public_key=public)
    # A real clock: assertions carry the time of day.
    server = oauth_server_factory(clients=(client,), clock=time.time)
    return server, private, ALGORITHM[request.param]


def client_credentials(http: httpx.Client, server: ReferenceServer, token: str) -> httpx.Response:
    return http.post(
        server.token_url,
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": token,
        },
    )


def test_private_key_jwt_authenticates(signer: Any, http: httpx.Client) -> None:
    """An assertion signed by the registered key, for the token endpoint, is accepted once."""
    server, private, algorithm = signer
    token = assertion(private, algorithm, server.token_url)
    assert client_credentials(http, server, token).status_code == 200
    replay = client_credentials(http, server, token)
    assert replay.status_code == 401
    assert "replayed" in replay.json()["error_description"]


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        pytest.param({"aud": "https://elsewhere/token"}, "refused", id="audience"),
        pytest.param({"exp": int(time.time()) - 5}, "expired", id="expired"),
        pytest.param({"exp": int(time.time()) + 3600}, "too long", id="long-lived"),
        pytest.param({"iss": "someone"}, "refused", id="issuer"),
        pytest.param({"jti": None}, "refused", id="no-jti"),
    ],
)
def test_bad_assertions_are_invalid_client(
    signer: Any, http: httpx.Client, claims: dict[str, Any], description: str
) -> None:
    """Wrong audience, expiry, issuer or a missing jti: invalid_client, 401."""
    server, private, algorithm = signer
    claims = dict(claims)
    audience = claims.pop("aud", server.token_url)
    token = assertion(private, algorithm, audience, **claims)
    response = client_credentials(http, server, token)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert description in response.json()["error_description"]


def test_an_assertion_signed_by_another_key_is_refused(signer: Any, http: httpx.Client) -> None:
    """The signature must be the registered key's."""
    server, _, _ = signer
    other, _ = pem_pair("ec")
    response = client_credentials(http, server, assertion(other, "ES256", server.token_url))
    assert response.json()["error"] == "invalid_client"


def test_a_key_client_cannot_skip_its_assertion(signer: Any, http: httpx.Client) -> None:
    """A client registered with a key is not a public client."""
    server, _, _ = signer
    response = http.post(
        server.token_url, data={"grant_type": "client_credentials", "client_id": "signer"}
    )
    assert response.status_code == 401
    assert "private_key_jwt" in response.json()["error_description"]


def test_issuer_is_an_accepted_audience(signer: Any, http: httpx.Client) -> None:
    """RFC 7523 3: the issuer identifies the server as well as the token endpoint does."""
    server, private, algorithm = signer
    response = client_credentials(http, server, assertion(private, algorithm, server.issuer))
    assert response.status_code == 200


def test_a_bad_public_key_is_refused_at_start() -> None:
    """A client with a key that is no PEM public key fails the server's start, clearly."""
    config_client = Client("bad", None, frozenset({"client_credentials"}), public_key="nope")
    from freshtoken.server import ServerConfig, ServerState

    with pytest.raises(ValueError, match="client 'bad': bad public_key"):
        ServerState(ServerConfig(clients=(config_client,)), url="http://testserver")


# -- metadata at both paths ----------------------------------------------------------------


def test_metadata_at_both_paths_for_an_issuer_with_a_path(
    oauth_server_factory: ServerFactory, http: httpx.Client
) -> None:
    """RFC 8414 puts the path after the well-known part, OpenID Connect before; same document."""
    server = oauth_server_factory(issuer_path="/tenants/one")
    assert server.issuer == server.url + "/tenants/one"
    oauth = http.get(f"{server.url}/.well-known/oauth-authorization-server/tenants/one")
    openid = http.get(f"{server.url}/tenants/one/.well-known/openid-configuration")
    assert oauth.json() == openid.json()
    metadata = oauth.json()
    assert metadata["issuer"] == server.issuer
    assert metadata["token_endpoint"] == server.token_url
    assert metadata["token_endpoint"].startswith(server.issuer + "/")
    assert http.get(f"{server.url}/.well-known/oauth-authorization-server").status_code == 404
    token = server.login()["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == server.issuer


def test_either_metadata_document_can_be_switched_off(
    oauth_server_factory: ServerFactory, http: httpx.Client
) -> None:
    """oauth_metadata=False leaves only OpenID discovery (and the other way round)."""
    openid_only = oauth_server_factory(oauth_metadata=False)
    assert http.get(openid_only.metadata_url).status_code == 404
    assert http.get(openid_only.openid_configuration_url).status_code == 200
    oauth_only = oauth_server_factory(openid_metadata=False)
    assert http.get(oauth_only.metadata_url).status_code == 200
    assert http.get(oauth_only.openid_configuration_url).status_code == 404


def test_metadata_advertises_the_new_flows(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    """Authorization, device and userinfo endpoints, PKCE S256, private_key_jwt, iss support."""
    metadata = http.get(oauth_server.openid_configuration_url).json()
    assert metadata["authorization_endpoint"] == oauth_server.authorize_url
    assert metadata["device_authorization_endpoint"] == oauth_server.device_authorization_url
    assert metadata["userinfo_endpoint"] == oauth_server.userinfo_url
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["response_types_supported"] == ["code"]
    assert {"openid", "offline_access"} <= set(metadata["scopes_supported"])


def test_browser_helper_reports_an_error_page(oauth_server: ReferenceServer) -> None:
    """Browser.sign_in on a page with no form says what the page said."""
    with httpx.Client() as http, pytest.raises(BrowserError, match="redirect_uri is required"):
        Browser().sign_in(http, f"{oauth_server.authorize_url}?client_id=demo")
