"""Each login is written once, async; its blocking twin is generated (``_oauth.http.blocking``):
the same parameters, its own name, the same login on a private event loop. Against the
reference server over real TCP."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import pytest

import freshtoken
from freshtoken import DevicePrompt, TokenSet
from freshtoken._logins import flows
from freshtoken._logins.authorization import AuthorizationRequest
from freshtoken._logins.methods import LoginMethods
from freshtoken._oauth import id_tokens
from freshtoken.server import ReferenceServer

TWINS: list[tuple[Callable[..., Any], Callable[..., Any]]] = [
    (flows.browser_login, flows.abrowser_login),
    (flows.device_login, flows.adevice_login),
    (flows.password_login, flows.apassword_login),
    (flows.client_credentials_login, flows.aclient_credentials_login),
    (LoginMethods.browser_login, LoginMethods.abrowser_login),
    (LoginMethods.device_login, LoginMethods.adevice_login),
    (LoginMethods.password_login, LoginMethods.apassword_login),
    (AuthorizationRequest.exchange, AuthorizationRequest.aexchange),
    (id_tokens.verify_id_token, id_tokens.averify_id_token),
]


@pytest.mark.parametrize(("twin", "original"), TWINS, ids=lambda f: f.__qualname__)
def test_a_generated_twin_has_the_parameters_of_its_async_original(
    twin: Callable[..., Any], original: Callable[..., Any]
) -> None:
    """Same parameters and defaults (what a caller sees), the name without the ``a``, and
    not a coroutine function (manager.login calls it, manager.alogin the original)."""
    assert inspect.signature(twin).parameters == inspect.signature(original).parameters
    assert "a" + twin.__name__ == original.__name__
    assert twin.__qualname__.rpartition(".")[0] == original.__qualname__.rpartition(".")[0]
    assert not inspect.iscoroutinefunction(twin)
    assert inspect.iscoroutinefunction(original)


@pytest.mark.anyio
async def test_a_blocking_login_works_inside_async_code(oauth_server: ReferenceServer) -> None:
    """A blocking login called where an event loop runs (asyncio or trio) runs its own loop in
    a helper thread, as a blocking call does anyway."""
    refresher = freshtoken.OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    tokens = refresher.password_login(username="demo", password="demo")
    assert tokens.refresh_token


def test_a_blocking_device_login_takes_async_callbacks(oauth_server: ReferenceServer) -> None:
    """The blocking twin runs the async login: on_prompt and sleep may be async there too."""
    prompts: list[DevicePrompt] = []
    waits: list[float] = []

    async def on_prompt(prompt: DevicePrompt) -> None:
        prompts.append(prompt)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        oauth_server.advance(seconds)  # waits run on the server's clock, never in real time
        if len(waits) == 2:
            person = oauth_server.browser()
            uri = prompts[0].verification_uri_complete
            assert uri is not None
            person.approve_device(uri)

    refresher = freshtoken.OAuth2Refresher.from_issuer(oauth_server.issuer, client_id="demo-public")
    tokens = refresher.device_login(on_prompt=on_prompt, sleep=sleep, clock=oauth_server.clock)
    assert tokens.refresh_token
    assert len(prompts) == 1
    assert waits == [5.0, 5.0]  # a wait before each poll: pending, then approved
    assert oauth_server.stats()["token_requests_by_grant"]["device_code"] == 2


def test_a_browser_launcher_that_never_returns_holds_nothing(
    oauth_server: ReferenceServer,
) -> None:
    """open_browser signs in, then blocks (a console browser holding the terminal): the login
    ends with the answer all the same, and the launcher's thread is a daemon (it cannot hold
    the process's exit)."""
    browser = oauth_server.browser()
    release = threading.Event()
    launchers: list[threading.Thread] = []

    def open_browser(url: str) -> None:
        launchers.append(threading.current_thread())
        browser(url)
        release.wait()

    refresher = freshtoken.OAuth2Refresher.from_issuer(oauth_server.issuer, client_id="demo-public")
    try:
        tokens: TokenSet = refresher.browser_login(open_browser=open_browser, timeout=60)
        assert tokens.refresh_token
        (launcher,) = launchers
        assert launcher.is_alive()
        assert launcher.daemon
    finally:
        release.set()
