"""The reference server's DPoP: every rule of proof checking, token binding and nonces,
over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx

from freshtoken import DPoPKey
from freshtoken.server import DPoPConfig, ReferenceServer
from freshtoken.testing import ServerFactory


def _ath(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _login(server: ReferenceServer, key: DPoPKey, client_id: str = "demo-public") -> Any:
    form = {"grant_type": "password", "username": "demo", "password": "demo"}
    form["client_id"] = client_id
    if client_id == "demo":
        form["client_secret"] = "demo-secret"
    proof = key.proof("POST", server.token_url, now=server.now(), nonce=server.state.dpop.nonce())
    return httpx.post(server.token_url, data=form, headers={"DPoP": proof})


def _api(server: ReferenceServer, token: str, proof: str | None, scheme: str = "DPoP") -> Any:
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return httpx.get(server.url + "/api/me", headers=headers)


def test_a_proof_at_the_token_endpoint_binds_the_token(oauth_server: ReferenceServer) -> None:
    """A token request with a proof gets a DPoP token naming the key (cnf.jkt)."""
    key = DPoPKey.generate()
    answer = _login(oauth_server, key)
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "DPoP"
    payload = body["access_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["cnf"] == {"jkt": key.thumbprint}
    metadata = httpx.get(oauth_server.metadata_url).json()
    assert "ES256" in metadata["dpop_signing_alg_values_supported"]


def _bad_proofs(server: ReferenceServer, key: DPoPKey, token: str) -> dict[str, str]:
    url, now, ath = server.url + "/api/me", server.now(), _ath(token)
    good = key.proof("GET", url, now=now, ath=ath)
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {
        "wrong method": key.proof("POST", url, now=now, ath=ath),
        "wrong url": key.proof("GET", server.url + "/api/items", now=now, ath=ath),
        "too old": key.proof("GET", url, now=now - 3600, ath=ath),
        "from the future": key.proof("GET", url, now=now + 3600, ath=ath),
        "no ath": key.proof("GET", url, now=now),
        "another token's ath": key.proof("GET", url, now=now, ath=_ath("other")),
        "tampered claims": f"{header}.{_b64({**claims, 'htm': 'GET', 'x': 1})}.{signature}",
        "alg none": f"{_b64({'typ': 'dpop+jwt', 'alg': 'none', 'jwk': key.public_jwk})}.{payload}.",
        "private key in header": f"{_b64({**json.loads(_unb64(header)), 'jwk': key.private_jwk()})}"
        f".{payload}.{signature}",
        "not a jwt": "garbage",
        "huge": "a." + "b" * 10_000 + ".c",
    }


def test_every_broken_proof_is_refused(oauth_server: ReferenceServer) -> None:
    """Wrong htm, htu, iat, ath, a bad signature, alg none, a private jwk, garbage: 401
    invalid_dpop_proof with a DPoP challenge, never a 500."""
    key = DPoPKey.generate()
    token = _login(oauth_server, key).json()["access_token"]
    for why, proof in _bad_proofs(oauth_server, key, token).items():
        answer = _api(oauth_server, token, proof)
        assert answer.status_code == 401, why
        assert answer.json()["error"] == "invalid_dpop_proof", why
        assert answer.headers["WWW-Authenticate"].startswith("DPoP "), why
    assert _api(oauth_server, token, None).status_code == 401  # no proof at all
    url = oauth_server.url + "/api/me"
    good = key.proof("GET", url, now=oauth_server.now(), ath=_ath(token))
    two = httpx.get(
        url, headers=[("Authorization", f"DPoP {token}"), ("DPoP", good), ("DPoP", good)]
    )
    assert two.status_code == 401
    assert _api(oauth_server, token, good).status_code == 200
    assert _api(oauth_server, token, good).status_code == 401  # the same proof again: replay
    assert oauth_server.stats()["dpop_replays"] == 1


def test_a_bound_token_needs_its_own_key_and_scheme(oauth_server: ReferenceServer) -> None:
    """A bound token as Bearer, or with another key's proof, is invalid_token; an unbound
    token sent as DPoP is refused too."""
    key, thief = DPoPKey.generate(), DPoPKey.generate()
    token = _login(oauth_server, key).json()["access_token"]
    url, now = oauth_server.url + "/api/me", oauth_server.now()
    assert _api(oauth_server, token, None, "Bearer").status_code == 401
    stolen = _api(oauth_server, token, thief.proof("GET", url, now=now, ath=_ath(token)))
    assert stolen.status_code == 401
    assert stolen.json()["error"] == "invalid_token"
    bearer = oauth_server.login()["access_token"]
    assert (
        _api(oauth_server, bearer, key.proof("GET", url, now=now, ath=_ath(bearer))).status_code
        == 401
    )
    assert _api(oauth_server, bearer, None, "Bearer").status_code == 200


def test_a_public_clients_refresh_token_is_bound_to_its_key(
    oauth_server: ReferenceServer,
) -> None:
    """A public client refreshes only with a proof of the key it logged in with; a
    confidential client's refresh token is not bound."""
    key, other = DPoPKey.generate(), DPoPKey.generate()
    refresh = _login(oauth_server, key).json()["refresh_token"]
    form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": "demo-public"}
    url = oauth_server.token_url
    for proof in (None, other.proof("POST", url, now=oauth_server.now())):
        headers = {} if proof is None else {"DPoP": proof}
        refused = httpx.post(url, data=form, headers=headers)
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_grant"
    accepted = httpx.post(
        url, data=form, headers={"DPoP": key.proof("POST", url, now=oauth_server.now())}
    )
    assert accepted.status_code == 200
    assert accepted.json()["token_type"] == "DPoP"
    confidential = _login(oauth_server, key, "demo").json()["refresh_token"]
    unbound = oauth_server.refresh(confidential)  # no proof: a Bearer token
    assert unbound["token_type"] == "Bearer"


