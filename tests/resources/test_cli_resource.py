"""``freshtoken login --resource URL`` and ``freshtoken token --resource URL`` with nothing
else given, against the reference server's API over real TCP ($BROWSER plays the person)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import httpx
import pytest
from cli_fixture import CLI

from freshtoken._resource_logins import resource_profile
from freshtoken.stores import FileStore
from freshtoken.testing import ServerFactory

PLAYER = Path(__file__).parent.parent / "logins" / "browser_player.py"


def test_login_and_token_with_only_the_resource_url(
    cli: CLI,
    oauth_server_factory: ServerFactory,
    store_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = oauth_server_factory(strict_resource=True)
    command = [sys.executable, str(PLAYER), "--username", "alice", "--password", "alice"]
    monkeypatch.setenv("BROWSER", " ".join(shlex.quote(part) for part in command) + " %s")
    login = cli("login", "--resource", server.api_url)
    assert login.code == 0, login.err
    profile = resource_profile(server.api_url)
    assert f"profile {profile!r}" in login.out
    token = cli("token", "--resource", server.api_url)
    assert token.code == 0, token.err
    me = httpx.get(f"{server.api_url}/me", headers={"Authorization": f"Bearer {token.out.strip()}"})
    assert me.json()["username"] == "alice"
    names = FileStore(store_path).profiles()
    assert profile in names
    assert any(name.startswith("client-") for name in names)  # the registration, beside it
    again = cli("token", "--resource", server.api_url)
    assert again.out == token.out  # from the file, no second login
    stats = server.stats()
    assert (stats["registrations"], stats["logins"]) == (1, 1)


def test_token_without_a_login_says_to_log_in(
    cli: CLI, oauth_server_factory: ServerFactory
) -> None:
    server = oauth_server_factory()
    token = cli("token", "--resource", server.api_url)
    assert token.code == 1
    assert f"freshtoken login --resource {server.api_url}" in token.err
    assert "Traceback" not in token.err
    assert server.stats()["registrations"] == 0


def test_login_without_client_id_or_resource_is_one_line(cli: CLI) -> None:
    result = cli("login", "--issuer", "https://login.example.com")
    assert result.code == 1
    assert "--client-id is required" in result.err
