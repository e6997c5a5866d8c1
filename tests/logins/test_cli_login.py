"""``freshtoken login --issuer``: the browser flow (a player script as $BROWSER), the device
flow (a real CLI process, approved on the verification page), private_key_jwt, and one-line
failures that name CLI flags. All against the reference server over real TCP."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cli_fixture import CLI, Run
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tools import refused_port

from freshtoken.cli._login import browser_available as _browser_available
from freshtoken.server import Client, ReferenceServer
from freshtoken.stores import FileStore
from freshtoken.testing import ServerFactory

PLAYER = Path(__file__).with_name("browser_player.py")


def browser(monkeypatch: pytest.MonkeyPatch, *options: str) -> None:
    """$BROWSER plays the person: signs in (or denies) and follows the redirect."""
    command = [sys.executable, str(PLAYER), *options]
    monkeypatch.setenv("BROWSER", " ".join(shlex.quote(part) for part in command) + " %s")


def one_line_failure(result: Run) -> str:
    assert result.code == 1
    assert result.out == ""
    lines = [line for line in result.err.splitlines() if not line.startswith(("Opening", "  "))]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("freshtoken: login failed: "), lines[0]
    assert "Traceback" not in result.err
    return lines[0]


def test_browser_login_by_default_then_token_status_logout(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a browser at hand, --issuer alone means the browser flow; the profile remembers the
    issuer and client, so token, status and logout need nothing more."""
    browser(monkeypatch, "--username", "alice", "--password", "alice")
    result = cli("login", "--issuer", oauth_server.issuer, "--client-id", "demo-public")
    assert result.code == 0, result.err
    assert "logged in as alice" in result.out
    assert "If none opens, visit:" in result.err
    token = cli("token")
    assert token.code == 0
    me = httpx.get(
        f"{oauth_server.api_url}/me", headers={"Authorization": f"Bearer {token.out.strip()}"}
    )
    assert me.json()["username"] == "alice"
    (record,) = json.loads(cli("status", "--json").out)
    assert record["issuer"] == oauth_server.issuer
    assert record["grant"] == "authorization_code"
    assert record["username"] == "alice"
    logout = cli("logout")
    assert logout.code == 0, logout.err
    assert f"refresh token revoked at {oauth_server.revoke_url}" in logout.out
    assert FileStore(store_path).profiles() == {}


