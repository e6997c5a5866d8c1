"""Discovery against the reference server over real TCP: both paths, issuers with paths."""

from __future__ import annotations

import pytest
from tools import refused_port

import freshtoken
from freshtoken import LoginFailed, ServerMetadata
from freshtoken._oauth.discovery import metadata_urls
from freshtoken.server import ReferenceServer
from freshtoken.testing import ServerFactory


def test_discover_reads_the_reference_server(oauth_server: ReferenceServer) -> None:
    """Every endpoint and capability of the metadata is typed on ServerMetadata."""
    metadata = freshtoken.discover(oauth_server.issuer, cache=False)
    assert metadata.issuer == oauth_server.issuer
    assert metadata.token_endpoint == oauth_server.token_url
    assert metadata.authorization_endpoint == oauth_server.authorize_url
    assert metadata.device_authorization_endpoint == oauth_server.device_authorization_url
    assert metadata.revocation_endpoint == oauth_server.revoke_url
    assert metadata.jwks_uri == oauth_server.jwks_url
    assert metadata.userinfo_endpoint == oauth_server.userinfo_url
    assert "authorization_code" in metadata.grant_types_supported
    assert "private_key_jwt" in metadata.token_endpoint_auth_methods_supported
    assert metadata.code_challenge_methods_supported == ("S256",)
    assert metadata.authorization_response_iss_parameter_supported is True


@pytest.mark.parametrize(
    ("oauth_metadata", "openid_metadata"),
    [
        pytest.param(True, False, id="rfc8414-only"),
        pytest.param(False, True, id="openid-only"),
    ],
)
def test_an_issuer_with_a_path_is_found_at_either_path(
    oauth_server_factory: ServerFactory, oauth_metadata: bool, openid_metadata: bool
) -> None:
    """RFC 8414 path insertion, or OpenID Connect's suffix when only that is served."""
    server = oauth_server_factory(
        issuer_path="/realms/demo", oauth_metadata=oauth_metadata, openid_metadata=openid_metadata
    )
    metadata = freshtoken.discover(server.issuer, cache=False)
    assert metadata.issuer == server.url + "/realms/demo"
    assert metadata.token_endpoint == server.url + "/realms/demo/oauth/token"


@pytest.mark.anyio
async def test_adiscover_finds_the_same(oauth_server_factory: ServerFactory) -> None:
    """The async twin follows the same flow."""
    server = oauth_server_factory(issuer_path="/t", oauth_metadata=False)
    metadata = await freshtoken.adiscover(server.issuer, cache=False)
    assert metadata.token_endpoint == server.token_url


def test_metadata_urls_in_order() -> None:
    """RFC 8414 first, then OpenID Connect, then the two spellings seen in the wild."""
    assert metadata_urls("https://id.example/tenant/") == [
        "https://id.example/.well-known/oauth-authorization-server/tenant",
        "https://id.example/tenant/.well-known/openid-configuration",
        "https://id.example/.well-known/openid-configuration/tenant",
        "https://id.example/tenant/.well-known/oauth-authorization-server",
    ]
    assert metadata_urls("https://id.example") == [
        "https://id.example/.well-known/oauth-authorization-server",
        "https://id.example/.well-known/openid-configuration",
    ]


def test_another_issuers_metadata_is_refused(oauth_server: ReferenceServer) -> None:
    """A document naming another issuer is never used (RFC 8414 section 3.3)."""
    with pytest.raises(LoginFailed) as caught:
        freshtoken.discover(oauth_server.url + "/other", cache=False)
    assert caught.value.error == "discovery_failed"
    with pytest.raises(LoginFailed) as mismatch:
        ServerMetadata.from_document({"issuer": "https://evil.example"}, issuer="https://a.example")
    assert mismatch.value.error == "issuer_mismatch"


def test_a_trailing_slash_is_forgiven_and_the_servers_spelling_kept(
    oauth_server: ReferenceServer,
) -> None:
    """Issuers like Auth0's end in '/'; either spelling finds the server, which names itself."""
    metadata = freshtoken.discover(oauth_server.issuer + "/", cache=False)
    assert metadata.issuer == oauth_server.issuer


def test_no_metadata_says_where_it_looked(oauth_server_factory: ServerFactory) -> None:
    """Without metadata, the error lists each URL tried and its answer."""
    server = oauth_server_factory(oauth_metadata=False, openid_metadata=False)
    with pytest.raises(LoginFailed) as caught:
        freshtoken.discover(server.issuer, cache=False)
    assert caught.value.error == "discovery_failed"
    assert "HTTP 404 from" in str(caught.value)
    assert "openid-configuration" in str(caught.value)


def test_unreachable_issuer_is_one_clear_error() -> None:
    """A closed port: 'cannot reach <url>: connection refused'."""
    with refused_port() as port, pytest.raises(LoginFailed) as caught:
        freshtoken.discover(f"http://127.0.0.1:{port}", cache=False)
    assert caught.value.error == "network_error"
    assert str(caught.value) == (
        f"login failed: network_error (cannot reach http://127.0.0.1:{port}"
        "/.well-known/oauth-authorization-server: connection refused)"
    )


def test_plain_http_off_loopback_is_refused_before_any_request() -> None:
    """Metadata over plain HTTP could be forged: refused unless allowed."""
    with pytest.raises(LoginFailed, match="plain HTTP"):
        freshtoken.discover("http://id.example.invalid", cache=False)


def test_endpoints_must_be_https(oauth_server: ReferenceServer) -> None:
    """A document pointing a token endpoint at plain HTTP off loopback is refused."""
    document = {"issuer": "https://id.example", "token_endpoint": "http://id.example/token"}
    with pytest.raises(LoginFailed, match="plain HTTP"):
        ServerMetadata.from_document(document, issuer="https://id.example")


def test_discovery_is_cached_per_issuer(oauth_server: ReferenceServer) -> None:
    """A second discover() for the same issuer asks nobody."""
    freshtoken.discover(oauth_server.issuer)
    oauth_server.stop(wait=False)
    assert freshtoken.discover(oauth_server.issuer).token_endpoint == oauth_server.token_url


def test_an_issuer_with_a_query_is_refused() -> None:
    """RFC 8414 section 2: no query or fragment in an issuer."""
    with pytest.raises(LoginFailed, match="no query or fragment"):
        freshtoken.discover("https://id.example/?tenant=1", cache=False)
