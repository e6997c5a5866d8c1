"""The test bed's personalities say on the wire what each provider's documentation says
(their sources are cited in freshtoken/server/_personalities.py). Raw HTTP, no freshtoken
client: these are the facts the other tests stand on."""

from __future__ import annotations

import argparse
import threading
import time
from urllib.parse import parse_qsl

import httpx
import pytest

from freshtoken.server import ServerConfig
from freshtoken.server._command import config_from, configure_parser

from .conftest import Bed, BedFactory

CLIENT = {"client_id": "demo", "client_secret": "demo-secret"}


def post(bed: Bed, path: str, form: dict[str, str], **headers: str) -> httpx.Response:
    return httpx.post(bed.server.url + path, data={**CLIENT, **form}, headers=headers)


def password(bed: Bed, path: str = "/oauth/token", **headers: str) -> httpx.Response:
    form = {"grant_type": "password", "username": "demo", "password": "demo", "scope": "read"}
    return post(bed, bed.server.config.issuer_path + path, form, **headers)


def refresh(bed: Bed, path: str, token: str, **form: str) -> httpx.Response:
    return post(bed, path, {"grant_type": "refresh_token", "refresh_token": token, **form})


def test_github_answers_form_encoded_unless_asked_and_errors_with_200(bed: BedFactory) -> None:
    github = bed("github")
    form = password(github, "/login/oauth/access_token")
    assert form.headers["content-type"] == "application/x-www-form-urlencoded"
    answer = dict(parse_qsl(form.text))
    assert answer["access_token"].startswith("ghu_")
    assert (answer["expires_in"], answer["refresh_token_expires_in"]) == ("28800", "15897600")
    used = refresh(github, "/login/oauth/access_token", answer["refresh_token"])
    assert dict(parse_qsl(used.text))["access_token"].startswith("ghu_")
    again = refresh(github, "/login/oauth/access_token", answer["refresh_token"])
    assert again.status_code == 200
    assert dict(parse_qsl(again.text))["error"] == "bad_refresh_token"
    assert httpx.get(github.server.url + "/.well-known/openid-configuration").status_code == 404
    json_answer = password(github, "/login/oauth/access_token", Accept="application/json")
    assert json_answer.json()["token_type"] == "Bearer"


def test_google_keeps_the_refresh_token_and_says_verification_url(bed: BedFactory) -> None:
    google = bed("google")
    login = password(google).json()
    refreshed = refresh(google, "/oauth/token", login["refresh_token"]).json()
    assert "refresh_token" not in refreshed
    assert refreshed["expires_in"] == 3599
    device = post(google, "/oauth/device_authorization", {"scope": "read"}).json()
    assert "verification_url" in device
    assert "verification_uri" not in device


def test_entra_names_tenantid_and_wants_scope(bed: BedFactory) -> None:
    entra = bed("microsoft")
    url = entra.server.url
    document = httpx.get(f"{url}/common/v2.0/.well-known/openid-configuration").json()
    assert document["issuer"] == f"{url}/{{tenantid}}/v2.0"
    login = password(entra).json()
    token_path = entra.server.config.issuer_path + "/oauth/token"
    refused = refresh(entra, token_path, login["refresh_token"])
    assert refused.status_code == 400
    assert refused.json()["error_codes"] == [900144]
    assert refresh(entra, token_path, login["refresh_token"], scope="read").status_code == 200
    # The old refresh token keeps working (Entra does not revoke it).
    assert refresh(entra, token_path, login["refresh_token"], scope="read").status_code == 200


def test_salesforce_sends_no_expires_in(bed: BedFactory) -> None:
    salesforce = bed("salesforce")
    login = password(salesforce).json()
    assert "expires_in" not in login
    assert login["issued_at"].isdigit()
    assert int(login["issued_at"]) > 10**12  # milliseconds
    assert login["instance_url"] == salesforce.server.url
    refreshed = refresh(salesforce, "/oauth/token", login["refresh_token"]).json()
    assert "refresh_token" not in refreshed


def test_slack_answers_ok_and_200_errors(bed: BedFactory) -> None:
    slack = bed("slack")
    login = password(slack, "/api/oauth.v2.access").json()
    assert login["ok"] is True
    refresh(slack, "/api/oauth.v2.access", login["refresh_token"])
    reused = refresh(slack, "/api/oauth.v2.access", login["refresh_token"])
    assert reused.status_code == 200
    assert reused.json() == {"ok": False, "error": "invalid_refresh_token"}
    assert slack.server.stats()["family_revocations"] == 1  # the reuse revoked the grant


def test_notion_revokes_the_previous_access_token(bed: BedFactory) -> None:
    notion = bed("notion")
    login = password(notion, "/v1/oauth/token").json()
    assert (login["workspace_id"], login["bot_id"]) == ("workspace-1", "bot-1")
    me = f"{notion.server.api_url}/me"
    bearer = {"Authorization": f"Bearer {login['access_token']}"}
    assert httpx.get(me, headers=bearer).status_code == 200
    refresh(notion, "/v1/oauth/token", login["refresh_token"])
    assert httpx.get(me, headers=bearer).status_code == 401


@pytest.mark.parametrize(
    ("name", "status", "description"),
    [("keycloak", 400, "Session not active"), ("auth0", 403, "Unknown or invalid refresh token.")],
)
def test_dead_sessions_in_their_own_words(
    bed: BedFactory, name: str, status: int, description: str
) -> None:
    emulation = bed(name)
    login = password(emulation).json()
    emulation.server.revoke("demo")
    path = emulation.server.config.issuer_path + "/oauth/token"
    dead = refresh(emulation, path, login["refresh_token"])
    assert (dead.status_code, dead.json()["error_description"]) == (status, description)
    if name == "keycloak":
        assert login["refresh_expires_in"] == 1800


def test_gitlab_says_created_at(bed: BedFactory) -> None:
    gitlab = bed("gitlab")
    assert password(gitlab).json()["created_at"] == int(gitlab.server.now())


def test_hydra_refuses_a_concurrent_refresh_with_the_same_token(bed: BedFactory) -> None:
    """While one refresh with a token is in flight, another with it is invalid_request."""
    hydra = bed("hydra")
    login = password(hydra).json()
    hydra.server.set_latency(2.0)
    first: list[httpx.Response] = []
    winner = threading.Thread(
        target=lambda: first.append(refresh(hydra, "/oauth/token", login["refresh_token"]))
    )
    winner.start()
    in_flight(hydra, requests=2)
    loser = refresh(hydra, "/oauth/token", login["refresh_token"])
    winner.join()
    assert loser.status_code == 400
    assert "multiple concurrent requests" in loser.json()["error_description"]
    assert first[0].status_code == 200
    assert hydra.server.stats()["family_revocations"] == 0


def in_flight(bed: Bed, *, requests: int) -> None:
    """Wait until the server has counted ``requests`` token requests (a condition, polled)."""
    deadline = time.monotonic() + 10
    while bed.server.stats()["token_requests"] < requests:
        assert time.monotonic() < deadline, "the first refresh never reached the server"
        threading.Event().wait(0.005)


def test_serve_as_a_provider() -> None:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    config = config_from(parser.parse_args(["--as", "github"]))
    assert config.personality == "github"
    assert config.access_ttl == 28800
    assert ServerConfig().as_provider("slack", access_ttl=60).access_ttl == 60
    with pytest.raises(ValueError, match="no personality"):
        ServerConfig().as_provider("myspace")
