"""JWTBearer and TokenExchange as refreshers of a TokenManager, against the reference server
over real HTTP: acquisition from nothing, a new assertion per acquisition, delegation chains
that stay fresh, failures that end or keep the session, and secrets kept out of errors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from listener import Answer, Listener, Received, json_answer

import freshtoken
from freshtoken import (
    ClientCredentials,
    JWTBearer,
    OAuth2Refresher,
    RefreshFailed,
    RetryPolicy,
    SessionExpired,
    TokenExchange,
    TokenManager,
    TokenSet,
)
from freshtoken.server import Client, ReferenceServer
from freshtoken.server._config import DEMO_CLIENTS, JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT
from freshtoken.testing import ServerFactory

JWT_BEARER: Final = JWT_BEARER_GRANT
EXCHANGE: Final = TOKEN_EXCHANGE_GRANT
FAST = RetryPolicy(attempts=2, initial=0.001, maximum=0.002)

KEY = ec.generate_private_key(ec.SECP256R1())
PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PUBLIC = (
    KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
ROBOT = Client("robot@example.iam", None, frozenset({JWT_BEARER}), public_key=PUBLIC)
AGENT = Client("agent", "agent-secret", frozenset({"client_credentials", EXCHANGE}))


def me(server: ReferenceServer, tokens: TokenSet) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/api/me", headers={"Authorization": tokens.authorization})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def by_grant(server: ReferenceServer, grant: str) -> int:
    return int(server.stats()["token_requests_by_grant"][grant])


# -- JWTBearer ----------------------------------------------------------------------------


@pytest.fixture
def real_time_server(oauth_server_factory: ServerFactory) -> ReferenceServer:
    """Assertions carry the time of day: the server runs on the real clock."""
    return oauth_server_factory(clients=(*DEMO_CLIENTS, ROBOT), clock=time.time)


def test_a_manager_acquires_with_a_new_assertion_each_time(
    real_time_server: ReferenceServer,
) -> None:
    """No login first; every acquisition signs a new assertion (the server refuses replays)."""
    server = real_time_server
    refresher = JWTBearer(server.token_url, private_key=PEM, issuer=ROBOT.client_id)
    with TokenManager(refresher, retry=FAST) as manager:
        first = manager.get_tokens()
        assert me(server, first)["sub"] == ROBOT.client_id
        second = manager.refresh()
        assert second.access_token != first.access_token
    assert by_grant(server, "jwt_bearer") == 2
    assert server.stats()["invalid_grant"] == 0


def test_a_salesforce_style_assertion_acts_for_a_user(real_time_server: ReferenceServer) -> None:
    """iss the client, sub the user, aud the server's login URL (here its issuer)."""
    server = real_time_server
    refresher = JWTBearer(
        server.token_url,
        private_key=PEM,
        issuer=ROBOT.client_id,
        subject="alice",
        audience=server.issuer,
        scope="read",
    )
    with TokenManager(refresher) as manager:
        who = me(server, manager.get_tokens())
    assert (who["sub"], who["username"], who["scope"]) == ("alice", "alice", "read")


