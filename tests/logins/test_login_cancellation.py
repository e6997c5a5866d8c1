"""Cancelling an async login (asyncio and trio) at each of its waits: discovery, the browser
launcher, the wait for the answer, the code exchange, the device prompt and its polls. Each
time the login ends at once, the loopback port is free, the connection it had open is closed,
and no helper thread of the login's is left behind. Real TCP: the reference server, and a
server that takes requests and never answers (it says when one came, and when its client
hung up)."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

import freshtoken
from freshtoken import DevicePrompt
from freshtoken._oauth.discovery import ametadata_of
from freshtoken.server import ReferenceServer
from freshtoken.testing import ServerFactory

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


class Silent:
    """Accepts one connection, reads its request, never answers; `asked` is set when the
    request came, `hung_up` when the client closed the connection."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.hung_up = threading.Event()
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # closed at teardown
            connection, _ = self._socket.accept()
            with connection:
                connection.recv(65536)
                self.asked.set()
                while connection.recv(65536):
                    pass
                self.hung_up.set()

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    server = Silent()
    yield server
    server.close()


def refused(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def port_of(url: str) -> int:
    return urlsplit(parse_qs(urlsplit(url).query)["redirect_uri"][0]).port or 0


def login_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "freshtoken-blocking"]


async def cancel_when(
    login: Callable[[], Awaitable[object]], ready: Callable[[], Awaitable[object]]
) -> None:
    """Start ``login``, wait until ``ready`` returns, cancel it; the login must end then."""
    finished = anyio.Event()

    async def run() -> None:
        try:
            await login()
        finally:
            finished.set()

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await ready()
        group.cancel_scope.cancel()
    assert finished.is_set()


async def test_cancelled_during_discovery(silent: Silent) -> None:
    """The issuer's metadata never comes: cancelling hangs up on it."""
    await cancel_when(
        lambda: freshtoken.abrowser_login(silent.url, client_id="app", open_browser=print),
        lambda: anyio.to_thread.run_sync(silent.asked.wait),
    )
    assert await anyio.to_thread.run_sync(silent.hung_up.wait, 10)
    assert not login_threads()


async def test_cancelled_while_a_plain_launcher_blocks(oauth_server: ReferenceServer) -> None:
    """A plain open_browser that blocks (in its own thread): the cancelled login does not
    wait for it, and frees the port."""
    release = threading.Event()
    opened: list[str] = []
    launched = threading.Event()

    def open_browser(url: str) -> None:
        opened.append(url)
        launched.set()
        release.wait()

    try:
        await cancel_when(
            lambda: freshtoken.abrowser_login(
                oauth_server.issuer, client_id="demo-public", open_browser=open_browser
            ),
            lambda: anyio.to_thread.run_sync(launched.wait),
        )
        assert refused(port_of(opened[0]))
    finally:
        release.set()


async def test_cancelled_during_the_code_exchange(
    oauth_server: ReferenceServer, silent: Silent
) -> None:
    """The browser answered, the code exchange hangs: cancelling hangs up on the token
    endpoint; the listener was already closed."""
    metadata = await ametadata_of(oauth_server.issuer)
    stalled = dataclasses.replace(metadata, token_endpoint=f"{silent.url}/token")
    opened: list[str] = []

    def open_browser(url: str) -> object:
        opened.append(url)
        return oauth_server.browser()(url)

    await cancel_when(
        lambda: freshtoken.abrowser_login(
            stalled, client_id="demo-public", open_browser=open_browser
        ),
        lambda: anyio.to_thread.run_sync(silent.asked.wait),
    )
    assert await anyio.to_thread.run_sync(silent.hung_up.wait, 10)
    assert refused(port_of(opened[0]))


async def test_cancelled_while_a_device_login_waits(
    oauth_server_factory: ServerFactory,
) -> None:
    """An async on_prompt that never returns, then a poll's wait that never ends: each
    cancelled at once, nothing polled after."""
    server = oauth_server_factory()
    prompted = anyio.Event()
    forever = anyio.Event()

    async def on_prompt(prompt: DevicePrompt) -> None:
        prompted.set()
        await forever.wait()

    await cancel_when(
        lambda: freshtoken.adevice_login(
            server.issuer, client_id="demo-public", on_prompt=on_prompt
        ),
        prompted.wait,
    )
    sleeping = anyio.Event()

    async def sleep(seconds: float) -> None:
        sleeping.set()
        await forever.wait()

    await cancel_when(
        lambda: freshtoken.adevice_login(
            server.issuer, client_id="demo-public", on_prompt=lambda p: None, sleep=sleep
        ),
        sleeping.wait,
    )
    assert server.stats()["token_requests_by_grant"]["device_code"] == 0
