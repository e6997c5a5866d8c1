"""Browser logins end to end: the test plays the browser through ``open_browser`` (it loads the
authorize URL, posts the login form, follows the redirect to the loopback listener), against
the reference server over real TCP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

import freshtoken
from freshtoken import LoginFailed, TokenSet
from freshtoken._logins import flows  # the free logins, deprecated in the public API
from freshtoken.server import Browser, ReferenceServer
from freshtoken.testing import ServerFactory


def redirect_uri_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["redirect_uri"][0]


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


def refused(url: str) -> bool:
    """Nothing listens at the URL's port any more."""
    parts = urlsplit(url)
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((parts.hostname or "", parts.port or 80)) != 0


def login(
    server: ReferenceServer, open_browser: Callable[[str], object], **options: object
) -> TokenSet:
    return flows.browser_login(
        server.issuer,
        client_id="demo-public",
        open_browser=open_browser,
        **options,  # type: ignore[arg-type]
    )


def test_browser_login_end_to_end(oauth_server: ReferenceServer) -> None:
    """Sign in on the form, the loopback listener gets the code, PKCE redeems it, the listener
    shows 'signed in' and closes; the tokens work and refresh."""
    browser = oauth_server.browser("alice", "alice")
    tokens = login(oauth_server, browser)
    assert browser.wait()
    assert tokens.scope == "offline_access openid read write"
    assert tokens.refresh_token
    assert tokens.id_claims()["sub"] == "alice"
    (page,) = browser.visited
    assert page.status_code == 200
    assert "You can close this tab" in page.text
    assert page.url.host == "127.0.0.1"
    assert page.url.path == "/callback"
    assert refused(str(page.url))
    me = httpx.get(f"{oauth_server.api_url}/me", headers={"Authorization": tokens.authorization})
    assert me.json()["username"] == "alice"
    refreshed = oauth_server.refresh(
        tokens.refresh_token, client_id="demo-public", client_secret=None
    )
    assert refreshed["access_token"]


def test_the_tab_says_signed_in_only_once_the_code_is_exchanged(
    oauth_server: ReferenceServer,
) -> None:
    """The browser's answer is held while its code is exchanged: when the exchange fails (the
    token endpoint answers 503), the tab says so, and does not claim a sign-in that did not
    happen."""
    oauth_server.inject("status_503")
    browser = oauth_server.browser("alice", "alice")
    with pytest.raises(LoginFailed) as caught:
        login(oauth_server, browser)
    assert browser.wait()
    assert caught.value.error == "temporarily_unavailable"
    (page,) = browser.visited
    assert page.status_code == 400
    assert "Sign-in failed" in page.text
    assert "temporarily_unavailable" in page.text
    assert "signed in" not in page.text.lower()


def test_the_same_answer_twice_is_redeemed_once() -> None:
    """A reload of the answer while its code is being exchanged: 409, not a second exchange
    (a server refuses a code used twice, and may revoke what the first use gave)."""
    from freshtoken._logins.authorization import AuthorizationRequest
    from freshtoken._logins.loopback import CallbackJudge
    from freshtoken._oauth.discovery import ServerMetadata

    metadata = ServerMetadata.from_document(
        {
            "issuer": "https://issuer.example",
            "authorization_endpoint": "https://issuer.example/authorize",
            "token_endpoint": "https://issuer.example/token",
        },
        issuer="https://issuer.example",
    )
    request = AuthorizationRequest.start(
        metadata, client_id="app", redirect_uri="http://127.0.0.1:5000/callback"
    )
    judge = CallbackJudge(request, hosts=frozenset({"127.0.0.1:5000"}), path="/callback")
    target = f"/callback?code=the-code&state={request.state}".encode()
    first = judge.judge(b"GET", target, b"127.0.0.1:5000")
    again = judge.judge(b"GET", target, b"127.0.0.1:5000")
    assert (first.status, first.outcome) == (200, "the-code")
    assert (again.status, again.outcome) == (409, None)