def test_token_refreshes_a_browser_profile(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired browser-login profile refreshes with what the profile remembers."""
    browser(monkeypatch)
    assert cli("login", "--issuer", oauth_server.issuer, "--client-id", "demo-public").code == 0
    store = FileStore(store_path)
    stored = store.load()
    assert stored is not None
    store.save(
        dataclasses.replace(stored.tokens, expires_at=1.0, obtained_at=0.0),
        expected_generation=stored.generation,
    )
    assert cli("token").code == 0
    assert oauth_server.stats()["refreshes"] == 1


def test_device_flow_in_a_real_cli_process(
    oauth_server_factory: ServerFactory, store_path: Path
) -> None:
    """Without a display the CLI picks the device flow, prints where to go, and finishes once
    a person approves on the verification page."""
    server = oauth_server_factory(device_interval=0)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")
    }
    env["FRESHTOKEN_STORE"] = str(store_path)
    argv = [sys.executable, "-m", "freshtoken.cli", "login", "--issuer", server.issuer]
    process = subprocess.Popen(
        [*argv, "--client-id", "demo-public"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        prompt = process.stderr.readline()
        assert prompt.startswith("To sign in, open ")
        uri = prompt.removeprefix("To sign in, open ").strip()
        assert server.browser().approve_device(uri) == "Device connected"
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "logged in as demo" in out
    profile = FileStore(store_path).load_profile()
    assert profile is not None
    assert profile.meta["grant"] == "device_code"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({"BROWSER": "firefox"}, True, id="browser-set"),
        pytest.param({"SSH_CONNECTION": "1.2.3.4 5 6.7.8.9 22", "DISPLAY": ":0"}, False, id="ssh"),
        pytest.param({}, False, id="no-display"),
    ],
)
def test_which_flow_by_default(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: bool
) -> None:
    """Browser when one can be opened; device over SSH or without a display (Linux)."""
    for name in ("BROWSER", "SSH_CONNECTION", "SSH_TTY", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if sys.platform.startswith("linux") or expected:
        assert _browser_available() is expected


def test_private_key_jwt_profile(
    cli: CLI, oauth_server_factory: ServerFactory, tmp_path: Path, store_path: Path
) -> None:
    """--private-key: the profile names the key file; token re-acquires by signed assertion."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_file = tmp_path / "client.pem"
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    client = Client("robot", None, frozenset({"client_credentials"}), public_key=public.decode())
    server = oauth_server_factory(clients=(client,), clock=time.time)
    result = cli(
        "login", "--issuer", server.issuer, "--client-id", "robot",
        "--flow", "client-credentials", "--private-key", str(key_file), "--key-id", "k1",
    )  # fmt: skip
    assert result.code == 0, result.err
    profile = FileStore(store_path).load_profile()
    assert profile is not None
    assert profile.meta["auth_method"] == "private_key_jwt"
    assert profile.meta["private_key_file"] == str(key_file)
    assert "PRIVATE KEY" not in store_path.read_text()
    server.expire_access_tokens()
    FileStore(store_path).clear()
    assert cli("token").code == 0
    assert server.stats()["token_requests_by_grant"]["client_credentials"] == 2
    key_file.unlink()
    assert "cannot be read" in cli("token").err


def test_failures_are_one_line_naming_flags(
    cli: CLI, oauth_server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Denied consent, a flow that needs --issuer, an unreachable server, plain HTTP: each is
    one 'freshtoken: login failed: ...' line that speaks of flags, never a traceback."""
    browser(monkeypatch, "--deny")
    denied = cli("login", "--issuer", oauth_server.issuer, "--client-id", "demo-public")
    assert "access_denied" in one_line_failure(denied)

    no_issuer = cli(
        "login", "--token-url", oauth_server.token_url, "--client-id", "x", "--flow", "browser"
    )
    assert "--flow browser needs --issuer" in one_line_failure(no_issuer)

    with refused_port() as port:
        down = cli("login", "--issuer", f"http://127.0.0.1:{port}", "--client-id", "x")
    assert f"cannot reach http://127.0.0.1:{port}/" in one_line_failure(down)
    assert "connection refused" in down.err

    insecure = cli("login", "--issuer", "http://id.example.invalid", "--client-id", "x")
    line = one_line_failure(insecure)
    assert "--allow-insecure-http" in line
    assert "allow_insecure_http" not in line

    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    empty_password = cli(
        "login", "--issuer", oauth_server.issuer, "--client-id", "demo-public",
        "--username", "demo", "--password-stdin",
    )  # fmt: skip
    assert "no password given" in one_line_failure(empty_password)


def test_wrong_password_and_unsupported_grant(
    cli: CLI, oauth_server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong password is invalid_grant; a server's refusal of the grant says so."""
    server = oauth_server_factory(
        clients=(Client("web", None, frozenset({"authorization_code", "refresh_token"})),)
    )
    monkeypatch.setenv("FRESHTOKEN_PASSWORD", "wrong-SECRET")
    wrong = cli("login", "--issuer", server.issuer, "--client-id", "web", "--username", "demo")
    line = one_line_failure(wrong)
    assert "unauthorized_client" in line
    assert "SECRET" not in line
    monkeypatch.setenv("FRESHTOKEN_PASSWORD", "nope-SECRET")
    server.configure(clients=(Client("web", None, frozenset({"password"})),))
    bad = cli("login", "--issuer", server.issuer, "--client-id", "web", "--username", "demo")
    assert "invalid_grant" in one_line_failure(bad)
    assert "SECRET" not in bad.err