def test_nonces_are_demanded_rotated_and_handed_out(oauth_server_factory: ServerFactory) -> None:
    """With nonces on: a proof without the current nonce gets use_dpop_nonce and the nonce
    (token endpoint 400, API 401); every answer carries it; it changes on schedule and on
    demand."""
    server = oauth_server_factory(dpop=DPoPConfig(nonces=True, nonce_ttl=60))
    key = DPoPKey.generate()
    form = {"grant_type": "password", "username": "demo", "password": "demo"}
    form["client_id"] = "demo-public"
    first = httpx.post(
        server.token_url,
        data=form,
        headers={"DPoP": key.proof("POST", server.token_url, now=server.now())},
    )
    assert first.status_code == 400
    assert first.json()["error"] == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    second = httpx.post(
        server.token_url,
        data=form,
        headers={"DPoP": key.proof("POST", server.token_url, now=server.now(), nonce=nonce)},
    )
    assert second.status_code == 200
    assert second.headers["DPoP-Nonce"] == nonce
    token = second.json()["access_token"]
    url = server.url + "/api/me"
    server.advance(61)
    stale = _api(
        server, token, key.proof("GET", url, now=server.now(), nonce=nonce, ath=_ath(token))
    )
    assert stale.status_code == 401
    assert 'error="use_dpop_nonce"' in stale.headers["WWW-Authenticate"]
    fresh = stale.headers["DPoP-Nonce"]
    assert fresh != nonce
    assert (
        _api(
            server, token, key.proof("GET", url, now=server.now(), nonce=fresh, ath=_ath(token))
        ).status_code
        == 200
    )
    answer = httpx.post(server.url + "/admin/faults", json={"dpop_new_nonce": 1})
    assert answer.status_code == 200
    demanded = _api(
        server, token, key.proof("GET", url, now=server.now(), nonce=fresh, ath=_ath(token))
    )
    assert demanded.status_code == 401
    assert demanded.headers["DPoP-Nonce"] not in (nonce, fresh)
    assert server.stats()["dpop_nonce_demands"] == 3
