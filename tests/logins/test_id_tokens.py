"""ID tokens: kept in the TokenSet through refreshes and stores, verified against the JWKS."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import freshtoken
from freshtoken import LoginFailed, TokenSet
from freshtoken._logins import flows  # the free logins, deprecated in the public API
from freshtoken._oauth.id_tokens import check_id_token_claims
from freshtoken.server import ReferenceServer
from freshtoken.testing import ServerFactory


@pytest.fixture
def live_server(oauth_server_factory: ServerFactory) -> ReferenceServer:
    """A server on the real clock: ID token expiry is checked against the time of day."""
    return oauth_server_factory(clock=time.time)


def login(server: ReferenceServer) -> TokenSet:
    return flows.browser_login(
        server.issuer, client_id="demo-public", open_browser=server.browser()
    )


def test_id_token_verified_then_refreshed_and_verified_again(live_server: ReferenceServer) -> None:
    """The login's ID token verifies; a refresh brings a new one, kept and verifiable."""
    refresher = freshtoken.OAuth2Refresher.from_issuer(live_server.issuer, client_id="demo-public")
    manager = freshtoken.TokenManager(refresher)
    manager.set_tokens(login(live_server))
    first = manager.get_tokens()
    claims = freshtoken.verify_id_token(
        first.id_token or "", issuer=live_server.issuer, client_id="demo-public"
    )
    assert claims["sub"] == "demo"
    assert claims == first.id_claims()
    live_server.expire_access_tokens()
    refreshed = manager.refresh()
    assert refreshed.id_token is not None
    assert refreshed.id_token != first.id_token
    again = freshtoken.verify_id_token(
        refreshed.id_token, issuer=live_server.issuer, client_id="demo-public"
    )
    assert again["auth_time"] == claims["auth_time"]
    assert "nonce" not in again


def test_rotated_keys_are_fetched_once_more(live_server: ReferenceServer) -> None:
    """A token signed by a key the cached JWKS lacks triggers one fresh fetch, then verifies."""
    old = login(live_server)
    freshtoken.verify_id_token(
        old.id_token or "", issuer=live_server.issuer, client_id="demo-public"
    )
    live_server.rotate_signing_key()
    new = login(live_server)
    assert (
        jwt.get_unverified_header(new.id_token or "")["kid"]
        != jwt.get_unverified_header(old.id_token or "")["kid"]
    )
    freshtoken.verify_id_token(
        new.id_token or "", issuer=live_server.issuer, client_id="demo-public"
    )


def test_a_foreign_signature_is_refused_after_one_refetch(live_server: ReferenceServer) -> None:
    """A kid nobody published: one JWKS fetch, then invalid_id_token."""
    genuine = login(live_server).id_claims()
    forger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(genuine, forger, algorithm="ES256", headers={"kid": "forged"})
    with pytest.raises(LoginFailed) as caught:
        freshtoken.verify_id_token(forged, issuer=live_server.issuer, client_id="demo-public")
    assert caught.value.error == "invalid_id_token"
    assert "no key 'forged'" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"aud": "someone-else"}, "not issued for the client"),
        ({"iss": "https://evil.example"}, "issued by"),
        ({"exp": 1}, "expired"),
        ({"nonce": "other"}, "nonce"),
        ({"aud": ["demo-public", "x"], "azp": None}, "azp"),
        ({"azp": "x"}, "issued to the party"),
        ({"iat": None}, "no iat"),
    ],
)
def test_claim_checks(change: dict[str, Any], expected: str) -> None:
    """Audience, issuer, expiry, nonce and authorized party are each checked."""
    claims: dict[str, Any] = {
        "iss": "https://id.example",
        "aud": "demo-public",
        "exp": 2_000,
        "iat": 1_000,
        "nonce": "n",
        **change,
    }
    claims = {name: value for name, value in claims.items() if value is not None}
    with pytest.raises(LoginFailed, match=expected):
        check_id_token_claims(
            claims, issuer="https://id.example", client_id="demo-public", nonce="n", now=1_500
        )


def test_none_and_symmetric_algorithms_are_refused(live_server: ReferenceServer) -> None:
    """alg=none or HS256 prove nothing here."""
    claims = login(live_server).id_claims()
    for token in (
        jwt.encode(claims, "", algorithm="none"),
        jwt.encode(claims, "a" * 32, algorithm="HS256"),
    ):
        with pytest.raises(LoginFailed, match="signed with"):
            freshtoken.verify_id_token(token, issuer=live_server.issuer, client_id="demo-public")


@pytest.mark.anyio
async def test_averify_id_token(live_server: ReferenceServer) -> None:
    """The async twin verifies the same token."""
    tokens = login(live_server)
    claims = await freshtoken.averify_id_token(
        tokens.id_token or "", issuer=live_server.issuer, client_id="demo-public"
    )
    assert claims["sub"] == "demo"


def test_id_token_survives_to_dict_and_the_file_store(
    live_server: ReferenceServer, tmp_path: Path
) -> None:
    """to_dict/from_dict and a FileStore round trip keep the ID token."""
    tokens = login(live_server)
    assert TokenSet.from_dict(tokens.to_dict()) == tokens
    store = freshtoken.FileStore(tmp_path / "tokens.json")
    store.save(tokens, expected_generation=None)
    loaded = store.load()
    assert loaded is not None
    assert loaded.tokens.id_token == tokens.id_token
    assert tokens.id_token is not None
    assert tokens.id_token not in repr(tokens)


def test_a_refresh_without_an_id_token_keeps_the_old_one() -> None:
    """RFC 6749 answers without id_token leave the login's in place."""
    first = TokenSet.from_response({"access_token": "a", "id_token": "x.y.z"})
    second = TokenSet.from_response({"access_token": "b"}, previous=first)
    assert second.id_token == "x.y.z"


def test_id_claims_of_nothing_and_of_garbage() -> None:
    """No ID token: {}; an ID token that is no JWT: TokenResponseError."""
    assert TokenSet("a").id_claims() == {}
    with pytest.raises(freshtoken.TokenResponseError):
        TokenSet("a", id_token="not-a-jwt").id_claims()
