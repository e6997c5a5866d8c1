"""DPoP's pieces without a network: keys, proofs, nonces, the challenges that reject a
token, the token endpoint exchange stepped by hand, key binding in the manager, and hostile
answers. (What each answer to a resource request leads to: tests/core/test_resource.py.)"""

from __future__ import annotations

import pickle
import time
from typing import Any

import httpx
import jwt
import pytest
from listener import Answer, Listener, Received, json_answer

import freshtoken
import freshtoken.httpx
from freshtoken import DPoPError, DPoPKey, TokenManager, TokenSet
from freshtoken._core.dpop_key import thumbprint_of
from freshtoken._core.policy import wants_refresh
from freshtoken._oauth.dpop import (
    DPoP,
    Nonces,
    access_token_hash,
    nonce_demanded,
    origin_key,
    target_uri,
)

ALGORITHMS = ["ES256", "EdDSA", "RS256"]


def _verified(proof: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header = jwt.get_unverified_header(proof)
    key = jwt.PyJWK(header["jwk"], algorithm=header["alg"]).key
    return header, jwt.decode(proof, key, algorithms=[header["alg"]])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_proof_is_a_signed_dpop_jwt_for_one_request(algorithm: str) -> None:
    """Each proof verifies with the public key in its header and names the request."""
    key = DPoPKey.generate(algorithm)  # type: ignore[arg-type]
    proof = key.proof("GET", "https://API.example:443/v1/x?q=secret#f", now=1000.7, nonce="n")
    header, claims = _verified(proof)
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] == algorithm
    assert "d" not in header["jwk"]
    assert thumbprint_of(header["jwk"]) == key.thumbprint
    assert claims["htm"] == "GET"
    assert claims["htu"] == "https://api.example/v1/x"
    assert claims["iat"] == 1000
    assert claims["nonce"] == "n"
    assert "ath" not in claims


def test_every_proof_has_a_new_jti() -> None:
    """Two proofs for the same request differ in jti."""
    key = DPoPKey.generate()
    jtis = {
        _verified(key.proof("GET", "https://a.example/", now=time.time()))[1]["jti"]
        for _ in range(50)
    }
    assert len(jtis) == 50


def test_ath_is_the_base64url_sha256_of_the_token() -> None:
    """RFC 9449 section 7's example access token hashes to the RFC's ath."""
    token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
    assert access_token_hash(token) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_thumbprint_is_rfc_7638() -> None:
    """RFC 7638 section 3.1's example key has the RFC's thumbprint."""
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
            "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65Y"
            "GjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdk"
            "t-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqD"
            "Kgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint_of(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(
    ("url", "htu"),
    [
        ("https://Example.COM:443/a?b=c#d", "https://example.com/a"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("https://user:pw@example.com/p", "https://example.com/p"),
        ("http://[::1]:80/x", "http://[::1]/x"),
    ],
)
def test_htu_has_no_query_fragment_or_user(url: str, htu: str) -> None:
    """htu is scheme, host, port and path only, normalised."""
    assert target_uri(url) == htu


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_key_survives_its_jwk_and_pickling(algorithm: str) -> None:
    """private_jwk/from_jwk and pickle give back the same key, which signs the same way."""
    key = DPoPKey.generate(algorithm)  # type: ignore[arg-type]
    again = DPoPKey.from_jwk(key.private_jwk())
    assert again == key
    assert pickle.loads(pickle.dumps(key)) == key
    assert (
        _verified(again.proof("POST", "https://a.example/t", now=1.0))[0]["jwk"] == key.public_jwk
    )


def test_a_key_shows_no_secret() -> None:
    """repr, str and a TokenSet's repr show the thumbprint, never the private key."""
    key = DPoPKey.generate()
    tokens = TokenSet("at", token_type="DPoP", dpop_key=key)
    secret = key.private_jwk()["d"]
    for text in (repr(key), str(key), repr(tokens), str(tokens)):
        assert secret not in text
    assert key.thumbprint in repr(key)


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, "private JWK"),
        ({"kty": "oct", "k": "c2VjcmV0", "d": "x"}, "alg must be one of"),
        ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}, "malformed"),
        ({"kty": "EC", "alg": "HS256", "d": "x"}, "alg must be one of"),
        ("not json", "JSON object"),
        ([1, 2], "JSON object"),
        ('{"kty": ' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
    ],
    ids=["public", "oct", "malformed", "hs256", "not-json", "array", "deep"],
)
def test_a_bad_key_is_refused_without_quoting_it(jwk: Any, message: str) -> None:
    """Malformed, public or symmetric keys are ValueErrors that quote nothing of the key."""
    with pytest.raises(ValueError, match=message) as caught:
        DPoPKey.from_jwk(jwk)
    assert "AA" not in str(caught.value)


