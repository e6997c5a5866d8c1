"""The reference server's JWT bearer grant (RFC 7523 section 2.1) and token exchange
(RFC 8693), over real HTTP: what is accepted, and every refusal with its RFC error code."""

from __future__ import annotations

import secrets
import time
from typing import Any, Final

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from freshtoken.server import Client, ReferenceServer
from freshtoken.server._config import (
    ALL_GRANTS,
    DEMO_CLIENTS,
    JWT_BEARER_GRANT,
    TOKEN_EXCHANGE_GRANT,
)
from freshtoken.testing import ServerFactory

JWT_BEARER: Final = JWT_BEARER_GRANT
EXCHANGE: Final = TOKEN_EXCHANGE_GRANT
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"


def public_pem(private: Any) -> str:
    return str(
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


KEY = ec.generate_private_key(ec.SECP256R1())
ROBOT = Client("robot@example.iam", None, frozenset({JWT_BEARER}), public_key=public_pem(KEY))
NO_GRANT = Client("keyed", None, frozenset({"client_credentials"}), public_key=public_pem(KEY))
AGENT = Client("agent", "agent-secret", frozenset({"client_credentials", EXCHANGE}))


@pytest.fixture
def server(oauth_server_factory: ServerFactory) -> ReferenceServer:
    """Assertions carry the time of day: this server runs on the real clock."""
    return oauth_server_factory(clients=(*DEMO_CLIENTS, ROBOT, NO_GRANT, AGENT), clock=time.time)


def signed(key: Any = KEY, algorithm: str = "ES256", **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ROBOT.client_id,
        "aud": claims.pop("aud", None),
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
        **claims,
    }
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=algorithm)


def bearer_grant(http: httpx.Client, server: ReferenceServer, assertion: str, **form: str) -> Any:
    data = {"grant_type": JWT_BEARER, "assertion": assertion, **form}
    return http.post(server.token_url, data=data)


def me(http: httpx.Client, server: ReferenceServer, token: str) -> Any:
    return http.get(f"{server.url}/api/me", headers={"Authorization": f"Bearer {token}"})


# -- JWT bearer ---------------------------------------------------------------------------


def test_a_service_account_gets_a_token_for_itself(
    server: ReferenceServer, http: httpx.Client
) -> None:
    """No sub: the client itself; no client authentication; no refresh token; once only."""
    assertion = signed(aud=server.token_url)
    answer = bearer_grant(http, server, assertion)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body
    who = me(http, server, body["access_token"]).json()
    assert (who["sub"], who["client_id"], who["username"]) == (ROBOT.client_id,) * 2 + (None,)
    replay = bearer_grant(http, server, assertion)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert "replayed" in replay.json()["error_description"]
    assert server.stats()["token_requests_by_grant"]["jwt_bearer"] == 2


def test_sub_names_the_user_to_act_for(server: ReferenceServer, http: httpx.Client) -> None:
    """Salesforce's flow and Google's domain-wide delegation: the token speaks for alice."""
    answer = bearer_grant(http, server, signed(aud=server.token_url, sub="alice"))
    who = me(http, server, answer.json()["access_token"]).json()
    assert (who["sub"], who["username"], who["client_id"]) == ("alice", "alice", ROBOT.client_id)


@pytest.mark.parametrize(
    ("form", "claims", "granted"),
    [
        ({}, {}, "read write"),
        ({"scope": "read"}, {}, "read"),
        ({}, {"scope": "write"}, "write"),  # Google reads the scope from the assertion
        ({"scope": "read"}, {"scope": "write"}, "read"),  # the form wins
    ],
)
def test_the_scope_comes_from_the_form_or_the_assertion(
    server: ReferenceServer,
    http: httpx.Client,
    form: dict[str, str],
    claims: dict[str, Any],
    granted: str,
) -> None:
    answer = bearer_grant(http, server, signed(aud=server.token_url, **claims), **form)
    assert answer.json()["scope"] == granted


def test_a_scope_beyond_the_clients_is_invalid_scope(
    server: ReferenceServer, http: httpx.Client
) -> None:
    answer = bearer_grant(http, server, signed(aud=server.token_url), scope="admin")
    assert answer.json()["error"] == "invalid_scope"


OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    ("make", "description"),
    [
        pytest.param(lambda url: signed(aud="https://elsewhere/token"), "refused", id="audience"),
        pytest.param(lambda url: signed(aud=url, exp=int(time.time()) - 5), "expired", id="exp"),
        pytest.param(
            lambda url: signed(aud=url, exp=int(time.time()) + 3600), "too long", id="long"
        ),
        pytest.param(
            lambda url: signed(aud=url, nbf=int(time.time()) + 600), "not valid yet", id="nbf"
        ),
        pytest.param(
            lambda url: signed(aud=url, iat=int(time.time()) + 600), "not valid yet", id="iat"
        ),
        pytest.param(lambda url: signed(aud=url, jti=None), "jti", id="no-jti"),
        pytest.param(lambda url: signed(aud=url, exp=None), "exp", id="no-exp"),
        pytest.param(lambda url: signed(aud=url, exp="tomorrow"), "number", id="exp-text"),
        pytest.param(lambda url: signed(aud=url, iss="nobody"), "no client", id="unknown-iss"),
        pytest.param(lambda url: signed(aud=url, iss="demo"), "no client", id="iss-without-key"),
        pytest.param(lambda url: signed(key=OTHER_KEY, aud=url), "refused", id="other-key"),
        pytest.param(lambda url: signed(aud=url, sub="mallory"), "no user", id="unknown-sub"),
        pytest.param(lambda url: signed(aud=url, scope=["read"]), "scope claim", id="scope-list"),
        pytest.param(lambda url: "a.b.c", "not a JWT", id="garbage"),
        pytest.param(lambda url: "x" * 5000, "not a JWT", id="huge"),
        pytest.param(
            lambda url: (
                jwt.encode({"iss": ROBOT.client_id, "aud": url}, "", algorithm="none") + "sig"
            ),
            "refused",
            id="alg-none",
        ),
        pytest.param(
            lambda url: jwt.encode(
                {"iss": ROBOT.client_id, "aud": url, "exp": 2**40, "jti": "j"},
                "a-secret-key-of-enough-length-for-hs256",
                algorithm="HS256",
            ),
            "refused",
            id="hmac",
        ),
    ],
)
def test_bad_assertions_are_invalid_grant(
    server: ReferenceServer, http: httpx.Client, make: Any, description: str
) -> None:
    """RFC 7523 3.1: every invalid assertion is invalid_grant, 400, never a 500."""
    answer = bearer_grant(http, server, make(server.token_url))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_grant"
    assert description in answer.json()["error_description"]


def test_the_issuer_and_the_authenticated_client_must_agree(
    server: ReferenceServer, http: httpx.Client
) -> None:
    """A client that authenticates presents only its own assertions."""
    answer = bearer_grant(http, server, signed(aud=server.token_url), client_id="demo-public")
    assert answer.json()["error"] == "invalid_grant"
    assert "another client" in answer.json()["error_description"]
    wrong = bearer_grant(
        http, server, signed(aud=server.token_url), client_id="demo", client_secret="nope"
    )
    assert wrong.json()["error"] == "invalid_client"


def test_a_client_without_the_grant_is_unauthorized(
    server: ReferenceServer, http: httpx.Client
) -> None:
    answer = bearer_grant(http, server, signed(aud=server.token_url, iss=NO_GRANT.client_id))
    assert answer.json()["error"] == "unauthorized_client"


def test_an_rsa_key_works_too(oauth_server_factory: ServerFactory, http: httpx.Client) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client = Client("rsa-robot", None, frozenset({JWT_BEARER}), public_key=public_pem(private))
    server = oauth_server_factory(clients=(client,), clock=time.time)
    assertion = signed(key=private, algorithm="RS256", aud=server.issuer, iss="rsa-robot")
    assert bearer_grant(http, server, assertion).status_code == 200


def test_metadata_lists_both_grants(server: ReferenceServer, http: httpx.Client) -> None:
    supported = http.get(server.metadata_url).json()["grant_types_supported"]
    assert JWT_BEARER in supported
    assert EXCHANGE in supported
    assert {JWT_BEARER, EXCHANGE} <= ALL_GRANTS


# -- token exchange -----------------------------------------------------------------------


def login(server: ReferenceServer, username: str = "alice") -> str:
    return str(server.login(username=username, password=username)["access_token"])


def agent_token(server: ReferenceServer) -> str:
    answer = server.client_credentials(client_id="agent", client_secret="agent-secret")
    return str(answer["access_token"])


def exchange(
    http: httpx.Client,
    server: ReferenceServer,
    subject: str,
    client: tuple[str, str] = ("demo", "demo-secret"),
    **form: str,
) -> Any:
    data = {
        "grant_type": EXCHANGE,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN,
        **form,
    }
    return http.post(server.token_url, data=data, auth=client)


def test_a_service_exchanges_a_users_token_for_its_own(
    server: ReferenceServer, http: httpx.Client
) -> None:
    """On behalf of: the new token is the subject's, issued to the exchanging client."""
    answer = exchange(http, server, login(server))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["issued_token_type"] == ACCESS_TOKEN
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body
    who = me(http, server, body["access_token"]).json()
    assert (who["sub"], who["username"], who["client_id"]) == ("alice", "alice", "demo")
    assert "act" not in who
    assert server.stats()["token_requests_by_grant"]["token_exchange"] == 1


