"""DPoP through every integration: a fresh proof per attempt, nonces handled without a
refresh and without a loop, replays refused, the key shared through the store."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

import freshtoken
import freshtoken.httpx
from freshtoken._logins import flows  # the free logins, deprecated in the public API
from freshtoken.server import DPoPConfig, ReferenceServer

from .conftest import Env
from .drivers import Outcome

pytestmark = pytest.mark.dpop(only=True)

WORKER = Path(__file__).with_name("dpop_worker.py")


def _proof_claims(proof: str) -> dict[str, Any]:
    header = jwt.get_unverified_header(proof)
    key = jwt.PyJWK(header["jwk"], algorithm=header["alg"]).key
    claims: dict[str, Any] = jwt.decode(proof, key, algorithms=[header["alg"]])
    return claims


def _ath(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


def _statuses(outcomes: list[Outcome]) -> list[object]:
    return [o if isinstance(o, BaseException) else o[0] for o in outcomes]


def test_each_request_carries_a_fresh_proof_of_its_own(env: Env) -> None:
    """Every request carries a proof for its method and URL (no query), the token's hash and
    the server's nonce, with a jti never used before."""
    client = env.driver()
    seen = []
    for _ in range(2):
        status, body = client.post(env.url("/api/echo?secret=1#frag"), json={"a": 1})
        assert status == 200
        assert body["sub"] == "demo"  # the server checked the proof and the binding
        seen.append(_proof_claims(body["headers"]["dpop"]))
    tokens = env.manager.get_tokens()
    assert tokens.token_type == "DPoP"
    for claims in seen:
        assert claims["htm"] == "POST"
        assert claims["htu"] == env.url("/api/echo")
        assert claims["ath"] == _ath(tokens.access_token)
        assert claims["nonce"] == env.server.state.dpop.nonce()
    assert seen[0]["jti"] != seen[1]["jti"]
    assert env.stats()["dpop_replays"] == 0


@pytest.mark.every_store
def test_storm_after_expiry_refreshes_once_with_a_bound_refresh_token(env: Env) -> None:
    """Past expiry (and past the nonce's lifetime): one refresh, signed with the stored key
    after one nonce retry at the token endpoint; every request succeeds."""
    n = 32
    env.server.advance(301)
    outcomes = env.driver().storm(env.url("/api/me"), n)
    assert _statuses(outcomes) == [200] * n
    assert env.stats()["refreshes"] == 1
    assert env.stats()["unauthorized_401"] == 0
    assert env.manager.get_tokens().dpop_key == env.dpop_key


@pytest.mark.every_store
def test_nonce_rotation_mid_traffic_costs_one_retry_and_no_refresh(env: Env) -> None:
    """The nonce changes under a storm (on demand, then on the server's schedule): each
    request is retried once with the new nonce, nobody sees an error, nothing is refreshed."""
    client = env.driver()
    assert client.get(env.url("/api/me"))[0] == 200
    env.server.rotate_dpop_nonce()
    outcomes = client.storm(env.url("/api/me"), 16)
    assert _statuses(outcomes) == [200] * 16
    env.server.configure(dpop=DPoPConfig(nonces=True, nonce_ttl=100))
    env.server.advance(150)  # the nonce's lifetime is over, the token's is not
    outcomes = client.storm(env.url("/api/me"), 16)
    assert _statuses(outcomes) == [200] * 16
    stats = env.stats()
    assert stats["dpop_nonce_demands"] >= 2
    assert stats["refreshes"] == 0
    assert env.manager.stats.snapshot()["retries"] == 0  # no rejection reached the manager


def test_a_server_demanding_a_new_nonce_every_time_gets_one_retry(env: Env) -> None:
    """A resource that demands a new nonce every time: one retry, then its 401 reaches the
    caller; no refresh."""
    env.server.demand_new_dpop_nonce(1000)
    status, body = env.driver().get(env.url("/api/me"))
    assert status == 401
    assert body["error"] == "use_dpop_nonce"
    assert env.stats()["dpop_nonce_demands"] == 2
    assert env.stats()["refreshes"] == 0
    assert env.manager.stats.snapshot()["retries"] == 0


