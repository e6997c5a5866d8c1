"""Device logins (RFC 8628) end to end: the client polls while a 'person' approves on the
verification page; waits run on the server's ManualClock, never in real time."""

from __future__ import annotations

import threading

import anyio
import pytest

import freshtoken
from freshtoken import DevicePrompt, LoginFailed
from freshtoken._logins import flows  # the free logins, deprecated in the public API
from freshtoken.server import ReferenceServer
from freshtoken.testing import ServerFactory


class Approver:
    """on_prompt that has a person approve on the verification page after `after` polls."""

    def __init__(self, server: ReferenceServer, *, after: int = 1, approve: bool = True) -> None:
        self.server = server
        self.after = after
        self.approve = approve
        self.prompts: list[DevicePrompt] = []
        self.sleeps: list[float] = []

    def on_prompt(self, prompt: DevicePrompt) -> None:
        self.prompts.append(prompt)

    def sleep(self, seconds: float) -> None:
        """The poller's wait: moves the shared clock; the person acts after `after` waits."""
        self.sleeps.append(seconds)
        self.server.advance(seconds)
        if len(self.sleeps) == self.after:
            person = self.server.browser(approve=self.approve)
            uri = self.prompts[0].verification_uri_complete
            assert uri is not None
            person.approve_device(uri)


def test_device_login_polls_until_approved(oauth_server: ReferenceServer) -> None:
    """Pending polls, then the person approves on the page, then tokens (at 5 s intervals)."""
    approver = Approver(oauth_server, after=3)
    tokens = flows.device_login(
        oauth_server.issuer,
        client_id="demo-public",
        on_prompt=approver.on_prompt,
        sleep=approver.sleep,
        clock=oauth_server.clock,
    )
    assert tokens.refresh_token
    assert tokens.id_claims()["sub"] == "demo"
    assert approver.sleeps == [5.0, 5.0, 5.0]
    prompt = approver.prompts[0]
    assert prompt.verification_uri == oauth_server.device_url
    assert prompt.user_code in str(prompt)
    assert oauth_server.stats()["token_requests_by_grant"]["device_code"] == 3


def test_a_task_approves_while_the_client_polls(oauth_server_factory: ServerFactory) -> None:
    """A real concurrent approver: the client polls while another thread approves."""
    server = oauth_server_factory(device_interval=0)
    prompted = threading.Event()
    prompts: list[DevicePrompt] = []

    def on_prompt(prompt: DevicePrompt) -> None:
        prompts.append(prompt)
        prompted.set()

    def person() -> None:
        prompted.wait(10)
        server.browser("alice", "alice").approve_device(server.device_url, prompts[0].user_code)

    thread = threading.Thread(target=person)
    thread.start()
    polls: list[float] = []
    tokens = flows.device_login(
        server.issuer, client_id="demo-public", on_prompt=on_prompt, sleep=polls.append
    )
    thread.join(10)
    assert tokens.id_claims()["sub"] == "alice"
    assert polls  # it did poll; the server's interval 0 is raised to one poll a second
    assert set(polls) == {1.0}


def test_slow_down_adds_five_seconds(oauth_server: ReferenceServer) -> None:
    """A client whose waits come up short hears slow_down and waits 5 s longer each time."""
    sleeps: list[float] = []
    prompts: list[DevicePrompt] = []

    def short_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        oauth_server.advance(1 if len(sleeps) > 1 else seconds)  # the machine's clock drifts
        if len(sleeps) == 4:
            uri = prompts[0].verification_uri_complete
            assert uri is not None
            oauth_server.browser().approve_device(uri)
            oauth_server.advance(100)

    tokens = flows.device_login(
        oauth_server.issuer,
        client_id="demo-public",
        on_prompt=prompts.append,
        sleep=short_sleep,
        clock=oauth_server.clock,
    )
    assert tokens.access_token
    assert sleeps == [5.0, 5.0, 10.0, 15.0]


def test_denied_device_is_access_denied(oauth_server: ReferenceServer) -> None:
    """The person denies: LoginFailed access_denied."""
    approver = Approver(oauth_server, approve=False)
    with pytest.raises(LoginFailed) as caught:
        flows.device_login(
            oauth_server.issuer,
            client_id="demo-public",
            on_prompt=approver.on_prompt,
            sleep=approver.sleep,
            clock=oauth_server.clock,
        )
    assert caught.value.error == "access_denied"


def test_expired_code_is_expired_token(oauth_server: ReferenceServer) -> None:
    """Nobody approves within expires_in: LoginFailed expired_token."""
    sleeps: list[float] = []

    def idle(seconds: float) -> None:
        sleeps.append(seconds)
        oauth_server.advance(seconds if len(sleeps) < 3 else 600)

    with pytest.raises(LoginFailed) as caught:
        flows.device_login(
            oauth_server.issuer,
            client_id="demo-public",
            on_prompt=lambda prompt: None,
            sleep=idle,
            clock=oauth_server.clock,
        )
    assert caught.value.error == "expired_token"


@pytest.mark.anyio
async def test_async_device_login(oauth_server_factory: ServerFactory) -> None:
    """adevice_login on asyncio and trio: an async on_prompt, a task approves."""
    server = oauth_server_factory(device_interval=0)
    prompts: list[DevicePrompt] = []
    prompted = anyio.Event()

    async def on_prompt(prompt: DevicePrompt) -> None:
        prompts.append(prompt)
        prompted.set()

    async def person() -> None:
        await prompted.wait()
        uri = prompts[0].verification_uri_complete
        assert uri is not None
        await anyio.to_thread.run_sync(server.browser().approve_device, uri)

    async def tick(seconds: float) -> None:
        await anyio.sleep(0.01)  # lets the person's task run

    async with anyio.create_task_group() as group:
        group.start_soon(person)
        tokens = await flows.adevice_login(
            server.issuer, client_id="demo-public", on_prompt=on_prompt, sleep=tick
        )
    assert tokens.id_claims()["sub"] == "demo"


def test_refresher_device_login(oauth_server: ReferenceServer) -> None:
    """A refresher from_issuer logs in on the device with its own client settings."""
    refresher = freshtoken.OAuth2Refresher.from_issuer(
        oauth_server.issuer, client_id="demo", client_secret="demo-secret"
    )
    approver = Approver(oauth_server)
    tokens = refresher.device_login(
        on_prompt=approver.on_prompt, sleep=approver.sleep, clock=oauth_server.clock
    )
    assert tokens.id_claims()["aud"] == "demo"


def test_a_server_without_device_flow_says_so(oauth_server: ReferenceServer) -> None:
    """Metadata without a device endpoint: a clear LoginFailed before anything is sent."""
    metadata = freshtoken.discover(oauth_server.issuer)
    bare = freshtoken.ServerMetadata(issuer=metadata.issuer, token_endpoint=metadata.token_endpoint)
    with pytest.raises(LoginFailed) as caught:
        flows.device_login(bare, client_id="demo-public")
    assert caught.value.error == "unsupported_flow"
    assert "use a browser login" in str(caught.value)


def test_print_prompt_writes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """The default prompt goes to stderr, never stdout (which may be piped)."""
    flows.print_prompt(DevicePrompt("WDJB-MJHT", "https://id.example/device", None, expires_in=600))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "open https://id.example/device and enter the code WDJB-MJHT" in captured.err
    assert "10 min" in captured.err
