"""Logout: the refresh token is revoked at the server (RFC 7009), the session ends here and in
the store, the cookie is cleared; a plain link needs the session's sid, a fetch the CSRF
header; RP-initiated logout when the provider has an end-session endpoint; returnTo stays on
the app's origin. Runs with sessions in memory and in Redis."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from .bff_support import CSRF, Deployment, DeploymentFactory


def refresh_token_of(deployment: Deployment, session: str) -> str:
    from freshtoken.bff._sessions import handle_of

    stored = deployment.served.call(deployment.bff.sessions.token_store(handle_of(session)).aload())
    assert stored is not None
    assert stored.tokens.refresh_token is not None
    return stored.tokens.refresh_token


def test_logout_revokes_the_refresh_token_and_ends_the_session(deployment: Deployment) -> None:
    """POST /bff/logout with X-CSRF: revocation at the server, cookie cleared, session gone."""
    session = deployment.login()
    refresh_token = refresh_token_of(deployment, session)
    deployment.server.reset_stats()
    response = deployment.http.post("/bff/logout", headers={**CSRF, **deployment.cookie(session)})
    assert response.status_code == 200
    assert response.json() == {"redirect": "/"}
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert deployment.server.stats()["revocation_requests"] == 1
    with pytest.raises(httpx.HTTPStatusError):
        deployment.server.refresh(refresh_token)
    assert deployment.get("/bff/user", session).json() == {"authenticated": False}
    assert deployment.get("/api/items", session).status_code == 401


def test_a_logout_link_needs_the_sessions_sid(deployment: Deployment) -> None:
    """GET /bff/logout works with the sid /user gave (302 home); without it or with another
    session's, 403 and the session lives on."""
    session = deployment.login()
    other = deployment.login("alice")
    cookie = deployment.cookie(session)
    link = deployment.get("/bff/user", session).json()["logout_url"]
    others_link = deployment.get("/bff/user", other).json()["logout_url"]
    assert deployment.http.get("/bff/logout", headers=cookie).status_code == 403
    assert deployment.http.get(others_link, headers=cookie).status_code == 403
    assert deployment.get("/api/items", session).status_code == 200
    response = deployment.http.get(link, headers=cookie)
    assert response.status_code == 302
    assert response.headers["location"] == "/"
    assert deployment.get("/api/items", session).status_code == 401
    assert deployment.get("/api/items", other).status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "https://evil.example/",
        "/\\evil.example",
        "%2F%2Fevil",
        "/app/..//evil.example/",
        "/a/%2e%2e//evil.example",
        "/a/.%2E//evil.example",
    ],
)
def test_logout_refuses_to_return_elsewhere(deployment: Deployment, target: str) -> None:
    """returnTo off the app's origin: 400, and the session is not ended by the attempt."""
    session = deployment.login()
    response = deployment.http.post(
        "/bff/logout",
        params={"returnTo": target},
        headers={**CSRF, **deployment.cookie(session)},
    )
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_return_to"}
    assert deployment.get("/api/items", session).status_code == 200


def test_rp_initiated_logout_goes_to_the_end_session_endpoint(deploy: DeploymentFactory) -> None:
    """With an end-session endpoint the browser is sent there, with client_id, the id_token
    hint and where to come back to (an absolute URL of the app)."""
    deployment = deploy(end_session_url="https://idp.example/logout?ui=1")
    session = deployment.login()
    response = deployment.http.post(
        "/bff/logout",
        params={"returnTo": "/goodbye"},
        headers={**CSRF, **deployment.cookie(session)},
    )
    target = urlsplit(response.json()["redirect"])
    assert (target.scheme, target.netloc, target.path) == ("https", "idp.example", "/logout")
    query = parse_qs(target.query)
    assert query["ui"] == ["1"]
    assert query["client_id"] == ["bff-demo"]
    assert query["post_logout_redirect_uri"] == [f"{deployment.url}/goodbye"]


def test_logout_without_a_session_still_clears_the_cookie(deployment: Deployment) -> None:
    """A stale cookie logs out cleanly: 200, cookie cleared, nothing revoked."""
    deployment.server.reset_stats()
    response = deployment.http.post("/bff/logout", headers={**CSRF, **deployment.cookie("x" * 43)})
    assert response.status_code == 200
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert deployment.server.stats()["revocation_requests"] == 0


def test_sessions_get_fresh_unrelated_ids(deployment: Deployment) -> None:
    """Every login makes a new id: a planted or earlier id never becomes a session."""
    ids = {deployment.login() for _ in range(5)}
    assert len(ids) == 5
    planted = "P" * 43
    assert deployment.get("/bff/user", planted).json() == {"authenticated": False}


def test_a_logout_link_returning_beyond_latin_1_redirects_percent_encoded(
    deployment: Deployment,
) -> None:
    """GET /bff/logout?sid=...&returnTo=%2F%E2%82%AC: 302 to /%E2%82%AC (it used to answer
    500 after ending the session, leaving the browser its cookie)."""
    session = deployment.login()
    cookie = deployment.cookie(session)
    link = deployment.get("/bff/user", session).json()["logout_url"]
    response = deployment.http.get(f"{link}&returnTo=%2F%E2%82%AC", headers=cookie)
    assert response.status_code == 302
    assert response.headers["location"] == "/%E2%82%AC"
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert deployment.get("/api/items", session).status_code == 401


def test_a_logout_fetch_returning_beyond_latin_1_gets_the_encoded_path(
    deployment: Deployment,
) -> None:
    """POST /bff/logout with returnTo=/€商: {"redirect": "/%E2%82%AC%E5%95%86"}."""
    session = deployment.login()
    response = deployment.http.post(
        "/bff/logout",
        params={"returnTo": "/€商"},
        headers={**CSRF, **deployment.cookie(session)},
    )
    assert response.status_code == 200
    assert response.json() == {"redirect": "/%E2%82%AC%E5%95%86"}


def test_rp_initiated_logout_carries_an_encoded_return_address(
    deploy: DeploymentFactory,
) -> None:
    """With an end-session endpoint, a returnTo beyond Latin-1 goes in its query, encoded."""
    deployment = deploy(end_session_url="https://idp.example/logout")
    session = deployment.login()
    link = deployment.get("/bff/user", session).json()["logout_url"]
    response = deployment.http.get(
        f"{link}&returnTo=%2F%E2%82%AC", headers=deployment.cookie(session)
    )
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["post_logout_redirect_uri"] == [f"{deployment.url}/%E2%82%AC"]