def test_a_token_endpoint_demanding_a_new_nonce_every_time_fails_clearly(env: Env) -> None:
    """The token endpoint demands a new nonce every time: one retry, then DPoPError; the
    tokens are kept and the server saw two token requests."""
    before = env.manager.store.load()
    env.server.demand_new_dpop_nonce(1000)
    env.server.advance(301)
    # Through the BFF the browser gets 503 temporarily_unavailable: the reason stays inside.
    expected: type[freshtoken.RefreshFailed | freshtoken.DPoPError] = (
        freshtoken.RefreshFailed if env.kind == "bff" else freshtoken.DPoPError
    )
    with pytest.raises(expected) as caught:
        env.driver().get(env.url("/api/me"))
    reason = "temporarily_unavailable" if env.kind == "bff" else "use_dpop_nonce"
    assert getattr(caught.value, "error", None) == reason
    assert env.stats()["token_requests"] == 2
    assert env.manager.store.load() == before


def test_a_replayed_proof_is_refused(env: Env) -> None:
    """A proof the integration sent, replayed with its token, is refused by the server."""
    status, body = env.driver().get(env.url("/api/echo"))
    assert status == 200
    proof = body["headers"]["dpop"]
    tokens = env.manager.get_tokens()
    replay = httpx.get(
        env.url("/api/echo"), headers={"Authorization": tokens.authorization, "DPoP": proof}
    )
    assert replay.status_code == 401
    assert 'error="invalid_dpop_proof"' in replay.headers["WWW-Authenticate"]
    assert env.stats()["dpop_replays"] == 1


def test_the_token_alone_is_useless(env: Env) -> None:
    """A stolen DPoP token sent as a Bearer token, or with a proof of another key, is refused."""
    tokens = env.manager.get_tokens()
    as_bearer = httpx.get(
        env.url("/api/me"), headers={"Authorization": f"Bearer {tokens.access_token}"}
    )
    assert as_bearer.status_code == 401
    thief = freshtoken.DPoPKey.generate()
    nonce = env.server.state.dpop.nonce()
    proof = thief.proof(
        "GET",
        env.url("/api/me"),
        now=env.server.clock(),
        nonce=nonce,
        ath=_ath(tokens.access_token),
    )
    stolen = httpx.get(
        env.url("/api/me"), headers={"Authorization": tokens.authorization, "DPoP": proof}
    )
    assert stolen.status_code == 401
    assert stolen.json()["error"] == "invalid_token"


PASSPHRASE = "correct horse battery staple"


@pytest.mark.parametrize("store_name", ["file", "redis"])
def test_the_key_travels_with_the_tokens_to_other_processes(
    oauth_server: ReferenceServer, store_name: str, request: pytest.FixtureRequest
) -> None:
    """Another process sharing the store (an encrypted file, Redis) signs with the stored
    key: its request and its refresh of a refresh token bound to the key succeed, and this
    process goes on with the tokens the other saved."""
    oauth_server.configure(dpop=DPoPConfig(nonces=True))
    if store_name == "file":
        location = str(request.getfixturevalue("tmp_path") / "tokens.json")
        name = ""
        store: freshtoken.TokenStore = freshtoken.FileStore(location, encryption_key=PASSPHRASE)
    else:
        location = request.getfixturevalue("shared_redis_server").url
        name = f"freshtoken:{uuid.uuid4().hex}"
        store = freshtoken.RedisStore(location, key=name)
    key = freshtoken.DPoPKey.generate("EdDSA")
    tokens = flows.password_login(
        oauth_server.token_url,
        username="demo",
        password="demo",
        client_id="demo-public",
        clock=oauth_server.clock,
        dpop=key,
    )
    refresher = freshtoken.OAuth2Refresher(oauth_server.token_url, client_id="demo-public")
    manager = freshtoken.TokenManager(refresher, store, clock=oauth_server.clock, dpop=key)
    manager.set_tokens(tokens)
    child = subprocess.run(
        [sys.executable, str(WORKER), store_name, location, name, PASSPHRASE, oauth_server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["200", key.thumbprint, "200"]
    assert oauth_server.stats()["refreshes"] == 1
    stored = store.load()
    assert stored is not None
    assert stored.tokens.dpop_key == key
    assert stored.tokens.access_token != tokens.access_token
    with httpx.Client(auth=freshtoken.httpx.TokenAuth(manager)) as client:
        assert client.get(oauth_server.url + "/api/me").status_code == 200
    store.close()