@pytest.mark.anyio
async def test_async_browser_login(oauth_server: ReferenceServer) -> None:
    """abrowser_login on asyncio and trio, with a blocking open_browser in a worker thread."""
    browser = oauth_server.browser()
    tokens = await flows.abrowser_login(
        oauth_server.issuer, client_id="demo-public", open_browser=browser
    )
    assert tokens.id_claims()["sub"] == "demo"
    assert browser.wait()
    assert refused(str(browser.visited[0].url))


@pytest.mark.anyio
async def test_async_open_browser_may_be_a_coroutine(oauth_server: ReferenceServer) -> None:
    """An async open_browser runs beside the listener; the login finishes when the answer comes."""
    pages: list[str] = []

    async def play(url: str) -> bool:
        async with httpx.AsyncClient() as http:
            page = await http.get(url)
            action = oauth_server.authorize_url
            request_id = page.text.split('name="request_id" value="')[1].split('"')[0]
            form = {"request_id": request_id, "username": "demo", "password": "demo"}
            answer = await http.post(action, data={**form, "action": "approve"})
            pages.append(answer.headers["location"])
            await http.get(answer.headers["location"])
        return True

    tokens = await flows.abrowser_login(
        oauth_server.issuer, client_id="demo-public", open_browser=play
    )
    assert tokens.access_token
    assert pages[0].startswith("http://127.0.0.1:")


def test_denied_consent_is_access_denied(oauth_server: ReferenceServer) -> None:
    """Deny on the login page: LoginFailed access_denied, and the tab says so."""
    browser = oauth_server.browser(approve=False)
    with pytest.raises(LoginFailed) as caught:
        login(oauth_server, browser)
    assert browser.wait()
    assert caught.value.error == "access_denied"
    assert "Sign-in failed" in browser.visited[0].text
    assert "access_denied" in browser.visited[0].text


def test_a_mismatched_state_is_a_stray_and_the_real_answer_still_logs_in(
    oauth_server: ReferenceServer,
) -> None:
    """Any web page can send a request to the loopback port it guesses, with a code and a
    state of its making. Refused (400, the code never sent anywhere), it does not end the
    login: the real answer, which comes next, still signs in."""
    forged: list[httpx.Response] = []
    browser = oauth_server.browser()

    def forged_answer_first(url: str) -> bool:
        callback = f"{redirect_uri_of(url)}?code=stolen&state=not-{state_of(url)}"
        forged.append(httpx.get(callback))
        return bool(browser(url))

    tokens = login(oauth_server, forged_answer_first)
    assert tokens.access_token
    assert forged[0].status_code == 400
    assert "Not this sign-in" in forged[0].text
    assert oauth_server.stats()["token_requests"] == 1  # the real code's, not the forged one


def test_stray_requests_do_not_end_the_login(oauth_server: ReferenceServer) -> None:
    """A favicon, a silent port scanner, garbage, a request without state, another Host:
    each gets an answer (or nothing), and the real answer still logs in."""
    answers: list[int] = []
    silent = socket.socket()

    def noisy_browser(url: str) -> bool:
        redirect = urlsplit(redirect_uri_of(url))
        base = f"http://127.0.0.1:{redirect.port}"
        silent.connect(("127.0.0.1", redirect.port or 0))  # connects, never speaks
        with socket.create_connection(("127.0.0.1", redirect.port or 0)) as garbage:
            garbage.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
            answers.append(int(garbage.recv(100).split(b" ")[1]))
        with httpx.Client() as http:
            answers.append(http.get(f"{base}/favicon.ico").status_code)
            answers.append(http.get(f"{base}/callback").status_code)
            answers.append(http.get(f"{base}/callback?code=x").status_code)
            answers.append(http.post(f"{base}/callback", data={"state": "x"}).status_code)
            rebinding = f"{base}/callback?state={state_of(url)}&code=x"
            answers.append(http.get(rebinding, headers={"Host": "evil.example"}).status_code)
        return oauth_server.browser()(url)

    try:
        tokens = login(oauth_server, noisy_browser)
    finally:
        silent.close()
    assert tokens.access_token
    assert answers == [400, 404, 400, 400, 405, 400]