def test_a_weak_rsa_key_is_refused() -> None:
    """An RS256 key under 2048 bits is refused."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    with pytest.raises(ValueError, match="2048"):
        DPoPKey(rsa.generate_private_key(65537, 1024), "RS256")


def test_a_stored_token_set_with_a_broken_key_is_a_clear_error() -> None:
    """A store holding a damaged key or a DPoP token without its key reads as an error."""
    key = DPoPKey.generate()
    data = TokenSet("at", token_type="DPoP", dpop_key=key).to_dict()
    assert TokenSet.from_dict(data).dpop_key == key
    data["dpop_key"] = {"kty": "EC", "d": "broken"}
    with pytest.raises(freshtoken.TokenResponseError, match="dpop_key"):
        TokenSet.from_dict(data)
    data["dpop_key"] = None
    with pytest.raises(freshtoken.TokenResponseError, match="needs the DPoP key"):
        TokenSet.from_dict(data)


# -- nonces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["", "x" * 513, "has space", 'quote"', "back\\slash", "ctl\x01", "new\nline", "é"],
)
def test_a_hostile_nonce_is_never_remembered(value: str) -> None:
    """Empty, huge, spaced, quoted, control or non-ASCII nonces are not cached."""
    nonces = Nonces()
    origin = origin_key("https://a.example/")
    assert nonces.learn(origin, value) is None
    assert nonces.get(origin) is None


def test_nonces_are_per_origin() -> None:
    """A nonce from one origin never goes to another (port and scheme count)."""
    nonces = Nonces()
    nonces.learn(origin_key("https://a.example/x"), "A")
    nonces.learn(origin_key("https://evil.example/"), "EVIL")
    assert nonces.get(origin_key("https://a.example:443/y")) == "A"
    assert nonces.get(origin_key("https://a.example:8443/")) is None
    assert nonces.get(origin_key("http://a.example/")) is None


# -- which challenges reject the token ---------------------------------------------------------


def _refreshes(status: int, lines: Any) -> bool:
    return wants_refresh(status, lines, (401,), ("bearer", "dpop"))


@pytest.mark.parametrize(
    ("lines", "refresh"),
    [
        ('DPoP error="invalid_token"', True),
        ('DPoP algs="ES256"', True),
        ('DPoP error="use_dpop_nonce"', False),
        ('DPoP error="invalid_dpop_proof"', False),
        (['Bearer realm="x"', 'DPoP error="invalid_dpop_proof"'], False),
    ],
)
def test_dpop_challenges_count_for_a_dpop_manager(lines: Any, refresh: bool) -> None:
    """A DPoP manager refreshes on DPoP invalid_token, not on nonce or proof errors; a
    Bearer manager ignores DPoP challenges as before."""
    assert _refreshes(401, lines) is refresh
    assert nonce_demanded(401, lines) is ("use_dpop_nonce" in str(lines))


# -- the token endpoint exchange, stepped by hand --------------------------------------------


def _answer(request: httpx.Request, status: int, body: dict[str, Any], nonce: str | None) -> Any:
    headers = {} if nonce is None else {"DPoP-Nonce": nonce}
    return httpx.Response(status, json=body, headers=headers, request=request)


def test_the_token_request_retries_once_with_the_servers_nonce() -> None:
    """400 use_dpop_nonce: the same request again with a new proof carrying the nonce."""
    dpop, key = DPoP("ES256"), DPoPKey.generate()
    flow = dpop.token_request(httpx.Request("POST", "https://as.example/token"), key, time.time)
    first = next(flow)
    assert "nonce" not in _verified(first.headers["DPoP"])[1]
    jti = _verified(first.headers["DPoP"])[1]["jti"]
    second = flow.send(_answer(first, 400, {"error": "use_dpop_nonce"}, "n1"))
    claims = _verified(second.headers["DPoP"])[1]
    assert claims["nonce"] == "n1"
    assert claims["jti"] != jti
    with pytest.raises(StopIteration) as done:
        flow.send(_answer(second, 400, {"error": "use_dpop_nonce"}, "n2"))
    assert done.value.value.status_code == 400  # one retry only: the caller reads the error


def test_a_nonce_from_a_success_is_kept_for_the_next_request() -> None:
    """A DPoP-Nonce on any answer is used by the next proof to that origin."""
    dpop, key = DPoP("ES256"), DPoPKey.generate()
    flow = dpop.token_request(httpx.Request("POST", "https://as.example/token"), key, time.time)
    with pytest.raises(StopIteration):
        flow.send(_answer(next(flow), 200, {"access_token": "a"}, "later"))
    assert dpop.nonces.get(origin_key("https://as.example/")) == "later"


# -- the manager: which key, and refusing the wrong one -------------------------------------


def _endpoint_answer(token_type: str = "DPoP", access_token: str = "new") -> Answer:
    return json_answer({"access_token": access_token, "token_type": token_type, "expires_in": 60})


def test_a_dpop_answer_without_dpop_configured_is_refused() -> None:
    """token_type DPoP to a manager without dpop: unsupported_token_type, tokens kept."""
    with Listener(lambda _: _endpoint_answer()) as server:
        refresher = freshtoken.OAuth2Refresher(server.url + "/token", client_id="c")
        manager = TokenManager(refresher, retry=freshtoken.RetryPolicy(attempts=1))
        old = TokenSet("old", refresh_token="r", expires_at=0.0)
        manager.set_tokens(old)
        with pytest.raises(freshtoken.RefreshFailed) as caught:
            manager.refresh()
    assert caught.value.error == "unsupported_token_type"
    assert manager.store.load() is not None


def test_an_access_token_bound_to_another_key_is_refused() -> None:
    """A JWT access token whose cnf.jkt names another key than ours is not accepted."""
    other = DPoPKey.generate()
    token = jwt.encode({"cnf": {"jkt": other.thumbprint}}, "k" * 32, algorithm="HS256")
    with Listener(lambda _: _endpoint_answer(access_token=token)) as server:
        refresher = freshtoken.OAuth2Refresher(server.url + "/token", client_id="c")
        manager = TokenManager(
            refresher, retry=freshtoken.RetryPolicy(attempts=1), dpop=DPoPKey.generate()
        )
        manager.set_tokens(TokenSet("old", refresh_token="r", expires_at=0.0))
        with pytest.raises(freshtoken.RefreshFailed) as caught:
            manager.refresh()
    assert caught.value.error == "invalid_dpop_binding"


def test_tokens_bound_to_another_key_are_not_refreshed_with_ours() -> None:
    """Given key K2, tokens bound to K are refused at set_tokens and at refresh; kept."""
    key = DPoPKey.generate()
    bound = TokenSet("at", "DPoP", refresh_token="r", expires_at=0.0, dpop_key=key)
    refresher = freshtoken.OAuth2Refresher("https://as.example/token", client_id="c")
    manager = TokenManager(refresher, freshtoken.MemoryStore(bound), dpop=DPoPKey.generate())
    with pytest.raises(DPoPError) as caught:
        manager.set_tokens(bound)
    assert caught.value.error == "dpop_key_mismatch"
    with pytest.raises(DPoPError) as caught:
        manager.get_tokens()  # expired: a refresh, which must not sign with another key
    assert caught.value.error == "dpop_key_mismatch"
    assert key.thumbprint in str(caught.value)
    assert manager.store.load() is not None


def test_bound_tokens_need_a_dpop_manager() -> None:
    """A manager without dpop refuses DPoP-bound tokens rather than refresh them unsigned."""
    key = DPoPKey.generate()
    bound = TokenSet("at", "DPoP", refresh_token="r", expires_at=0.0, dpop_key=key)
    refresher = freshtoken.OAuth2Refresher("https://as.example/token", client_id="c")
    manager = TokenManager(refresher, freshtoken.MemoryStore(bound))
    with pytest.raises(DPoPError) as caught:
        manager.set_tokens(bound)
    assert caught.value.error == "dpop_not_configured"
    with pytest.raises(DPoPError):
        manager.get_tokens()
    assert manager.store.load() is not None


def test_a_refresher_that_cannot_sign_is_refused_at_once() -> None:
    """dpop with a FunctionRefresher: a clear error when the manager is made."""
    with pytest.raises(DPoPError, match="cannot send DPoP proofs"):
        TokenManager(freshtoken.FunctionRefresher(lambda current: {}), dpop="ES256")
    with pytest.raises(ValueError, match="dpop must be"):
        TokenManager(
            freshtoken.OAuth2Refresher("https://as.example/t", client_id="c"),
            dpop="HS256",  # type: ignore[arg-type]
        )


def test_a_nonce_from_another_origin_never_reaches_ours() -> None:
    """A DPoP-Nonce from another origin (a redirect's target, another API) is kept for that
    origin only: the proofs to ours never carry it."""
    key = DPoPKey.generate()
    proofs: list[str] = []

    def api(request: Received) -> Answer:
        proofs.append(request.headers.get("dpop", ""))
        return json_answer({"ok": True})

    def other(_: Received) -> Answer:
        return Answer(200, [("DPoP-Nonce", "EVIL"), ("Content-Type", "application/json")], b"{}")

    refresher = freshtoken.OAuth2Refresher("https://as.example/token", client_id="c")
    manager = TokenManager(refresher, dpop=key)
    manager.set_tokens(TokenSet("at", token_type="DPoP", dpop_key=key))
    auth = freshtoken.httpx.TokenAuth(manager)
    with Listener(api) as ours, Listener(other) as theirs, httpx.Client(auth=auth) as client:
        client.get(theirs.url + "/x")
        client.get(ours.url + "/y")
    assert "nonce" not in _verified(proofs[-1])[1]
