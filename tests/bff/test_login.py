"""Browser login through the BFF, over real HTTP against the reference server's login page:
code + PKCE + state + nonce, a sealed per-login cookie, the code exchange with ID token
checks, a new session id at every login (no fixation), returnTo kept on the app's origin."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from freshtoken import ManualClock
from freshtoken.bff import MemorySessionStore, RedisSessionStore
from freshtoken.server import ReferenceServer
from freshtoken.server._browser import submit_form

from .bff_support import CSRF, Deployment, DeploymentFactory


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """name -> the whole Set-Cookie value, for every cookie the response sets."""
    return {value.split("=", 1)[0]: value for value in response.headers.get_list("set-cookie")}


def value_of(header: str) -> str:
    return header.split(";", 1)[0].split("=", 1)[1]


class Browser:
    """What a browser does in a login, cookies kept by hand (httpx does not send Secure
    cookies over http; Chromium does to localhost, see the browser test)."""

    def __init__(self, deployment: Deployment | httpx.Client) -> None:
        self.http = deployment if isinstance(deployment, httpx.Client) else deployment.http
        self.cookies: dict[str, str] = {}
        self.idp = httpx.Client(timeout=10.0, follow_redirects=False)

    def visit(self, url: str) -> httpx.Response:
        header = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        response = self.http.get(url, headers={"Cookie": header} if header else {})
        for name, cookie in set_cookies(response).items():
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value_of(cookie)
        return response

    def sign_in(self, authorize_url: str, *, approve: bool = True) -> str:
        """The provider's page: sign in as demo (or deny); returns where it redirects."""
        page = self.idp.get(authorize_url)
        action, form = submit_form(
            page, {"username": "demo", "password": "demo"}, "approve" if approve else "deny"
        )
        answer = self.idp.post(action, data=form)
        assert answer.status_code in (302, 303), answer.text[:300]
        return answer.headers["location"]

    def login(self, return_to: str = "/") -> httpx.Response:
        start = self.visit(f"/bff/login?returnTo={return_to}")
        assert start.status_code == 302
        callback = self.sign_in(start.headers["location"])
        return self.visit(callback)


def test_a_browser_logs_in_and_comes_back_where_it_was(deployment: Deployment) -> None:
    """Login, provider's form, callback: a session cookie, back at returnTo, /user knows who."""
    browser = Browser(deployment)
    done = browser.login("/orders?id=3")
    assert done.status_code == 302
    assert done.headers["location"] == "/orders?id=3"
    session = browser.cookies[deployment.bff.cookie_name]
    user = deployment.get("/bff/user", session).json()
    assert user["authenticated"] is True
    assert user["claims"]["sub"] == "demo"
    assert "nonce" not in user["claims"]
    assert deployment.get("/api/me", session).json()["sub"] == "demo"
    assert [name for name in browser.cookies if "-login-" in name] == []  # the login's is gone