def test_the_browser_never_coming_back_times_out(oauth_server: ReferenceServer) -> None:
    """Nobody answers: after `timeout` the login fails, and the listener is closed."""
    opened: list[str] = []
    with pytest.raises(LoginFailed) as caught:
        login(oauth_server, opened.append, timeout=0.3)
    assert caught.value.error == "timeout"
    assert refused(redirect_uri_of(opened[0]))


@pytest.mark.anyio
async def test_async_timeout(oauth_server: ReferenceServer) -> None:
    """The async listener times out the same way."""
    with pytest.raises(LoginFailed) as caught:
        await flows.abrowser_login(
            oauth_server.issuer, client_id="demo-public", open_browser=lambda url: True, timeout=0.3
        )
    assert caught.value.error == "timeout"


@pytest.mark.anyio
async def test_cancelling_an_async_login_closes_the_listener(oauth_server: ReferenceServer) -> None:
    """A cancelled abrowser_login leaves nothing listening."""
    opened: list[str] = []
    browser_opened = anyio.Event()

    async def open_browser(url: str) -> bool:
        opened.append(url)
        browser_opened.set()
        return True

    async with anyio.create_task_group() as group:
        group.start_soon(
            lambda: flows.abrowser_login(
                oauth_server.issuer, client_id="demo-public", open_browser=open_browser
            )
        )
        await browser_opened.wait()
        assert not refused(redirect_uri_of(opened[0]))
        group.cancel_scope.cancel()
    assert refused(redirect_uri_of(opened[0]))


def test_no_browser_is_a_clear_error(oauth_server: ReferenceServer) -> None:
    """webbrowser.open's False (no browser) and an open_browser that raises both fail clearly."""
    with pytest.raises(LoginFailed) as unavailable:
        login(oauth_server, lambda url: False)
    assert unavailable.value.error == "browser_unavailable"

    def broken(url: str) -> bool:
        raise OSError("no display")

    with pytest.raises(LoginFailed) as failed:
        login(oauth_server, broken)
    assert failed.value.error == "browser_failed"
    assert "no display" in str(failed.value)


def test_the_listener_binds_loopback_only(oauth_server: ReferenceServer) -> None:
    """The redirect URI is 127.0.0.1; another interface of this machine is not listened on."""
    outside = _non_loopback_address()
    reachable_outside: list[bool] = []

    def probe(url: str) -> bool:
        port = urlsplit(redirect_uri_of(url)).port or 0
        if outside is not None:
            with socket.socket() as other:
                other.settimeout(2)
                reachable_outside.append(other.connect_ex((outside, port)) == 0)
        return oauth_server.browser()(url)

    login(oauth_server, probe)
    assert reachable_outside in ([], [False])


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, a route is chosen
        except OSError:
            return None
        address: str = udp.getsockname()[0]
    return None if address.startswith("127.") else address