def test_a_google_service_account_key_file(
    real_time_server: ReferenceServer, tmp_path: Path
) -> None:
    """from_service_account_file: iss client_email, aud token_uri, kid private_key_id, scopes
    in the assertion's scope claim."""
    server = real_time_server
    key_file = tmp_path / "service-account.json"
    info = {
        "type": "service_account",
        "project_id": "demo",
        "private_key_id": "key-1",
        "private_key": PEM,
        "client_email": ROBOT.client_id,
        "client_id": "1234",
        "token_uri": server.token_url,
    }
    key_file.write_text(json.dumps(info))
    refresher = JWTBearer.from_service_account_file(key_file, scopes=["read"])
    assertion = parse_qs(refresher.build_request(None).content.decode())["assertion"][0]
    assert jwt.get_unverified_header(assertion)["kid"] == "key-1"
    claims = jwt.decode(assertion, options={"verify_signature": False})
    assert (claims["iss"], claims["aud"], claims["scope"]) == (
        ROBOT.client_id,
        server.token_url,
        "read",
    )
    assert "sub" not in claims
    assert claims["exp"] - claims["iat"] == 60
    with TokenManager(refresher) as manager:
        assert me(server, manager.get_tokens())["scope"] == "read"


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ({"type": "service_account"}, "no client_email, private_key, token_uri"),
        (
            {"type": "authorized_user", "client_email": "a", "private_key": "b", "token_uri": "c"},
            "type",
        ),
        (
            {
                "type": "service_account",
                "client_email": "a",
                "private_key": "KEY",
                "token_uri": "https://oauth2.example/token",
            },
            "PEM",
        ),
    ],
)
def test_a_bad_service_account_key_is_one_clear_error(info: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        JWTBearer.from_service_account_info(info)
    assert "KEY" not in str(caught.value)


def test_a_key_file_that_is_not_json_says_so(tmp_path: Path) -> None:
    bad = tmp_path / "key.json"
    bad.write_text("-----BEGIN PRIVATE KEY-----")
    with pytest.raises(ValueError, match="is not JSON"):
        JWTBearer.from_service_account_file(bad)
    with pytest.raises(ValueError, match="cannot read"):
        JWTBearer.from_service_account_file(tmp_path / "missing.json")


def test_a_refused_assertion_ends_the_session(real_time_server: ReferenceServer) -> None:
    """invalid_grant (here: a user the server does not know) is permanent: SessionExpired."""
    server = real_time_server
    refresher = JWTBearer(server.token_url, private_key=PEM, issuer=ROBOT.client_id, subject="x")
    expired: list[BaseException] = []
    manager = TokenManager(refresher, on_session_expired=expired.append)
    with manager, pytest.raises(SessionExpired) as caught:
        manager.get_tokens()
    assert caught.value.error == "invalid_grant"
    assert len(expired) == 1


def test_jwt_bearer_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="claims may not set aud, iss"):
        JWTBearer("https://as/token", private_key=PEM, issuer="i", claims={"iss": "x", "aud": "y"})
    with pytest.raises(ValueError, match="lifetime"):
        JWTBearer("https://as/token", private_key=PEM, issuer="i", lifetime=0)
    with pytest.raises(ValueError, match="not an unencrypted PEM"):
        JWTBearer("https://as/token", private_key="-----BEGIN nonsense", issuer="i")
    with pytest.raises(ValueError, match="needs a client_id"):
        JWTBearer("https://as/token", private_key=PEM, issuer="i", client_secret="s")
    refresher = JWTBearer("https://as/token", private_key=PEM, issuer="i")
    assert "PRIVATE" not in repr(refresher)
    assert "PRIVATE" not in repr(refresher.signer)


def echo(request: Received) -> Answer:
    """A careless token endpoint: its error repeats the request body."""
    said = f"body {request.body.decode('latin-1')}"
    return json_answer({"error": "invalid_grant", "error_description": said}, 400)


def test_an_echoed_assertion_or_subject_token_is_cut_out_of_the_error() -> None:
    with Listener(echo) as listener:
        refresher = JWTBearer(f"{listener.url}/token", private_key=PEM, issuer="robot")
        with pytest.raises(SessionExpired) as bearer:
            refresher.refresh(None)
        exchange = TokenExchange(f"{listener.url}/token", subject="the-subject-token-1234")
        with pytest.raises(SessionExpired) as exchanged:
            exchange.refresh(None)
    assert "[redacted]" in str(bearer.value)
    assert "eyJ" not in str(bearer.value)  # no part of the assertion's JWS
    assert "the-subject-token-1234" not in str(exchanged.value)
    assert "[redacted]" in str(exchanged.value)


# -- TokenExchange ------------------------------------------------------------------------


@pytest.fixture
def server(oauth_server_factory: ServerFactory) -> ReferenceServer:
    return oauth_server_factory(clients=(*DEMO_CLIENTS, AGENT))


def alice(server: ReferenceServer) -> TokenManager:
    """The user's own session: demo-public logged in as alice, on the server's clock."""
    refresher = OAuth2Refresher(server.token_url, client_id="demo-public")
    manager = TokenManager(refresher, clock=server.clock, retry=FAST)
    manager.login(refresher.password_login, username="alice", password="alice")
    return manager


def test_on_behalf_of_a_users_session(server: ReferenceServer) -> None:
    """The service's token speaks for alice; the subject token came from her manager."""
    user = alice(server)
    refresher = TokenExchange(
        server.token_url, subject=user, client_id="demo", client_secret="demo-secret"
    )
    with TokenManager(refresher, clock=server.clock) as service:
        who = me(server, service.get_tokens())
    assert (who["sub"], who["client_id"]) == ("alice", "demo")
    user.close()