def test_the_authorization_request_has_pkce_state_and_nonce(deployment: Deployment) -> None:
    """S256 PKCE, a state, a nonce for openid, our callback as redirect_uri."""
    start = Browser(deployment).visit("/bff/login")
    query = parse_qs(urlsplit(start.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 43
    assert query["nonce"]
    assert query["redirect_uri"] == [f"{deployment.url}/bff/callback"]
    assert query["response_type"] == ["code"]


def test_the_login_cookie_is_sealed_short_lived_and_named_by_state(
    deployment: Deployment,
) -> None:
    """One HttpOnly Secure Lax cookie per login, for 10 minutes, holding no readable state."""
    start = Browser(deployment).visit("/bff/login")
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    ((name, cookie),) = set_cookies(start).items()
    assert name.startswith(f"{deployment.bff.cookie_name}-login-")
    flags = set(cookie.split("; ")[1:])
    assert {"HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=600"} == flags
    assert state not in cookie


def test_login_ids_rotate_so_a_planted_session_id_is_useless(deployment: Deployment) -> None:
    """A session id the browser already had (planted by an attacker, or its own) ends at
    login; the browser gets a new one."""
    planted = deployment.login("alice")
    browser = Browser(deployment)
    browser.cookies[deployment.bff.cookie_name] = planted
    browser.login()
    fresh = browser.cookies[deployment.bff.cookie_name]
    assert fresh != planted
    assert deployment.get("/bff/user", planted).json() == {"authenticated": False}
    assert deployment.get("/bff/user", fresh).json()["claims"]["sub"] == "demo"


def test_a_callback_without_its_login_cookie_is_refused(deployment: Deployment) -> None:
    """A code delivered to a browser that did not start the login (login CSRF) is refused."""
    victim = Browser(deployment)
    start = victim.visit("/bff/login")
    callback = victim.sign_in(start.headers["location"])
    attacker = Browser(deployment)  # another browser, without the login cookie
    answer = attacker.visit(callback)
    assert answer.status_code == 400
    assert answer.json() == {"error": "login_expired"}
    assert deployment.bff.cookie_name not in attacker.cookies


def test_a_callback_with_another_logins_state_is_refused(deployment: Deployment) -> None:
    """The state must be this login's: a swapped state finds no login cookie of its own."""
    browser = Browser(deployment)
    first = browser.visit("/bff/login")
    browser.visit("/bff/login")
    callback = browser.sign_in(first.headers["location"])
    forged = callback.replace("state=", "state=x")
    assert browser.visit(forged).json() == {"error": "login_expired"}


def test_a_tampered_login_cookie_is_refused(deployment: Deployment) -> None:
    """Flip a character of the sealed cookie: the login does not finish."""
    browser = Browser(deployment)
    start = browser.visit("/bff/login")
    callback = browser.sign_in(start.headers["location"])
    (name,) = [n for n in browser.cookies if "-login-" in n]
    value = browser.cookies[name]
    browser.cookies[name] = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    assert browser.visit(callback).json() == {"error": "login_expired"}


def test_a_login_left_at_the_provider_for_too_long_expires(
    deployment: Deployment, clock: ManualClock
) -> None:
    """More than 10 minutes at the provider's page: the callback refuses the late code."""
    browser = Browser(deployment)
    start = browser.visit("/bff/login")
    callback = browser.sign_in(start.headers["location"])
    clock.advance(601)
    assert browser.visit(callback).json() == {"error": "login_expired"}


def test_a_denied_login_says_so(deployment: Deployment) -> None:
    """The user presses Deny: the callback answers access_denied and starts no session."""
    browser = Browser(deployment)
    start = browser.visit("/bff/login")
    callback = browser.sign_in(start.headers["location"], approve=False)
    answer = browser.visit(callback)
    assert answer.status_code == 400
    assert answer.json() == {"error": "access_denied"}
    assert deployment.bff.cookie_name not in browser.cookies


@pytest.mark.parametrize("target", ["//evil.example", "https://evil.example/x", "/\\evil"])
def test_login_refuses_to_return_elsewhere(deployment: Deployment, target: str) -> None:
    """returnTo off the app's origin is refused before the provider is even asked."""
    answer = Browser(deployment).visit(f"/bff/login?returnTo={target}")
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_return_to"}


def test_logout_after_a_browser_login_revokes_at_the_server(deployment: Deployment) -> None:
    """The refresh token of a browser login is revoked at logout; the session is gone."""
    browser = Browser(deployment)
    browser.login()
    session = browser.cookies[deployment.bff.cookie_name]
    deployment.server.reset_stats()
    cookie = deployment.cookie(session)
    assert deployment.http.post("/bff/logout", headers={**CSRF, **cookie}).status_code == 200
    assert deployment.server.stats()["revocation_requests"] == 1
    assert deployment.get("/api/me", session).status_code == 401


def test_rp_initiated_logout_carries_the_id_token_hint(deploy: DeploymentFactory) -> None:
    """After a browser login (openid), the end-session redirect has the login's ID token."""
    deployment = deploy(end_session_url="https://idp.example/logout")
    browser = Browser(deployment)
    browser.login()
    session = browser.cookies[deployment.bff.cookie_name]
    response = deployment.http.post("/bff/logout", headers={**CSRF, **deployment.cookie(session)})
    query = parse_qs(urlsplit(response.json()["redirect"]).query)
    hint = query["id_token_hint"][0]
    assert hint.count(".") == 2  # a JWT: the provider knows whose session to end
    assert query["post_logout_redirect_uri"] == [f"{deployment.url}/"]


def test_repeated_logins_do_not_pile_up_cookies(deployment: Deployment) -> None:
    """A page bouncing the browser to /bff/login again and again leaves a few login cookies,
    not one per visit (its requests would otherwise grow past what a server accepts)."""
    browser = Browser(deployment)
    for _ in range(12):
        assert browser.visit("/bff/login").status_code == 302
        assert len([name for name in browser.cookies if "-login-" in name]) <= 4
    start = browser.visit("/bff/login")  # the latest login still finishes
    browser.visit(browser.sign_in(start.headers["location"]))
    assert deployment.bff.cookie_name in browser.cookies


def test_a_bff_without_an_issuer_has_no_login(
    deploy: DeploymentFactory, oauth_server: ReferenceServer
) -> None:
    """Made with a token_url only (sessions started by the app): /bff/login says so."""
    deployment = deploy(issuer=None, token_url=oauth_server.token_url)
    answer = deployment.http.get("/bff/login")
    assert answer.status_code == 404
    assert answer.json() == {"error": "login_not_configured"}


def sessions_in_store(deployment: Deployment) -> int:
    """How many sessions the deployment's store holds (memory: its entries; Redis: its keys)."""
    sessions = deployment.bff.sessions
    if isinstance(sessions, MemorySessionStore):
        return len(sessions)
    assert isinstance(sessions, RedisSessionStore)
    return sum(1 for _ in sessions.client.scan_iter(match=f"{sessions.prefix}*"))


@pytest.mark.parametrize(
    ("return_to", "location"),
    [
        ("/%E5%95%86%E5%93%81", "/%E5%95%86%E5%93%81"),
        ("/%E2%82%AC%3Fq%3D%E5%95%86%23%C3%A9", "/%E2%82%AC?q=%E5%95%86#%C3%A9"),
        ("/caf%C3%A9/%F0%9F%98%80", "/caf%C3%A9/%F0%9F%98%80"),
        ("/a%22%3Cb%3E", "/a%22%3Cb%3E"),
    ],
)
def test_a_return_path_beyond_latin_1_comes_back_percent_encoded(
    deployment: Deployment, return_to: str, location: str
) -> None:
    """returnTo with characters a header cannot carry as they are (/商品, €, an emoji, quotes):
    the login ends with a 302 to their percent-encoding and the session cookie, and the store
    holds that one session (it used to answer 500 after starting an orphan session)."""
    browser = Browser(deployment)
    done = browser.login(return_to)
    assert done.status_code == 302, done.text
    assert done.headers["location"] == location
    session = browser.cookies[deployment.bff.cookie_name]
    assert deployment.get("/bff/user", session).json()["authenticated"] is True
    assert sessions_in_store(deployment) == 1


@pytest.mark.parametrize(
    "target",
    [
        "/app/..//evil.example/",
        "/a/%2e%2e//evil.example",
        "/a/%2E%2e//evil.example",
        "/a/.%2e//evil.example",
        "/a/%252e%252e//evil.example",
        "/.//evil.example",
        "/a/..;//evil.example",
        "{origin}/a/..//evil.example",  # an absolute URL of the app's own origin
    ],
)
def test_login_refuses_a_return_path_with_dot_segments(deployment: Deployment, target: str) -> None:
    """Browsers resolve ``..`` and ``%2e%2e`` in a Location: ``/app/..//evil.example/`` would
    land on the path ``//evil.example/``. Refused before the provider is asked."""
    target = target.format(origin=deployment.url)
    answer = deployment.http.get("/bff/login", params={"returnTo": target})
    assert answer.status_code == 400, target
    assert answer.json() == {"error": "invalid_return_to"}
    assert "set-cookie" not in answer.headers


def test_a_login_cookie_holding_a_now_refused_return_path_starts_no_session(
    deployment: Deployment,
) -> None:
    """A login cookie sealed before the dot-segment check (by an earlier version) is checked
    again at the callback: 400, no code exchanged, no session started."""
    browser = Browser(deployment)
    start = browser.visit("/bff/login")
    callback = browser.sign_in(start.headers["location"])
    (name,) = [n for n in browser.cookies if "-login-" in n]
    bff = deployment.bff
    pending = bff._cookies.open(browser.cookies[name], "login")
    assert pending is not None
    pending["return_to"] = "/app/..//evil.example/"
    browser.cookies[name] = bff._cookies.seal(pending, "login")
    deployment.server.reset_stats()
    answer = browser.visit(callback)
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_return_to"}
    assert bff.cookie_name not in browser.cookies
    assert sessions_in_store(deployment) == 0
    assert deployment.server.stats()["token_requests"] == 0