def test_a_fixed_port_and_path_are_honoured(oauth_server: ReferenceServer) -> None:
    """redirect_uri with a port (providers that register one exactly) is used as given."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    seen: list[str] = []

    def browser(url: str) -> bool:
        seen.append(redirect_uri_of(url))
        return oauth_server.browser()(url)

    login(oauth_server, browser, redirect_uri=f"http://127.0.0.1:{port}/callback")
    assert seen == [f"http://127.0.0.1:{port}/callback"]


def test_a_non_loopback_redirect_uri_is_refused(oauth_server: ReferenceServer) -> None:
    """The listener never binds anything but loopback."""
    with pytest.raises(ValueError, match="loopback"):
        login(oauth_server, print, redirect_uri="http://0.0.0.0/callback")


def test_server_without_iss_still_works(oauth_server_factory: ServerFactory) -> None:
    """iss is checked when sent; a server that neither sends nor promises it is fine."""
    server = oauth_server_factory(authorization_response_iss=False)
    assert login(server, server.browser()).access_token


def test_a_confidential_client_logs_in_with_its_secret(oauth_server: ReferenceServer) -> None:
    """A client secret is sent with the code (client_secret_basic, chosen from metadata)."""
    tokens = flows.browser_login(
        oauth_server.issuer,
        client_id="demo",
        client_secret="demo-secret",
        scope="openid read",
        open_browser=oauth_server.browser(),
    )
    assert tokens.scope == "openid read"
    assert tokens.id_claims()["aud"] == "demo"


def test_refresher_from_issuer_logs_in_with_its_own_settings(oauth_server: ReferenceServer) -> None:
    """The client settings are given once: the refresher logs in, the manager refreshes."""
    refresher = freshtoken.OAuth2Refresher.from_issuer(oauth_server.issuer, client_id="demo-public")
    manager = freshtoken.TokenManager(refresher, clock=oauth_server.clock)
    manager.set_tokens(
        refresher.browser_login(open_browser=oauth_server.browser(), clock=oauth_server.clock)
    )
    first = manager.get_tokens()
    oauth_server.advance(oauth_server.config.access_ttl)
    refreshed = manager.get_tokens()
    assert refreshed.access_token != first.access_token
    assert oauth_server.stats()["refreshes"] == 1


def test_a_replayed_code_fails_and_revokes(oauth_server: ReferenceServer) -> None:
    """The same code redeemed twice: the second exchange fails, the first tokens are revoked."""
    metadata = freshtoken.discover(oauth_server.issuer)
    request = freshtoken.AuthorizationRequest.start(
        metadata, client_id="demo-public", redirect_uri="http://127.0.0.1:1/callback"
    )
    with httpx.Client() as http:
        location = Browser().sign_in(http, request.url)
    code = request.code_from({k: v[0] for k, v in parse_qs(urlsplit(location).query).items()})
    client = freshtoken.ClientAuth("demo-public")
    first = request.exchange(code, client)
    with pytest.raises(LoginFailed) as caught:
        request.exchange(code, client)
    assert caught.value.error == "invalid_grant"
    me = httpx.get(f"{oauth_server.api_url}/me", headers={"Authorization": first.authorization})
    assert me.status_code == 401


def test_only_one_login_thread_is_left_behind(oauth_server: ReferenceServer) -> None:
    """The open_browser worker ends with the browser; the login leaves no listener thread."""
    before = set(threading.enumerate())
    login(oauth_server, oauth_server.browser())
    leftovers = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    for thread in leftovers:
        thread.join(timeout=5)
    assert not [t for t in leftovers if t.is_alive()]


def test_a_manager_logs_in_with_its_refreshers_client_settings(
    oauth_server: ReferenceServer,
) -> None:
    """manager.login(refresher.browser_login): the client settings are given once; the tokens
    are kept, and a later refresh uses the same refresher."""
    refresher = freshtoken.OAuth2Refresher.from_issuer(oauth_server.issuer, client_id="demo-public")
    expired: list[BaseException] = []
    manager = freshtoken.TokenManager(
        refresher, clock=oauth_server.clock, on_session_expired=expired.append
    )
    browser = oauth_server.browser("alice", "alice")
    tokens = manager.login(refresher.browser_login, open_browser=browser)
    assert browser.wait()
    assert manager.get_tokens() == tokens
    oauth_server.advance(301)
    refreshed = manager.get_tokens()
    assert refreshed.access_token != tokens.access_token
    assert refreshed.id_claims()["sub"] == "alice"
    assert expired == []


@pytest.mark.anyio
async def test_a_manager_logs_in_asynchronously(oauth_server: ReferenceServer) -> None:
    """await manager.alogin(refresher.abrowser_login, ...): the same, without blocking."""
    metadata = await freshtoken.adiscover(oauth_server.issuer)
    refresher = freshtoken.OAuth2Refresher.from_issuer(metadata, client_id="demo-public")
    manager = freshtoken.TokenManager(refresher, clock=oauth_server.clock)
    browser = oauth_server.browser("alice", "alice")
    tokens = await manager.alogin(refresher.abrowser_login, open_browser=browser)
    assert (await manager.aget_tokens()) == tokens
