"""``freshtoken bff``: a config file that cannot run is refused at start with one line naming
the key and the fix (secrets may come from the environment); a port in use is one line too;
``--demo`` serves a page at the URL its banner names, and stops cleanly."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from browser_fixture import bff_demo
from starlette.applications import Starlette

from freshtoken.bff import BFF, MemorySessionStore, RedisSessionStore
from freshtoken.bff._command import ConfigError, build, load_config
from freshtoken.cli import main

BASE: dict[str, Any] = {
    "issuer": "https://idp.example.com",
    "client_id": "spa",
    "secret_key": "a long enough passphrase for tests",
    "routes": {"/api/": "https://api.example.com/"},
}


def write(tmp_path: Path, document: dict[str, Any], name: str = "bff.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_a_toml_config_with_secrets_from_the_environment_builds_a_bff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TOML, secrets named by *_env keys, Redis sessions: a BFF with those settings."""
    monkeypatch.setenv("SPA_SECRET", "client-SECRET")
    monkeypatch.setenv("SPA_KEY", "a long enough passphrase for tests")
    path = tmp_path / "bff.toml"
    path.write_text(
        'issuer = "https://idp.example.com"\n'
        'client_id = "spa"\n'
        'client_secret_env = "SPA_SECRET"\n'
        'secret_key_env = "SPA_KEY"\n'
        "idle_timeout = 600\n"
        '[routes]\n"/api/" = "https://api.example.com/"\n'
        '[sessions]\nkind = "redis"\nurl = "redis://127.0.0.1:1/0"\nprefix = "app:"\n'
    )
    app = build(load_config(path), workers=2)
    assert isinstance(app, BFF)
    assert app.client_secret == "client-SECRET"
    assert app.idle_timeout == 600
    assert isinstance(app.sessions, RedisSessionStore)
    assert app.sessions.prefix == "app:"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"client_id": None}, "client_id is required"),
        ({"issuer": None}, "issuer is required"),
        ({"secret_key": None, "secret_key_env": "NOT_SET_ANYWHERE"}, "which is not set"),
        ({"routes": ["/api/"]}, r"\[routes\] must be a table"),
        ({"sessions": {"kind": "memcached"}}, "kind is memory or redis"),
        ({"sessions": {"kind": "redis"}}, "needs a url"),
        ({"colour": "blue"}, "unknown or misspelt setting"),
        ({"routes": {"api": "https://api.example.com/"}}, "starts and ends with '/'"),
        ({"routes": {"/api/": "http://api.example.com/"}}, "plain HTTP"),
        ({"secret_key": "short"}, "32 random bytes, or a passphrase"),
        ({"previous_keys": "one key, not a list"}, "previous_keys must be a list"),
        ({"previous_keys": [""]}, "previous_keys must be a list of non-empty strings"),
        ({"previous_keys_env": "OLD_KEY"}, "previous_keys_env must be a list"),
        ({"previous_keys_env": ["NOT_SET_ANYWHERE"]}, r"\$NOT_SET_ANYWHERE, which is not set"),
        ({"previous_keys": ["short"]}, "32 random bytes, or a passphrase"),
        ({"max_calls_per_session": 0}, "max_calls_per_session must be a whole number"),
        ({"max_calls_per_session": "many"}, "max_calls_per_session must be a whole number"),
        ({"max_calls_per_session": 2.5}, "max_calls_per_session must be a whole number"),
    ],
)
def test_a_bad_config_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], message: str
) -> None:
    """Exit status 2 and a message naming the key; no traceback."""
    document = {**BASE, **change}
    document = {key: value for key, value in document.items() if value is not None}
    assert main(["bff", "--config", str(write(tmp_path, document))]) == 2
    error = capsys.readouterr().err
    assert error.startswith("freshtoken bff: ")
    assert len(error.strip().splitlines()) == 1
    assert re.search(message, error), error


def test_memory_sessions_with_several_workers_are_refused(tmp_path: Path) -> None:
    """Sessions in memory are per process: workers = 2 needs Redis."""
    with pytest.raises(ConfigError, match='use kind = "redis"'):
        build(load_config(write(tmp_path, BASE)), workers=2)


