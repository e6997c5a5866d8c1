"""Client authentication: client_secret_basic's encoding, private_key_jwt end to end, and the
method chosen from the server's metadata."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import freshtoken
from freshtoken import ClientAuth, LoginFailed, ServerMetadata
from freshtoken._logins import flows  # the free logins, deprecated in the public API
from freshtoken._oauth.client_auth import choose_method
from freshtoken.server import Client, ReferenceServer
from freshtoken.testing import ServerFactory


def form_of(request: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def test_basic_form_encodes_before_base64() -> None:
    """RFC 6749 2.3.1: ':' '%' '+' and spaces in id or secret survive the round trip."""
    request = ClientAuth("my app:1", "s3cr:t+%/ é").request("https://id.example/token", {}, {})
    scheme, encoded = request.headers["authorization"].split(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "my%20app%3A1:s3cr%3At%2B%25%2F%20%C3%A9"


def test_post_and_none_put_the_client_in_the_form() -> None:
    """client_secret_post sends id and secret in the body; none only the id."""
    post = form_of(ClientAuth("app", "s", "client_secret_post").request("https://x/t", {}, {}))
    assert post == {"client_id": "app", "client_secret": "s"}
    public = ClientAuth("app").request("https://x/t", {"a": "b"}, {})
    assert form_of(public) == {"a": "b", "client_id": "app"}
    assert "authorization" not in public.headers


@pytest.mark.parametrize(
    ("supported", "secret", "key", "method"),
    [
        (None, True, False, "client_secret_basic"),
        (("client_secret_post",), True, False, "client_secret_post"),
        (("client_secret_basic", "client_secret_post"), True, False, "client_secret_basic"),
        (("private_key_jwt",), False, True, "private_key_jwt"),
        (None, False, False, "none"),
    ],
)
def test_method_from_metadata(
    supported: tuple[str, ...] | None, secret: bool, key: bool, method: str
) -> None:
    """Without a configured method: key -> private_key_jwt, secret -> what the server lists."""
    assert choose_method(supported, has_secret=secret, has_key=key) == method


def test_secrets_never_show(oauth_server: ReferenceServer) -> None:
    """Neither the secret nor the private key appears in a repr."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    for auth in (ClientAuth("app", "hunter22"), ClientAuth("app", private_key=pem)):
        assert "hunter22" not in repr(auth)
        assert "PRIVATE" not in repr(auth)
        assert repr(auth._signer) if auth._signer else True
        assert "PRIVATE" not in repr(auth._signer)


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (lambda: ClientAuth("a", None, "client_secret_basic"), "needs a client_secret"),
        (lambda: ClientAuth("a", None, "private_key_jwt"), "needs a private_key"),
        (
            lambda: ClientAuth("a", "s", "client_secret_post", private_key="x"),
            "is for private_key_jwt",
        ),
        (lambda: ClientAuth("a", private_key="-----BEGIN nonsense"), "not an unencrypted PEM"),
        (lambda: ClientAuth("a", private_key='{"kty": "EC"}'), "not a usable JWK"),
        (
            lambda: ClientAuth("a", private_key='{"k": ' * 100_000 + "1" + "}" * 100_000),
            "nested too deeply",
        ),
    ],
)
def test_bad_configurations_are_value_errors(auth: Any, message: str) -> None:
    """A method without its credential, or a key that is no key, fails at construction."""
    with pytest.raises(ValueError, match=message):
        auth()


# -- private_key_jwt end to end ------------------------------------------------------------


@pytest.fixture
def key_client(oauth_server_factory: ServerFactory) -> tuple[ReferenceServer, Any]:
    """A server with client 'signer' registered by its RSA public key (real clock)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    client = Client(
        "signer",
        None,
        frozenset({"client_credentials", "refresh_token", "authorization_code"}),
        public_key=public.decode(),
    )
    server = oauth_server_factory(clients=(client,), clock=time.time)
    return server, private


def pem_of(private: Any) -> str:
    data: bytes = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data.decode()


def test_private_key_jwt_client_credentials(key_client: tuple[ReferenceServer, Any]) -> None:
    """A PEM key signs a fresh assertion per request; the server accepts each once."""
    server, private = key_client
    for _ in range(2):  # a replayed jti would be refused: each login makes a new one
        tokens = flows.client_credentials_login(
            issuer=server.issuer, client_id="signer", private_key=pem_of(private)
        )
        assert tokens.access_token


def test_private_key_jwt_assertion_claims() -> None:
    """iss = sub = client, aud = token endpoint, fresh jti, exp a minute ahead, kid from JWK."""
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private))
    jwk["kid"] = "key-1"
    auth = ClientAuth("app", private_key=jwk, audience="https://id.example/token")
    first = form_of(auth.request("https://id.example/device", {}, {}))
    second = form_of(auth.request("https://id.example/device", {}, {}))
    assert (
        first["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    )
    claims = jwt.decode(
        first["client_assertion"],
        private.public_key(),
        algorithms=["ES256"],
        audience="https://id.example/token",
    )
    assert claims["iss"] == claims["sub"] == "app"
    assert 0 < claims["exp"] - time.time() <= 61
    assert jwt.get_unverified_header(first["client_assertion"])["kid"] == "key-1"
    assert (
        jwt.decode(second["client_assertion"], options={"verify_signature": False})["jti"]
        != (claims["jti"])
    )


def test_refresher_with_a_private_key_refreshes(key_client: tuple[ReferenceServer, Any]) -> None:
    """OAuth2Refresher.from_issuer with a key: browser login then refresh, both by assertion."""
    server, private = key_client
    refresher = freshtoken.OAuth2Refresher.from_issuer(
        server.issuer, client_id="signer", private_key=pem_of(private)
    )
    assert refresher.client.method == "private_key_jwt"
    manager = freshtoken.TokenManager(refresher)
    manager.set_tokens(refresher.browser_login(open_browser=server.browser()))
    server.expire_access_tokens()
    stale = manager.get_tokens()
    fresh = manager.refresh()
    assert fresh.access_token != stale.access_token
    assert server.stats()["refreshes"] == 1


def test_a_wrong_key_is_invalid_client(key_client: tuple[ReferenceServer, Any]) -> None:
    """Signed by another key: LoginFailed invalid_client."""
    server, _ = key_client
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(LoginFailed) as caught:
        flows.client_credentials_login(
            issuer=server.issuer, client_id="signer", private_key=pem_of(other)
        )
    assert caught.value.error == "invalid_client"


def test_client_credentials_without_a_credential_is_refused() -> None:
    """A public client has no client credentials."""
    metadata = ServerMetadata(issuer="https://id.example", token_endpoint="https://id.example/t")
    with pytest.raises(ValueError, match="client_secret or a private_key"):
        flows.client_credentials_login(issuer=metadata, client_id="public")


def test_client_credentials_from_issuer(key_client: tuple[ReferenceServer, Any]) -> None:
    """ClientCredentials.from_issuer with a key: the manager acquires by signed assertion."""
    server, private = key_client
    source = freshtoken.ClientCredentials.from_issuer(
        server.issuer, client_id="signer", private_key=pem_of(private)
    )
    assert source.client.method == "private_key_jwt"
    assert freshtoken.TokenManager(source).get_tokens().access_token
    with pytest.raises(ValueError, match="client_secret or a private_key"):
        freshtoken.ClientCredentials.from_issuer(server.issuer, client_id="signer")
