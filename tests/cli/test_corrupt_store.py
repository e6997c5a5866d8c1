"""``login`` onto a corrupt token file: without a terminal to ask on, one line says exactly how
to replace it (``--replace-corrupt``, and where the file will go); with the flag, the file is
moved aside, kept as it was, once the login has its tokens. A healthy file, a file that is
not a token store, and a failed login leave everything in place. (At a terminal, login asks:
tests/cli/test_prompts.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_fixture import CLI, Run

from freshtoken.server import ReferenceServer
from freshtoken.stores import FileStore

CORRUPT = {
    "torn": b'{"format": "freshtoken/1", "serial": 1, "profi',
    "empty": b"",
    "bad-serial": b'{"format": "freshtoken/1", "serial": "x", "profiles": {}}',
    "nested": b'{"format": "freshtoken/1", "serial": 1, "profiles": ' + b"[" * 100_000,
}


@pytest.fixture
def login(cli: CLI, oauth_server: ReferenceServer, monkeypatch: pytest.MonkeyPatch) -> CLI:
    """``login(*flags)``: a client credentials login (no prompt) to the test's server."""
    monkeypatch.setenv("FRESHTOKEN_CLIENT_SECRET", "demo-secret")

    def run(*flags: str) -> Run:
        return cli("login", "--token-url", oauth_server.token_url, "--client-id", "demo", *flags)

    return run


def write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(0o600)


@pytest.mark.parametrize("content", list(CORRUPT))
def test_login_says_how_to_replace_a_corrupt_file(
    login: CLI, store_path: Path, oauth_server: ReferenceServer, content: str
) -> None:
    """One line naming --replace-corrupt and where the file would go, not "log in again";
    the file untouched, and nothing sent to the server."""
    write(store_path, CORRUPT[content])
    result = login()
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert result.err.startswith(f"freshtoken: login failed: token store {store_path} is ")
    assert result.err.endswith(
        f": pass --replace-corrupt to move it to {store_path}.corrupt and start a new one\n"
    )
    assert "log in again" not in result.err
    assert store_path.read_bytes() == CORRUPT[content]
    assert oauth_server.stats()["token_requests"] == 0


def test_replace_corrupt_moves_it_aside_and_logs_in(login: CLI, store_path: Path) -> None:
    """The corrupt file is kept, as it was and owner-only, beside the new one."""
    write(store_path, CORRUPT["torn"])
    result = login("--replace-corrupt")
    assert result.code == 0, result.err
    assert result.err == f"moved the corrupt token file to {store_path}.corrupt\n"
    aside = Path(f"{store_path}.corrupt")
    assert aside.read_bytes() == CORRUPT["torn"]
    assert aside.stat().st_mode & 0o777 == 0o600
    assert FileStore(store_path).load_profile() is not None


def test_an_earlier_copy_is_not_overwritten(login: CLI, store_path: Path) -> None:
    """A second corrupt file goes to FILE.corrupt-2: the first one aside is kept."""
    write(store_path, CORRUPT["empty"])
    write(Path(f"{store_path}.corrupt"), b"the first one")
    first = login()
    assert f"move it to {store_path}.corrupt-2 " in first.err
    assert login("--replace-corrupt").code == 0
    assert Path(f"{store_path}.corrupt").read_bytes() == b"the first one"
    assert Path(f"{store_path}.corrupt-2").read_bytes() == CORRUPT["empty"]


def test_replace_corrupt_leaves_a_healthy_file_alone(login: CLI, store_path: Path) -> None:
    """On a healthy file the flag does nothing: other profiles stay, nothing is moved."""
    assert login("--profile", "work").code == 0
    result = login("--replace-corrupt")
    assert result.code == 0
    assert result.err == ""
    assert set(FileStore(store_path).profiles()) == {"default", "work"}
    assert not Path(f"{store_path}.corrupt").exists()


@pytest.mark.parametrize(
    "content",
    [
        b'{"hello": "world"}',  # not a token store: another program's, or the wrong path
        b'{"format": "freshtoken/2", "serial": 1, "profiles": {}}',  # a newer freshtoken's
    ],
    ids=["foreign", "newer"],
)
def test_a_file_that_is_not_corrupt_is_never_moved(
    login: CLI, store_path: Path, content: bytes
) -> None:
    """Not ours, or newer than us: --replace-corrupt does not apply; its own advice stands."""
    write(store_path, content)
    result = login("--replace-corrupt")
    assert result.code == 1
    assert "--replace-corrupt" not in result.err
    assert store_path.read_bytes() == content
    assert not Path(f"{store_path}.corrupt").exists()


def test_a_failed_login_leaves_the_corrupt_file_in_place(
    login: CLI, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is moved only once the login has its tokens."""
    write(store_path, CORRUPT["torn"])
    monkeypatch.setenv("FRESHTOKEN_CLIENT_SECRET", "wrong-secret")
    result = login("--replace-corrupt")
    assert result.code == 1
    assert "invalid_client" in result.err
    assert store_path.read_bytes() == CORRUPT["torn"]
    assert not Path(f"{store_path}.corrupt").exists()


@pytest.mark.parametrize("command", [["token"], ["status"], ["logout"]])
def test_other_commands_name_the_login_that_replaces_it(
    cli: CLI, store_path: Path, command: list[str]
) -> None:
    """`token`, `status` and `logout` on a corrupt file say which login replaces it."""
    write(store_path, CORRUPT["torn"])
    result = cli(*command)
    assert result.code == 1
    assert "`freshtoken login --replace-corrupt` moves it aside and logs in again" in result.err
