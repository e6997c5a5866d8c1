"""Logins against hostile callers and servers, and callers in a hurry: a device server asking
for absurd waits, Ctrl-C on a blocking login, two logins at once, hostile loopback callbacks,
bad options. Real TCP against the reference server; the browser is played through
``open_browser``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from freshtoken import DevicePrompt, LoginFailed, TokenSet
from freshtoken._logins import flows  # the free logins, deprecated in the public API
from freshtoken._logins.flows import LoginOptions
from freshtoken.server import ReferenceServer
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


# -- the device login: the server's interval --------------------------------------------------


def test_a_huge_device_interval_is_capped(oauth_server_factory: ServerFactory) -> None:
    """A server asking for a poll every 11 days is not obeyed literally: the client waits at
    most a minute, and the person who approved meanwhile is signed in."""
    server = oauth_server_factory(device_interval=1e6)
    prompts: list[DevicePrompt] = []
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            uri = prompts[0].verification_uri_complete
            assert uri is not None
            server.browser().approve_device(uri)
        server.advance(seconds)

    tokens = flows.device_login(
        server.issuer,
        client_id="demo-public",
        on_prompt=prompts.append,
        sleep=sleep,
        clock=server.clock,
    )
    assert tokens.access_token
    assert sleeps[0] <= 60.0


def test_the_device_login_never_waits_past_the_codes_expiry(
    oauth_server_factory: ServerFactory,
) -> None:
    """An interval longer than the code's life: the client waits until the code expires, not
    longer, and says so without a useless poll."""
    server = oauth_server_factory(device_interval=50, device_code_ttl=30)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        server.advance(seconds)

    with pytest.raises(LoginFailed) as caught:
        flows.device_login(
            server.issuer,
            client_id="demo-public",
            on_prompt=lambda prompt: None,
            sleep=sleep,
            clock=server.clock,
        )
    assert caught.value.error == "expired_token"
    assert sleeps == [30.0]
    assert server.stats()["token_requests_by_grant"].get("device_code", 0) == 0


def test_a_device_login_polled_by_a_server_that_asks_for_no_wait_still_ends(
    oauth_server_factory: ServerFactory,
) -> None:
    """interval 0 and a code that lives for months, approved by nobody: the client polls at
    most once a second, and gives up after an hour (the code's life is capped), instead of
    polling as fast as the server answers, for as long as it says."""
    server = oauth_server_factory(device_interval=0, device_code_ttl=1e7)
    prompts: list[DevicePrompt] = []
    sleeps: list[float] = []
    started = server.clock()

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        server.advance(seconds * 100)  # time flies: a hundred seconds pass per second asked

    with pytest.raises(LoginFailed) as caught:
        flows.device_login(
            server.issuer,
            client_id="demo-public",
            on_prompt=prompts.append,
            sleep=sleep,
            clock=server.clock,
        )
    assert caught.value.error == "expired_token"
    assert prompts[0].expires_in == 3600
    assert min(sleeps) >= 1.0
    assert server.clock() - started <= 3600 + 100
    assert server.stats()["token_requests_by_grant"]["device_code"] == len(sleeps) - 1


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": -1.0},
        {"timeout": float("nan")},
        {"redirect_uri": "https://127.0.0.1/callback"},
        {"redirect_uri": "http://example.com/callback"},
        {"redirect_uri": "http://127.0.0.1:99999/callback"},
    ],
)
def test_bad_options_are_refused_when_made(options: dict[str, object]) -> None:
    """Before any request: a bad timeout or redirect URI is a ValueError naming it."""
    with pytest.raises(ValueError, match=r"timeout|redirect_uri"):
        LoginOptions(**options)  # type: ignore[arg-type]


def test_a_bad_redirect_uri_is_refused_before_discovery() -> None:
    """The browser login checks its redirect URI before it asks the issuer anything (here
    an issuer nobody answers for: a network error would mean it asked first)."""
    with pytest.raises(ValueError, match="redirect_uri"):
        flows.browser_login(
            "https://127.0.0.1:1",
            client_id="demo-public",
            open_browser=lambda url: True,
            redirect_uri="https://127.0.0.1/callback",
        )


# -- hostile loopback callbacks ---------------------------------------------------------------


def test_an_error_description_is_escaped_on_the_page(oauth_server: ReferenceServer) -> None:
    """A callback whose error_description is a script: the login fails with the error, and
    the page shows the text, escaped, under a CSP that runs nothing."""
    pages: list[httpx.Response] = []
    answered = threading.Event()  # the launcher's thread may finish after the login
    script = "<script>alert('x')</script>"

    def hostile(url: str) -> bool:
        callback = (
            f"{redirect_uri_of(url)}?state={state_of(url)}&error=access_denied"
            f"&error_description={quote(script)}&iss={quote(oauth_server.issuer)}"
        )
        pages.append(httpx.get(callback))
        answered.set()
        return True

    with pytest.raises(LoginFailed) as caught:
        flows.browser_login(oauth_server.issuer, client_id="demo-public", open_browser=hostile)
    assert caught.value.error == "access_denied"
    assert answered.wait(10)
    (page,) = pages
    assert page.status_code == 400
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text or "script" not in page.text
    assert page.headers["content-security-policy"] == "default-src 'none'"


def test_hostile_connections_do_not_hold_the_real_answer(oauth_server: ReferenceServer) -> None:
    """A request line of a megabyte (400), a slowloris that sends half its headers and
    waits, a DELETE, another path: the real browser's answer still signs in at once, and
    the listener is closed after it (a repeated callback finds nothing)."""
    answers: list[int] = []
    slow = socket.socket()
    callbacks: list[str] = []

    def hostile(url: str) -> bool:
        redirect = urlsplit(redirect_uri_of(url))
        port = redirect.port or 0
        slow.connect(("127.0.0.1", port))
        slow.sendall(b"GET /callback?state=x HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and no more
        with socket.create_connection(("127.0.0.1", port)) as huge:
            line = b"GET /callback?" + b"a" * (1 << 20) + b" HTTP/1.1\r\n"
            # The listener may close a connection it has refused mid-send.
            with contextlib.suppress(OSError):
                huge.sendall(line)
            answers.append(int(huge.recv(100).split(b" ")[1]))
        base = f"http://127.0.0.1:{port}"
        with httpx.Client() as http:
            answers.append(http.delete(f"{base}/callback?state={state_of(url)}").status_code)
            answers.append(http.get(f"{base}/other?state={state_of(url)}&code=x").status_code)
        callbacks.append(f"{base}/callback?state={state_of(url)}&code=again")
        return oauth_server.browser()(url)

    try:
        tokens = flows.browser_login(
            oauth_server.issuer, client_id="demo-public", open_browser=hostile, timeout=60
        )
    finally:
        slow.close()
    assert tokens.access_token
    assert answers == [400, 405, 404]
    assert refused(callbacks[0])


# -- blocking logins at once, from threads ----------------------------------------------------


def test_two_blocking_logins_at_once_from_two_threads(oauth_server: ReferenceServer) -> None:
    """Two threads log in as alice and demo at once: two listeners on two ports, each login
    gets its own user's tokens (the browsers wait for each other: both listen together)."""
    both_open = threading.Barrier(2, timeout=30)
    results: dict[str, TokenSet] = {}
    ports: dict[str, int] = {}
    errors: list[BaseException] = []

    def log_in(user: str) -> None:
        browser = oauth_server.browser(user, user)

        def open_browser(url: str) -> object:
            ports[user] = urlsplit(redirect_uri_of(url)).port or 0
            both_open.wait()
            return browser(url)

        try:
            results[user] = flows.browser_login(
                oauth_server.issuer, client_id="demo-public", open_browser=open_browser
            )
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            errors.append(error)

    threads = [threading.Thread(target=log_in, args=(user,)) for user in ("alice", "demo")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert ports["alice"] != ports["demo"]
    assert results["alice"].id_claims()["sub"] == "alice"
    assert results["demo"].id_claims()["sub"] == "demo"


# -- Ctrl-C on a blocking login ----------------------------------------------------------------


def _interrupt_main() -> None:
    """Ctrl-C: a real SIGINT delivered to the main thread (it wakes a blocked wait)."""
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


@pytest.fixture
def main_thread_with_default_sigint() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach only the main thread")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by someone else here")


@pytest.mark.usefixtures("main_thread_with_default_sigint")
def test_ctrl_c_ends_a_blocking_login_and_its_listener(oauth_server: ReferenceServer) -> None:
    """Ctrl-C while a blocking login waits for the browser: KeyboardInterrupt, the port is
    free at once, no helper thread is left."""
    opened: list[str] = []

    def open_browser(url: str) -> bool:
        opened.append(url)
        _interrupt_main()
        return True

    with pytest.raises(KeyboardInterrupt):
        flows.browser_login(
            oauth_server.issuer, client_id="demo-public", open_browser=open_browser, timeout=60
        )
    assert refused(redirect_uri_of(opened[0]))
    assert not [t for t in threading.enumerate() if t.name == "freshtoken-blocking"]


@pytest.mark.usefixtures("main_thread_with_default_sigint")
def test_ctrl_c_on_a_blocking_login_inside_trio(oauth_server: ReferenceServer) -> None:
    """A blocking login called inside trio runs on a helper thread: Ctrl-C raises
    KeyboardInterrupt in the caller, and the login on the helper thread ends with it (the
    port is free, the helper is gone) rather than listening until its timeout."""
    trio = pytest.importorskip("trio")
    opened: list[str] = []

    def open_browser(url: str) -> bool:
        opened.append(url)
        _interrupt_main()
        return True

    async def main() -> None:
        flows.browser_login(
            oauth_server.issuer, client_id="demo-public", open_browser=open_browser, timeout=60
        )

    with pytest.raises(KeyboardInterrupt):
        trio.run(main)
    assert refused(redirect_uri_of(opened[0]))
    assert not [t for t in threading.enumerate() if t.name == "freshtoken-blocking"]


@pytest.mark.usefixtures("main_thread_with_default_sigint")
def test_ctrl_c_on_a_blocking_login_inside_asyncio(oauth_server: ReferenceServer) -> None:
    """A blocking login called inside asyncio.run: asyncio's Ctrl-C handler only cancels the
    main task, which cannot run while the login blocks its loop. The login must notice, end
    (port free, helper gone), and asyncio.run raise KeyboardInterrupt; not wait for the
    login's own timeout and report that."""
    opened: list[str] = []

    def open_browser(url: str) -> bool:
        opened.append(url)
        _interrupt_main()
        return True

    async def main() -> None:
        flows.browser_login(
            oauth_server.issuer, client_id="demo-public", open_browser=open_browser, timeout=20
        )

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert refused(redirect_uri_of(opened[0]))
    assert not [t for t in threading.enumerate() if t.name == "freshtoken-blocking"]