def test_an_actor_token_is_named_in_act_and_chains_nest(
    server: ReferenceServer, http: httpx.Client
) -> None:
    """Delegation: the agent acts for alice; a second hop nests the first actor (RFC 8693
    section 4.1)."""
    actor = {"actor_token": agent_token(server), "actor_token_type": ACCESS_TOKEN}
    first = exchange(http, server, login(server), ("agent", "agent-secret"), **actor)
    token = first.json()["access_token"]
    assert me(http, server, token).json()["act"] == {"sub": "agent"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["act"] == {"sub": "agent"}
    demo_actor = str(server.client_credentials()["access_token"])
    second = exchange(http, server, token, actor_token=demo_actor, actor_token_type=ACCESS_TOKEN)
    assert me(http, server, second.json()["access_token"]).json()["act"] == {
        "sub": "demo",
        "act": {"sub": "agent"},
    }


def test_the_scope_narrows_and_never_widens(server: ReferenceServer, http: httpx.Client) -> None:
    subject = login(server)
    assert exchange(http, server, subject, scope="read").json()["scope"] == "read"
    assert exchange(http, server, subject, scope="admin").json()["error"] == "invalid_scope"


def test_audience_and_resource_may_name_this_server_only(
    server: ReferenceServer, http: httpx.Client
) -> None:
    subject = login(server)
    audience = server.config.audience
    ok = http.post(
        server.token_url,
        content=(
            f"grant_type={EXCHANGE}&subject_token={subject}&subject_token_type={ACCESS_TOKEN}"
            f"&audience={audience}&audience={audience}&resource={server.url}/api"
        ),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=("demo", "demo-secret"),
    )
    assert ok.status_code == 200, ok.text
    for field, value in (("audience", "another-api"), ("resource", "https://elsewhere/api")):
        refused = exchange(http, server, subject, ("demo", "demo-secret"), **{field: value})
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_target")


@pytest.mark.parametrize(
    ("change", "description"),
    [
        ({"subject_token": "not-a-token"}, "not one of ours"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"}, "unsupported"),
        ({"subject_token": None}, "subject_token is required"),
        ({"subject_token_type": None}, "subject_token_type is required"),
        ({"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"}, "only"),
        ({"actor_token": "x"}, "go together"),
        ({"actor_token_type": ACCESS_TOKEN}, "go together"),
        ({"actor_token": "forged.token.here", "actor_token_type": ACCESS_TOKEN}, "not one"),
    ],
)
def test_invalid_subject_or_actor_tokens_are_invalid_request(
    server: ReferenceServer, http: httpx.Client, change: dict[str, Any], description: str
) -> None:
    form = {"subject_token": login(server), "subject_token_type": ACCESS_TOKEN, **change}
    data = {"grant_type": EXCHANGE, **{k: v for k, v in form.items() if v is not None}}
    answer = http.post(server.token_url, data=data, auth=("demo", "demo-secret"))
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")
    assert description in answer.json()["error_description"]


def test_an_expired_or_revoked_subject_token_is_refused(
    oauth_server: ReferenceServer, http: httpx.Client
) -> None:
    subject = login(oauth_server)
    oauth_server.advance(oauth_server.config.access_ttl + 1)
    assert "expired" in exchange(http, oauth_server, subject).json()["error_description"]
    fresh = login(oauth_server)
    oauth_server.state.revoke_user("alice")
    assert "revoked" in exchange(http, oauth_server, fresh).json()["error_description"]


def test_revoking_the_users_session_revokes_what_was_exchanged(
    server: ReferenceServer, http: httpx.Client
) -> None:
    exchanged = exchange(http, server, login(server)).json()["access_token"]
    assert me(http, server, exchanged).status_code == 200
    server.state.revoke_user("alice")
    assert me(http, server, exchanged).status_code == 401


def test_clients_need_the_grant_and_their_credentials(
    server: ReferenceServer, http: httpx.Client
) -> None:
    subject = login(server)
    data = {"grant_type": EXCHANGE, "subject_token": subject, "subject_token_type": ACCESS_TOKEN}
    public = http.post(server.token_url, data={**data, "client_id": "demo-public"})
    assert public.json()["error"] == "unauthorized_client"
    assert http.post(server.token_url, data=data).json()["error"] == "invalid_client"


def test_a_delegation_chain_longer_than_eight_is_refused(
    server: ReferenceServer, http: httpx.Client
) -> None:
    token = login(server)
    actor = {"actor_token": agent_token(server), "actor_token_type": ACCESS_TOKEN}
    for _ in range(8):
        answer = exchange(http, server, token, ("demo", "demo-secret"), **actor)
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
    refused = exchange(http, server, token, ("demo", "demo-secret"), **actor)
    assert refused.json()["error"] == "invalid_request"
    assert "too long" in refused.json()["error_description"]