def test_an_unreadable_or_malformed_file_is_refused(tmp_path: Path) -> None:
    """A missing file and a broken one each say what is wrong with them."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("issuer = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(broken)


def test_previous_keys_and_the_call_bound_come_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """previous_keys (as written) and previous_keys_env (each variable one key) make one list,
    read from the environment as the other secrets are; max_calls_per_session is set."""
    monkeypatch.setenv("OLD_KEY_1", "the first retired passphrase, long")
    monkeypatch.setenv("OLD_KEY_2", "the second retired passphrase, long")
    document = {
        **BASE,
        "previous_keys": ["a retired passphrase written in the file"],
        "previous_keys_env": ["OLD_KEY_1", "OLD_KEY_2"],
        "max_calls_per_session": 8,
    }
    app = build(load_config(write(tmp_path, document)))
    assert isinstance(app, BFF)
    assert len(app._cookies.keys.previous) == 3
    assert app.calls.limit == 8
    assert "passphrase" not in repr(app._cookies.keys)


def test_the_call_bound_defaults_to_32_and_no_previous_keys(tmp_path: Path) -> None:
    app = build(load_config(write(tmp_path, BASE)))
    assert app.calls.limit == 32
    assert app._cookies.keys.previous == ()


# -- serving: the port, the demo's page, the shutdown -------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


@pytest.mark.parametrize("mode", ["config", "demo"])
def test_a_port_in_use_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], taken_port: int, mode: str
) -> None:
    """`freshtoken bff` on a busy port: no banner, no server's own error, one line naming the
    address, exit status 1 (as `freshtoken serve`), and nothing was started."""
    argv = ["--demo"] if mode == "demo" else ["--config", str(write(tmp_path, BASE))]
    threads_before = {thread.name for thread in threading.enumerate()}
    assert main(["bff", *argv, "--port", str(taken_port)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"freshtoken bff: cannot listen on 127.0.0.1:{taken_port}: Address already in use"
        " (pass --port, or stop what uses it)\n"
    )
    started = {thread.name for thread in threading.enumerate()} - threads_before
    assert not any(name.startswith("freshtoken-server") for name in started)


def test_an_address_not_of_this_machine_is_one_line(tmp_path: Path) -> None:
    """A [server] host this machine does not have: one line, exit 1, before any worker forks."""
    config = {**BASE, "server": {"host": "192.0.2.1", "port": 8000, "workers": 2}}
    config["sessions"] = {"kind": "redis", "url": "redis://127.0.0.1:1/0"}
    done = subprocess.run(
        [sys.executable, "-m", "freshtoken.cli", "bff", "--config", str(write(tmp_path, config))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("freshtoken bff: cannot listen on 192.0.2.1:8000: ")
    assert len(done.stderr.splitlines()) == 1
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "80000"], "a port is 0..65535, not 80000"),
        (["--port", "http"], "not a port number"),
        (["--workers", "0"], "must be between 1 and 1024"),
        (["--access-ttl", "-1"], "must be > 0"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(argv: list[str], message: str) -> None:
    """Flags argparse checks: one line, exit 2, before anything starts (in a child process:
    were a flag let through, the demo would serve until the timeout)."""
    done = subprocess.run(
        [sys.executable, "-m", "freshtoken.cli", "bff", "--demo", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert message in done.stderr


def test_the_demo_serves_the_page_its_banner_names() -> None:
    """`freshtoken bff --demo` (no --static, no checkout of the SPA): the URL of its banner
    serves the built-in page and its script, the BFF answers beside them, and Ctrl-C stops it
    cleanly (exit 0, nothing on stderr)."""
    with (
        bff_demo([sys.executable, "-m", "freshtoken.cli"]) as demo,
        httpx.Client(base_url=demo.url, timeout=10) as client,
    ):
        page = client.get("/")
        script = client.get("/app.js")
        user = client.get("/bff/user", headers={"X-CSRF": "1"})
        login = client.get("/bff/login")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="login"' in page.text
    assert '<script src="/app.js">' in page.text
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert user.json() == {"authenticated": False}
    assert login.status_code == 302  # to the reference server's login page
    assert demo.code == 0, demo.err
    assert demo.err == ""
    assert demo.out.endswith("Ctrl-C stops it.\n")


class _RecordingSessions(MemorySessionStore):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    async def aclose(self) -> None:
        await anyio.sleep(0)  # a checkpoint, where a cancelled task would stop
        self.closed = True


@pytest.mark.anyio
async def test_a_bff_wrapping_an_app_closes_before_its_shutdown_is_complete() -> None:
    """The wrapped app (the SPA's files) owns the lifespan; the BFF's own connections close
    before "shutdown complete" goes to the server, which may cancel what runs after it (seen
    as a traceback at Ctrl-C of `freshtoken bff --demo`)."""
    sessions = _RecordingSessions()
    bff = BFF(**{**BASE, "routes": BASE["routes"]}, sessions=sessions, app=Starlette())
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[tuple[str, bool]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append((message["type"], sessions.closed))

    await bff({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == [("lifespan.startup.complete", False), ("lifespan.shutdown.complete", True)]