def test_the_chain_stays_fresh(server: ReferenceServer) -> None:
    """Both tokens expire: the next request refreshes alice's session once and exchanges her
    new token; the old subject token is never presented again."""
    user = alice(server)
    refresher = TokenExchange(
        server.token_url, subject=user, client_id="demo", client_secret="demo-secret"
    )
    with TokenManager(refresher, clock=server.clock, retry=FAST) as service:
        before = service.get_tokens()
        server.advance(server.config.access_ttl + 1)
        after = service.get_tokens()
        assert after.access_token != before.access_token
        assert me(server, after)["sub"] == "alice"
    stats = server.stats()
    assert stats["refreshes"] == 1
    assert stats["token_requests_by_grant"]["token_exchange"] == 2
    assert stats["token_errors"] == 0
    user.close()


def test_an_agent_acts_for_the_user(server: ReferenceServer) -> None:
    """Delegation for agents: the actor token comes from the agent's own client credentials
    manager, and the issued token names it in ``act``."""
    user = alice(server)
    agent = TokenManager(
        ClientCredentials(server.token_url, client_id="agent", client_secret="agent-secret"),
        clock=server.clock,
    )
    refresher = TokenExchange(
        server.token_url,
        subject=user,
        actor=agent,
        client_id="agent",
        client_secret="agent-secret",
        scope="read",
        audience=server.config.audience,
        resource=f"{server.url}/api",
    )
    with TokenManager(refresher, clock=server.clock) as delegated:
        who = me(server, delegated.get_tokens())
    assert (who["sub"], who["client_id"], who["scope"]) == ("alice", "agent", "read")
    assert who["act"] == {"sub": "agent"}
    user.close()
    agent.close()


def test_subject_sources_a_function_an_async_function_or_a_string(
    server: ReferenceServer,
) -> None:
    user = alice(server)

    async def asynchronous() -> str:
        return user.get_tokens().access_token

    sources: list[Any] = [user.get_tokens, asynchronous, user.get_tokens().access_token]
    for source in sources:
        refresher = TokenExchange(
            server.token_url, subject=source, client_id="demo", client_secret="demo-secret"
        )
        with TokenManager(refresher, clock=server.clock) as service:
            assert me(server, service.get_tokens())["sub"] == "alice"
    user.close()


@pytest.mark.anyio
async def test_async_callers_get_exchanged_tokens(server: ReferenceServer) -> None:
    user = alice(server)
    refresher = TokenExchange(
        server.token_url, subject=user, client_id="demo", client_secret="demo-secret"
    )
    async with TokenManager(refresher, clock=server.clock) as service:
        tokens = await service.aget_tokens()
    assert me(server, tokens)["sub"] == "alice"
    user.close()


def test_the_subjects_session_ending_ends_the_exchange(server: ReferenceServer) -> None:
    user = alice(server)
    user.clear()  # alice logged out
    refresher = TokenExchange(
        server.token_url, subject=user, client_id="demo", client_secret="demo-secret"
    )
    service = TokenManager(refresher, clock=server.clock)
    with service, pytest.raises(SessionExpired, match="the subject token's session is over"):
        service.get_tokens()
    assert by_grant(server, "token_exchange") == 0
    user.close()


def test_a_subject_source_that_gives_no_token_is_a_refresh_failure(
    server: ReferenceServer,
) -> None:
    refresher = TokenExchange(server.token_url, subject=lambda: 42, client_id="demo")  # type: ignore[arg-type]
    with pytest.raises(RefreshFailed, match="gave int, not a token"):
        refresher.refresh(None)


def test_an_unknown_target_is_refused(server: ReferenceServer) -> None:
    user = alice(server)
    refresher = TokenExchange(
        server.token_url,
        subject=user,
        audience="https://elsewhere.example",
        client_id="demo",
        client_secret="demo-secret",
    )
    with pytest.raises(RefreshFailed) as caught:
        refresher.refresh(None)
    assert caught.value.error == "invalid_target"
    user.close()


def test_token_types_are_names_or_uris() -> None:
    refresher = TokenExchange(
        "https://as/token",
        subject="s",
        subject_token_type="id_token",
        actor="a",
        actor_token_type="urn:example:token",
        requested_token_type="jwt",
    )
    form = parse_qs(refresher.build_request(None).content.decode())
    assert form["subject_token_type"] == ["urn:ietf:params:oauth:token-type:id_token"]
    assert form["actor_token_type"] == ["urn:example:token"]
    assert form["requested_token_type"] == ["urn:ietf:params:oauth:token-type:jwt"]
    assert "client_id" not in form
    with pytest.raises(ValueError, match="unknown token type"):
        TokenExchange("https://as/token", subject="s", subject_token_type="access token")


def test_the_new_names_are_public() -> None:
    assert freshtoken.JWTBearer is JWTBearer
    assert freshtoken.TokenExchange is TokenExchange
