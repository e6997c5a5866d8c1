"""The BFF's API proxy against the reference server: the session's token goes upstream, the
browser's cookies and hop-by-hop headers do not, a rejected or expired token is refreshed
once, and a session that cannot be refreshed any more is a 401 login_required that ends it.
Each test runs with sessions in memory and in a real Redis."""

from __future__ import annotations

import concurrent.futures

from freshtoken import ManualClock

from .bff_support import CSRF, Deployment, DeploymentFactory


def test_a_proxied_call_carries_the_sessions_token(deployment: Deployment) -> None:
    """GET /api/items with the session cookie reaches the API as the session's user."""
    session = deployment.login()
    response = deployment.get("/api/me", session)
    assert response.status_code == 200
    assert response.json()["sub"] == "demo"


def test_cookies_hop_by_hop_headers_and_csrf_stay_behind(deployment: Deployment) -> None:
    """Upstream sees neither the browser's cookies nor hop-by-hop headers (nor those Connection
    names), nor the CSRF header, nor forgeable X-Forwarded-For/Forwarded; other headers and
    the body pass. The answer varies by Cookie."""
    session = deployment.login()
    response = deployment.http.post(
        "/api/echo?x=1",
        content=b"hello",
        headers={
            **CSRF,
            "Cookie": f"{deployment.bff.cookie_name}={session}; other=1",
            "Connection": "keep-alive, X-Private",
            "X-Private": "secret-hop",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "X-Forwarded-For": "10.9.8.7",
            "Forwarded": "for=10.9.8.7",
            "X-Request-Id": "abc",
            "Content-Type": "text/plain",
        },
    )
    assert response.status_code == 200
    echoed = response.json()
    headers = echoed["headers"]
    dropped = ("cookie", "x-private", "keep-alive", "te", "proxy-authorization", "x-csrf")
    for name in (*dropped, "x-forwarded-for", "forwarded"):
        assert name not in headers, name
    assert "Cookie" in response.headers["vary"]  # the answer is this session's
    assert headers["x-request-id"] == "abc"
    assert echoed["body"] == "hello"
    assert echoed["query"] == "x=1"
    assert echoed["has_authorization"] is True
    assert echoed["sub"] == "demo"


def test_an_expired_token_is_refreshed_once_for_many_calls(
    deployment: Deployment, clock: ManualClock
) -> None:
    """Past expiry, twenty concurrent calls cost one refresh at the server, none fails."""
    session = deployment.login()
    assert deployment.get("/api/items", session).status_code == 200
    deployment.server.reset_stats()
    clock.advance(400)  # past the 300 s access token
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        statuses = list(
            pool.map(lambda _: deployment.get("/api/items", session).status_code, range(20))
        )
    assert statuses == [200] * 20
    stats = deployment.server.stats()
    assert stats["refreshes"] == 1
    assert stats["reuse_detections"] == 0


def test_a_rejected_token_is_refreshed_and_the_call_retried_once(deployment: Deployment) -> None:
    """The API answers 401 to a token it no longer honours: one refresh, one retry, 200."""
    session = deployment.login()
    deployment.server.reset_stats()
    deployment.server.expire_access_tokens()
    response = deployment.http.post(
        "/api/echo", content=b"payload", headers={**CSRF, **deployment.cookie(session)}
    )
    assert response.status_code == 200
    assert response.json()["body"] == "payload"  # the body went again with the retry
    assert deployment.server.stats()["refreshes"] == 1


def test_a_session_that_cannot_refresh_is_login_required_and_ended(
    deployment: Deployment, clock: ManualClock
) -> None:
    """Revoked at the server and expired: 401 login_required, the cookie cleared, the session
    gone (the next call is login_required at once, /user says unauthenticated)."""
    session = deployment.login()
    deployment.server.revoke("demo")
    clock.advance(400)
    response = deployment.get("/api/items", session)
    assert response.status_code == 401
    assert response.json() == {"error": "login_required"}
    cleared = response.headers["set-cookie"]
    assert cleared.startswith(f"{deployment.bff.cookie_name}=;")
    assert "Max-Age=0" in cleared
    assert deployment.get("/api/items", session).json() == {"error": "login_required"}
    assert deployment.get("/bff/user", session).json() == {"authenticated": False}


