"""The ``cli`` fixture: runs ``freshtoken`` in-process against a token file of the test's own,
with none of the user's environment (profile, secrets, browser, SSH session) leaking in."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import pytest

from freshtoken.cli import main

__all__ = ["CLI", "Run", "cli", "store_path"]


@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str


class CLI(Protocol):
    def __call__(self, *argv: str) -> Run: ...


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's token file, as $FRESHTOKEN_STORE; the variables a user may have set are unset."""
    path = tmp_path / "config" / "tokens.json"
    monkeypatch.setenv("FRESHTOKEN_STORE", str(path))
    for name in (
        "FRESHTOKEN_ENCRYPTION_KEY",
        "FRESHTOKEN_PROFILE",
        "FRESHTOKEN_CLIENT_SECRET",
        "FRESHTOKEN_PASSWORD",
        "BROWSER",
        "SSH_CONNECTION",
        "SSH_TTY",
    ):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], store_path: Path) -> CLI:
    """``cli("login", ...)`` runs the command and returns its exit code, stdout and stderr."""

    def run(*argv: str) -> Run:
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
