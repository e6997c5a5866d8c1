"""What the agent's clients refuse before they take a token: a socket directory another user
planted (the default path under a shared /tmp), a socket another user owns, a directory others
may write to, and an agent that another user runs behind a socket that looks right.

"Another user" is real: the planted agents run in a forked child that setuid()s to nobody,
so the kernel reports that uid (SO_PEERCRED) exactly as it would for an attacker's process.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_fixture import FakeAgent, RunningAgent, http_answer

from freshtoken import AgentRefresher, RefreshFailed, RetryPolicy, TokenManager
from freshtoken.agent._paths import AgentPathError, check_socket

NOBODY = 65534
PROBE = b"probe"
PLANTED_TOKEN = "planted-token-of-another-user"
PLANTED_ANSWER = json.dumps(
    {"profile": "default", "access_token": PLANTED_TOKEN, "token_type": "Bearer"}
).encode()
PLANTED_RESPONSE = http_answer(200, PLANTED_ANSWER)

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root can give a directory or a process to another uid"
)


class PlantedAgent:
    """A process running as uid nobody that answers every connection on ``path`` with a token
    of its own, and tells the test whether anyone sent it a byte.

    ``listener``: a socket the test bound already (its file is then the test's); the child
    listens on it after setuid, so the kernel records nobody as the server. Without it the
    child binds ``path`` itself (the socket file is nobody's)."""

    def __init__(self, path: Path, listener: socket.socket | None = None) -> None:
        self.path = path
        read_end, write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child, reporting through the pipe
            code = 0
            try:
                os.close(read_end)
                self._serve(listener, write_end)
            except BaseException:  # noqa: BLE001 - the child must never return into pytest
                code = 1
            os._exit(code)
        os.close(write_end)
        self._events = os.fdopen(read_end, "rb", buffering=0)
        if listener is not None:
            listener.close()  # the child's now
        assert self._read(10.0) == b"L", "the planted agent did not start"

    def _serve(self, listener: socket.socket | None, report: int) -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        if listener is None:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(self.path))
            os.chmod(self.path, 0o777)  # an attacker's socket lets everybody in
        listener.listen(8)
        listener.settimeout(60)
        os.write(report, b"L")
        while True:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                os.write(report, b"C")
                with contextlib.suppress(OSError):
                    data = conn.recv(65536)
                    if data == PROBE:
                        os.write(report, b"P")
                    elif data:
                        os.write(report, b"R")
                        conn.sendall(PLANTED_RESPONSE)
            os.write(report, b"D")

    def _read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self._events], [], [], timeout)
        return self._events.read(1) if ready else b""

    def events(self) -> bytes:
        """What the planted agent saw before now: C for a connection, R for a request in it,
        D when done with it. A probe connection made here comes after every earlier one (the
        child takes them in turn), so when its report arrives, theirs have all arrived."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(self.path))
            probe.sendall(PROBE)
        seen = b""
        while not seen.endswith(b"CPD"):
            chunk = self._read(10.0)
            assert chunk, f"the planted agent did not answer the probe (saw {seen!r})"
            seen += chunk
        return seen.removesuffix(b"CPD")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        self._events.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory of this user's, 0700, with a path short enough for socket addresses."""
    directory = Path(tempfile.mkdtemp(prefix="ft-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def manager(refresher: AgentRefresher) -> TokenManager:
    return TokenManager(refresher, retry=RetryPolicy(attempts=1))


def refused(refresher: AgentRefresher) -> RefreshFailed:
    with pytest.raises(RefreshFailed) as failure:
        manager(refresher).get_tokens()
    assert PLANTED_TOKEN not in str(failure.value)
    return failure.value


@needs_root
@pytest.mark.parametrize("autostart", [False, True], ids=["no-autostart", "autostart"])
def test_a_default_socket_directory_planted_by_another_user_is_refused(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch, autostart: bool
) -> None:
    """No XDG_RUNTIME_DIR: the default socket is $TMPDIR/freshtoken-<uid>/agent.sock. Another
    user made that directory first and serves a socket in it: the client refuses before it
    connects (nothing reaches the planted agent, not even the profile's name), and does not
    start an agent of its own there either."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("FRESHTOKEN_AGENT_SOCKET", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(short_dir))
    os.chmod(short_dir, 0o1777)  # a shared /tmp
    planted_dir = short_dir / f"freshtoken-{os.geteuid()}"
    planted_dir.mkdir()
    os.chown(planted_dir, NOBODY, NOBODY)
    os.chmod(planted_dir, 0o755)
    refresher = AgentRefresher(autostart=autostart)
    assert refresher.socket_path == planted_dir / "agent.sock"
    planted = PlantedAgent(refresher.socket_path)
    try:
        error = refused(refresher)
        assert error.error == "agent_untrusted"
        assert f"belongs to uid {NOBODY}" in str(error)
        assert planted.events() == b""  # refused before connect()
    finally:
        planted.stop()
    assert sorted(p.name for p in planted_dir.iterdir()) == ["agent.sock"]  # no agent started


@needs_root
def test_an_agent_of_another_uid_behind_a_socket_that_looks_right_is_refused(
    short_dir: Path,
) -> None:
    """The directory and the socket file are ours (0700, 0600), but the process that listens
    runs as another uid: the kernel says so on the connected socket, and the client closes
    it before sending a byte."""
    path = short_dir / "agent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    planted = PlantedAgent(path, listener)
    try:
        assert os.stat(path).st_uid == os.geteuid()
        error = refused(AgentRefresher(socket=path, autostart=False))
        assert error.error == "agent_untrusted"
        assert f"runs as uid {NOBODY}" in str(error)
        assert planted.events() == b"CD"  # connected, then closed: no request was sent
    finally:
        planted.stop()


@needs_root
@pytest.mark.anyio
async def test_the_async_side_checks_the_same(short_dir: Path) -> None:
    """arefresh on asyncio and trio: the same peer check, before the request."""
    path = short_dir / "agent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    planted = PlantedAgent(path, listener)
    try:
        with pytest.raises(RefreshFailed) as failure:
            await manager(AgentRefresher(socket=path, autostart=False)).aget_tokens()
        assert failure.value.error == "agent_untrusted"
        assert f"runs as uid {NOBODY}" in str(failure.value)
        assert planted.events() == b"CD"
    finally:
        planted.stop()


@needs_root
def test_a_socket_file_another_user_owns_is_refused(short_dir: Path) -> None:
    """A socket in our directory that belongs to another uid: refused before connecting."""
    path = short_dir / "agent.sock"
    own = FakeAgent(path, PLANTED_RESPONSE)
    try:
        assert manager(AgentRefresher(socket=path, autostart=False)).get_tokens()
        os.chown(path, NOBODY, NOBODY)
        error = refused(AgentRefresher(socket=path, autostart=False))
        assert f"socket {path} belongs to uid {NOBODY}" in str(error)
        assert own.connections == 1  # the first call only
    finally:
        own.close()


@pytest.mark.parametrize(
    ("mode", "allowed"),
    [(0o700, True), (0o755, True), (0o1777, True), (0o770, False), (0o777, False)],
)
def test_a_directory_others_may_write_to_is_refused_unless_sticky(
    short_dir: Path, mode: int, allowed: bool
) -> None:
    """Others who can write the directory can swap the socket (unless it is sticky, as /tmp
    is): 0770 and 0777 are refused, 0700, 0755 and 1777 pass."""
    path = short_dir / "agent.sock"
    own = FakeAgent(path, PLANTED_RESPONSE)
    try:
        os.chmod(short_dir, mode)
        if allowed:
            assert check_socket(path) == path
        else:
            with pytest.raises(AgentPathError, match="other users may replace"):
                check_socket(path)
    finally:
        own.close()


def test_what_is_not_a_socket_is_refused_and_what_is_missing_is_no_agent(
    short_dir: Path,
) -> None:
    """A regular file where the socket should be: refused; no directory or no socket yet:
    passes the checks (the agent is then simply not running)."""
    (short_dir / "agent.sock").write_text("")
    with pytest.raises(AgentPathError, match="not a socket"):
        check_socket(short_dir / "agent.sock")
    assert check_socket(short_dir / "none.sock") == short_dir / "none.sock"
    assert check_socket(short_dir / "no-dir" / "agent.sock") == short_dir / "no-dir" / "agent.sock"


def test_a_symlink_to_our_agent_is_followed_and_checked_where_it_leads(
    running_agent: RunningAgent, short_dir: Path
) -> None:
    """A link to the real socket (as people do with SSH_AUTH_SOCK): the checks apply to the
    socket it names, and the agent's token comes through."""
    link = short_dir / "link.sock"
    link.symlink_to(running_agent.socket_path)
    assert check_socket(link) == running_agent.socket_path.resolve()
    tokens = manager(AgentRefresher(socket=link, autostart=False)).get_tokens()
    assert tokens.access_token


@needs_root
def test_agent_status_refuses_in_one_line(short_dir: Path) -> None:
    """`freshtoken agent status` on a planted directory: exit 1, one line saying whose it is."""
    os.chmod(short_dir, 0o755)
    planted_dir = short_dir / "d"
    planted_dir.mkdir()
    os.chown(planted_dir, NOBODY, NOBODY)
    planted = PlantedAgent(planted_dir / "agent.sock")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "freshtoken.cli", "agent", "status", "--socket",
             str(planted_dir / "agent.sock")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 1
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert f"belongs to uid {NOBODY}" in result.stderr
        assert planted.events() == b""
    finally:
        planted.stop()
