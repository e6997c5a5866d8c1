"""A profile logged in at the reference server, for the tests of the commands built on it
(``token --format``, ``exec``, ``git-credential``, the agent)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from freshtoken import TokenSet
from freshtoken.cli import main
from freshtoken.server import ReferenceServer
from freshtoken.stores import FileStore

_CLEARED = (
    "FRESHTOKEN_ENCRYPTION_KEY",
    "FRESHTOKEN_PROFILE",
    "FRESHTOKEN_CLIENT_SECRET",
    "FRESHTOKEN_PASSWORD",
    "FRESHTOKEN_AGENT_SOCKET",
    "FRESHTOKEN_GIT_CONFIG",
    "KUBERNETES_EXEC_INFO",
)


@dataclasses.dataclass
class LoggedIn:
    """Profile ``name`` of the token file ``store``, logged in as demo at ``server``."""

    server: ReferenceServer
    store: Path
    name: str = "default"

    @property
    def env(self) -> dict[str, str]:
        """The environment for a ``freshtoken`` child process on this store."""
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
        env["FRESHTOKEN_STORE"] = str(self.store)
        return env

    def tokens(self) -> TokenSet:
        stored = FileStore(self.store, profile=self.name, watch_interval=None).load()
        assert stored is not None
        return stored.tokens

    def expire(self) -> None:
        """The stored access token has expired, here and at the server."""
        store = FileStore(self.store, profile=self.name, watch_interval=None)
        stored = store.load()
        assert stored is not None
        past = dataclasses.replace(stored.tokens, expires_at=1.0, obtained_at=0.0)
        store.save(past, expected_generation=stored.generation)
        self.server.expire_access_tokens()

    def run(
        self, *argv: str, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """``freshtoken ARGV`` in a child process."""
        return subprocess.run(
            [sys.executable, "-m", "freshtoken.cli", *argv],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def api_status(self, access_token: str) -> int:
        import httpx

        response = httpx.get(
            self.server.api_url + "/me", headers={"Authorization": f"Bearer {access_token}"}
        )
        return response.status_code


def log_in(
    server: ReferenceServer, store: Path, monkeypatch: pytest.MonkeyPatch, name: str = "default"
) -> LoggedIn:
    for variable in _CLEARED:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FRESHTOKEN_PASSWORD", "demo")
    monkeypatch.setenv("FRESHTOKEN_CLIENT_SECRET", "demo-secret")
    argv: Sequence[str] = (
        "login", "--token-url", server.token_url, "--client-id", "demo", "--username", "demo",
        "--store", str(store), "--profile", name,
    )  # fmt: skip
    assert main(list(argv)) == 0
    monkeypatch.delenv("FRESHTOKEN_PASSWORD")
    monkeypatch.delenv("FRESHTOKEN_CLIENT_SECRET")
    monkeypatch.setenv("FRESHTOKEN_STORE", str(store))
    return LoggedIn(server, store, name)


@pytest.fixture
def logged_in(
    oauth_server: ReferenceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> LoggedIn:
    """Profile 'default' in a fresh token file, logged in at the reference server."""
    profile = log_in(oauth_server, tmp_path / "config" / "tokens.json", monkeypatch)
    oauth_server.reset_stats()
    return profile