def test_no_or_a_forged_cookie_is_login_required(deployment: Deployment) -> None:
    """No cookie, garbage, and a well-formed id nobody issued: each 401 login_required."""
    assert deployment.get("/api/items", None).status_code == 401
    for forged in ("garbage", "A" * 43, "../../etc/passwd"):
        response = deployment.get("/api/items", forged)
        assert response.status_code == 401
        assert response.json() == {"error": "login_required"}


def test_a_call_without_the_csrf_header_is_refused(deployment: Deployment) -> None:
    """No X-CSRF, a wrong value, or a cross-site fetch: 403, nothing sent upstream."""
    session = deployment.login()
    deployment.server.reset_stats()
    cookie = deployment.cookie(session)
    assert deployment.http.get("/api/items", headers=cookie).status_code == 403
    assert deployment.http.get("/api/items", headers={**cookie, "X-CSRF": "0"}).status_code == 403
    cross = {**cookie, **CSRF, "Sec-Fetch-Site": "cross-site"}
    assert deployment.http.get("/api/items", headers=cross).status_code == 403
    assert deployment.http.get("/bff/user", headers=cookie).status_code == 403
    assert deployment.http.post("/bff/logout", headers=cookie).status_code == 403
    assert deployment.get("/api/items", session).status_code == 200  # still logged in


def test_paths_that_climb_out_of_the_route_are_refused(deployment: Deployment) -> None:
    """Dot segments and encoded slashes, however encoded, never reach upstream."""
    session = deployment.login()
    for path in (
        "/api/%2e%2e/admin/stats",
        "/api/%2E%2E%2Fadmin",
        "/api/items/..%2f..%2fadmin",
        "/api/%252e%252e/admin",
        "/api/items%5c..%5cadmin",
    ):
        response = deployment.http.get(
            path, headers={**CSRF, **deployment.cookie(session)}, follow_redirects=False
        )
        assert response.status_code == 400, path
        assert response.json() == {"error": "invalid_path"}


def test_user_shows_claims_and_never_a_token(deployment: Deployment) -> None:
    """/bff/user: authenticated, the claims and a logout link; no token anywhere in it."""
    session = deployment.login(claims={"sub": "demo", "email": "demo@example.com"})
    answer = deployment.get("/bff/user", session)
    assert answer.status_code == 200
    body = answer.json()
    assert body["authenticated"] is True
    assert body["claims"] == {"sub": "demo", "email": "demo@example.com"}
    assert body["logout_url"].startswith("/bff/logout?sid=")
    assert "eyJ" not in answer.text  # no JWT
    assert answer.headers["cache-control"] == "no-store"


def test_routes_unknown_to_the_bff_are_404_or_the_wrapped_app(deploy: DeploymentFactory) -> None:
    """Without a wrapped app other paths are 404; with one they reach it."""
    plain = deploy()
    assert plain.http.get("/elsewhere").status_code == 404

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"spa"})

    wrapped = deploy(app=app)
    assert wrapped.http.get("/index.html").text == "spa"


def test_an_api_rejecting_every_token_gets_its_401s_passed_on(deployment: Deployment) -> None:
    """Fresh tokens rejected again and again: the API's 401s reach the browser (not
    login_required), refreshes stay few (the manager's rejection backoff answers None), and
    the session lives on."""
    session = deployment.login()
    deployment.server.reset_stats()
    deployment.server.fail_api(1000)
    answers = [deployment.get("/api/items", session) for _ in range(8)]
    assert {answer.status_code for answer in answers} == {401}
    assert all(answer.json().get("error") != "login_required" for answer in answers)
    assert all("www-authenticate" in answer.headers for answer in answers)
    assert deployment.server.stats()["refreshes"] <= 2
    deployment.server.clear_faults()
    assert deployment.get("/bff/user", session).json()["authenticated"] is True


def test_an_idle_session_ends_and_a_busy_one_lives_to_its_absolute_end(
    deploy: DeploymentFactory, clock: ManualClock
) -> None:
    """idle_timeout ends a session nobody used; use keeps one alive, but not past
    absolute_timeout."""
    deployment = deploy(idle_timeout=60, absolute_timeout=150)
    idle, busy = deployment.login(), deployment.login()
    for _ in range(3):
        clock.advance(40)
        assert deployment.get("/api/me", busy).status_code == 200
    assert deployment.get("/api/me", idle).json() == {"error": "login_required"}
    clock.advance(40)  # 160 s after login: past the absolute end, though used 40 s ago
    assert deployment.get("/api/me", busy).json() == {"error": "login_required"}
