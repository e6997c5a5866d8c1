"""The CLI's prompts as a person meets them: ``freshtoken`` on a pseudo-terminal of its own
(its controlling terminal, as in a shell), keys typed at it, Ctrl-C and Ctrl-D sent as the
terminal sends them (the line discipline turns ^C into SIGINT for the foreground process).

What is checked is what the screen shows: a message after an interrupted prompt starts on a
line of its own, not after the prompt; and ``login`` onto a corrupt token file asks before
replacing it.
"""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from pathlib import Path

import pytest

from freshtoken.server import ReferenceServer
from freshtoken.stores import FileStore

CTRL_C = b"\x03"
CTRL_D = b"\x04"
CORRUPT = b'{"format": "freshtoken/1", "serial": 1, "profi'  # torn mid-write


class Terminal:
    """``freshtoken ARGV`` on a new pseudo-terminal; ``screen`` is all it has shown."""

    def __init__(self, argv: list[str]) -> None:
        env = dict(os.environ)  # as the store_path fixture left it
        pid, fd = pty.fork()
        if pid == 0:  # the child: nothing but exec (the parent has threads)
            try:
                os.execve(sys.executable, [sys.executable, "-m", "freshtoken.cli", *argv], env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.output = b""

    @property
    def screen(self) -> str:
        return self.output.decode(errors="replace").replace("\r\n", "\n")

    def _read(self, deadline: float) -> bool:
        """Read what is there (waiting until ``deadline``); False at the end of output."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the child has closed the terminal
            return False
        self.output += chunk
        return bool(chunk)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            assert time.monotonic() < deadline, f"never showed {text!r}: {self.screen!r}"
            assert self._read(deadline), f"ended before showing {text!r}: {self.screen!r}"

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def finish(self, timeout: float = 30) -> int:
        """Read to the end and return the exit status."""
        deadline = time.monotonic() + timeout
        while self._read(deadline):
            assert time.monotonic() < deadline, f"still running: {self.screen!r}"
        os.close(self.fd)
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


@pytest.fixture
def password_login(oauth_server: ReferenceServer, store_path: Path) -> list[str]:
    """A password login that asks for the password at the terminal."""
    return [
        "login", "--token-url", oauth_server.token_url, "--client-id", "demo-public",
        "--username", "demo",
    ]  # fmt: skip


def lines(screen: str) -> list[str]:
    return screen.split("\n")


def test_ctrl_c_at_the_password_prompt_ends_its_line(password_login: list[str]) -> None:
    """^C at "Password for demo: ": the message starts on the next line; exit 130."""
    terminal = Terminal(password_login)
    terminal.wait_for("Password for demo: ")
    terminal.type(CTRL_C)
    assert terminal.finish() == 130
    assert "freshtoken: login failed: cancelled" in lines(terminal.screen), terminal.screen
    assert "Traceback" not in terminal.screen


def test_ctrl_d_at_the_password_prompt_ends_its_line(password_login: list[str]) -> None:
    """^D (end of input) at the password prompt: no password, said on a line of its own."""
    terminal = Terminal(password_login)
    terminal.wait_for("Password for demo: ")
    terminal.type(CTRL_D)
    assert terminal.finish() == 1
    assert "freshtoken: login failed: no password given" in lines(terminal.screen)
    assert "Traceback" not in terminal.screen


def test_a_password_typed_at_the_prompt_logs_in(
    password_login: list[str], store_path: Path
) -> None:
    """The prompt itself works: the password is not echoed, the profile is saved."""
    terminal = Terminal(password_login)
    terminal.wait_for("Password for demo: ")
    terminal.type(b"demo\n")
    assert terminal.finish() == 0, terminal.screen
    assert "logged in as demo" in terminal.screen
    assert "demo\n" not in terminal.screen.split("Password for demo: ", 1)[1][:6]
    assert FileStore(store_path).load_profile() is not None


@pytest.mark.parametrize("answer", [b"y\n", b"yes\n"])
def test_login_onto_a_corrupt_file_asks_and_replaces_it(
    password_login: list[str], store_path: Path, answer: bytes
) -> None:
    """At a terminal, `login` onto a torn token file asks; yes moves it aside (kept) and the
    login goes on into a new file."""
    store_path.parent.mkdir(parents=True)
    store_path.write_bytes(CORRUPT)
    store_path.chmod(0o600)
    terminal = Terminal(password_login)
    terminal.wait_for(f"Move it to {store_path}.corrupt and start a new one? [y/N] ")
    terminal.type(answer)
    terminal.wait_for("Password for demo: ")
    terminal.type(b"demo\n")
    assert terminal.finish() == 0, terminal.screen
    assert f"moved the corrupt token file to {store_path}.corrupt" in lines(terminal.screen)
    assert Path(f"{store_path}.corrupt").read_bytes() == CORRUPT
    assert FileStore(store_path).load_profile() is not None


@pytest.mark.parametrize("key", [b"\n", b"n\n", CTRL_D, CTRL_C])
def test_login_onto_a_corrupt_file_without_a_yes_leaves_it(
    password_login: list[str], store_path: Path, key: bytes
) -> None:
    """No, Enter (the default), ^D or ^C at the question: the file stays as it was and the
    line (on a line of its own) says how to replace it, or that the login was cancelled."""
    store_path.parent.mkdir(parents=True)
    store_path.write_bytes(CORRUPT)
    store_path.chmod(0o600)
    terminal = Terminal(password_login)
    terminal.wait_for("[y/N] ")
    terminal.type(key)
    code = terminal.finish()
    last = lines(terminal.screen.rstrip("\n"))[-1]
    if key == CTRL_C:
        assert code == 130
        assert last == "freshtoken: login failed: cancelled"
    else:
        assert code == 1
        assert last.startswith(f"freshtoken: login failed: token store {store_path} is not valid")
        assert last.endswith(
            f": pass --replace-corrupt to move it to {store_path}.corrupt and start a new one"
        )
    assert store_path.read_bytes() == CORRUPT
    assert not Path(f"{store_path}.corrupt").exists()
