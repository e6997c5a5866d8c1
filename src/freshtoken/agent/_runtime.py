"""Running an agent process: its socket, its single-instance lock, systemd socket activation,
starting one in the background, and asking a running one for its status or to stop.

One agent per socket: the agent holds ``agent.lock`` (an ``flock``) for its whole life. A
second agent finds the lock taken and does not start; an agent that was killed released the
lock with its death, so the next one knows that the socket file it finds is stale, removes it
and binds afresh. Under systemd, systemd owns the socket (and re-activates the agent on the
next connection after it exits); the agent never removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from .._core.policy import read_json
from ._client import agent_client
from ._paths import ensure_private_directory, lock_path, log_path
from ._peer import PeerCheckUnavailable, supported
from ._server import Agent, AgentLimits

__all__ = [
    "AgentStartError",
    "agent_status",
    "lock_holder",
    "run_agent",
    "start_in_background",
    "stop_agent",
]

_SD_LISTEN_FDS_START = 3
_POLL = 0.02  # seconds between looks at a starting or stopping agent
_STOP_TIMEOUT = 70.0  # an agent waits up to 60 s for refreshes in flight before it exits


class AgentStartError(Exception):
    """The agent cannot start or be reached; the message is one line that says why."""


class _AlreadyRunning(Exception):
    def __init__(self, pid: int | None) -> None:
        self.pid = pid


# -- the single-instance lock ---------------------------------------------------------------


def _acquire_lock(path: Path) -> int:
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise _AlreadyRunning(pid) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def lock_holder(socket_file: Path) -> int | None:
    """The pid of the agent holding the lock beside ``socket_file`` (0 if it wrote none),
    or None when no agent holds it."""
    path = lock_path(socket_file)
    try:
        fd = _open_lock(path, create=False)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _open_lock(path: Path, *, create: bool = True) -> int:
    flags = os.O_RDWR | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    if create:
        flags |= os.O_CREAT
    try:
        return os.open(path, flags, 0o600)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise AgentStartError(f"cannot open the agent lock {path}: {error.strerror}") from None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# -- the listening socket -------------------------------------------------------------------


def _bind(path: Path) -> socket.socket:
    """Listen on ``path``; call with the lock held, so that a file found there is stale."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(status.st_mode):
            raise AgentStartError(f"{path} exists and is not a socket: remove it or pick another")
        os.unlink(path)  # left by an agent that was killed: its lock died with it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(os.fspath(path))
        os.chmod(path, 0o600)  # the directory is private already; this says so twice
        listener.listen(128)
    except OSError as error:
        listener.close()
        raise AgentStartError(f"cannot listen on {path}: {error.strerror}") from None
    return listener


def _systemd_listener() -> socket.socket:
    """The socket systemd passed (``LISTEN_FDS``), as ``sd_listen_fds(3)`` describes."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or not os.environ.get("LISTEN_FDS"):
        raise AgentStartError(
            "--systemd: no socket was passed to this process (LISTEN_PID/LISTEN_FDS); start "
            "the agent through its .socket unit, or without --systemd"
        )
    count = os.environ["LISTEN_FDS"]
    if count != "1":
        raise AgentStartError(f"--systemd: expected one socket, systemd passed {count!r}")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for the processes the agent may start
    try:
        listener = socket.socket(fileno=_SD_LISTEN_FDS_START)
    except OSError as error:
        raise AgentStartError(f"--systemd: fd 3 is not a socket ({error.strerror})") from None
    listener.set_inheritable(False)
    if listener.family != socket.AF_UNIX or listener.type != socket.SOCK_STREAM:
        raise AgentStartError("--systemd: the socket must be a unix stream socket (ListenStream=)")
    path = Path(os.fsdecode(listener.getsockname()))
    status, directory = os.stat(path), os.stat(path.parent)
    # Connecting takes write permission on the socket and search permission on its directory.
    open_socket = stat.S_IMODE(status.st_mode) & 0o022
    open_directory = directory.st_uid != os.geteuid() or stat.S_IMODE(directory.st_mode) & 0o011
    if status.st_uid != os.geteuid() or (open_socket and open_directory):
        raise AgentStartError(
            f"--systemd: other users could connect to {path}: set SocketMode=0600 in the "
            "socket unit, or listen in a private directory such as %t/freshtoken"
        )
    return listener


# -- running --------------------------------------------------------------------------------


def run_agent(
    socket_file: Path,
    *,
    store: str | None,
    systemd: bool,
    limits: AgentLimits,
    idle_exit: float | None,
    ready_fd: int | None,
) -> int:
    """Run an agent in this process until it is stopped; returns the exit status."""
    if not supported():
        raise AgentStartError(str(PeerCheckUnavailable(f"{sys.platform}: no peer credentials")))
    listener = _systemd_listener() if systemd else None
    if listener is not None:
        socket_file = Path(os.fsdecode(listener.getsockname()))
    else:
        ensure_private_directory(socket_file.parent, create=True)
    try:
        lock_fd = _acquire_lock(lock_path(socket_file))
    except _AlreadyRunning as running:
        if listener is not None:
            listener.close()
        if ready_fd is not None and _wait_until_serving(socket_file, running.pid):
            _report(ready_fd, f"running {running.pid or 0}")
            return 0
        raise AgentStartError(
            f"an agent (pid {running.pid or '?'}) already serves {socket_file}: "
            "`freshtoken agent stop` it first, or choose another --socket"
        ) from None
    inode: int | None = None
    try:
        if listener is None:
            listener = _bind(socket_file)
        inode = os.stat(socket_file).st_ino
        agent = Agent(store, limits=limits, idle_exit=idle_exit)

        def ready() -> None:
            print(f"freshtoken agent (pid {os.getpid()}) serving on {socket_file}", flush=True)
            if ready_fd is not None:
                _report(ready_fd, f"ready {os.getpid()}")

        asyncio.run(_serve(agent, listener, ready))
    finally:
        if listener is not None:
            listener.close()
        if not systemd and inode is not None:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(socket_file).st_ino == inode:
                    os.unlink(socket_file)
        os.close(lock_fd)  # the lock file stays: removing it would race with the next agent
    return 0


async def _serve(agent: Agent, listener: socket.socket, ready: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, agent.stop)
    await agent.serve(listener, ready=ready)


def _report(fd: int, message: str) -> None:
    with contextlib.suppress(OSError):  # the starter gave up waiting: nobody to tell
        os.write(fd, message.encode() + b"\n")
    os.close(fd)


def _wait_until_serving(socket_file: Path, pid: int | None, timeout: float = 15.0) -> bool:
    """Another agent holds the lock: wait (bounded) until it answers, or its lock is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent_status(socket_file, timeout=1.0) is not None:
            return True
        if lock_holder(socket_file) is None:
            return False  # it died while starting
        time.sleep(_POLL)
    return False


# -- talking to a running agent -------------------------------------------------------------


def _ask(
    socket_file: Path, method: str, path: str, *, expect: int, timeout: float
) -> dict[str, Any] | None:
    """The JSON answer of the agent on ``socket_file``; None when nothing listens there."""
    try:
        with agent_client(socket_file, timeout) as client:
            response = client.request(method, path)
    except httpx.ConnectError:
        return None
    except httpx.TransportError as error:
        raise AgentStartError(
            f"the agent on {socket_file} did not answer ({type(error).__name__})"
        ) from None
    if response.status_code != expect:
        raise AgentStartError(
            f"the agent on {socket_file} refused {method} {path} (HTTP {response.status_code})"
        )
    document, problem = read_json(response.content)
    if not isinstance(document, dict):
        raise AgentStartError(
            f"the agent on {socket_file} answered {method} {path}, but the answer "
            f"{problem or 'is not a JSON object'}"
        )
    return document


def agent_status(socket_file: Path, *, timeout: float = 5.0) -> dict[str, Any] | None:
    """The running agent's ``/v1/status``, or None when nothing listens there."""
    return _ask(socket_file, "GET", "/v1/status", expect=200, timeout=timeout)


def stop_agent(socket_file: Path, *, timeout: float = _STOP_TIMEOUT) -> int | None:
    """Stop the agent on ``socket_file`` and wait until it has exited; its pid, or None if
    none was running."""
    answer = _ask(socket_file, "POST", "/v1/stop", expect=202, timeout=5.0)
    if answer is None:
        return None
    pid = answer.get("pid")
    deadline = time.monotonic() + timeout
    while lock_holder(socket_file) is not None:  # released when the process is gone
        if time.monotonic() > deadline:
            raise AgentStartError(f"the agent (pid {pid}) is still finishing after {timeout:.0f} s")
        time.sleep(_POLL)
    return pid if isinstance(pid, int) else 0


def start_in_background(
    socket_file: Path, *, store: str | None, options: Sequence[str], timeout: float = 20.0
) -> tuple[int, bool]:
    """Start an agent detached from this process; (pid, True) once it serves, or
    (pid, False) when one was already serving."""
    ensure_private_directory(socket_file.parent, create=True)
    status = agent_status(socket_file, timeout=2.0)
    if status is not None:
        return int(status.get("pid", 0)), False
    read_end, write_end = os.pipe()
    log_fd = os.open(
        log_path(socket_file), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
    )
    command = [sys.executable, "-m", "freshtoken.cli", "agent", "--socket", os.fspath(socket_file)]
    if store is not None:
        command += ["--store", store]
    command += [*options, "--ready-fd", str(write_end)]
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            pass_fds=(write_end,),
            start_new_session=True,  # no terminal's SIGINT or SIGHUP reaches it
            cwd="/",
        )
    finally:
        os.close(write_end)
        os.close(log_fd)
    try:
        message = _read_message(read_end, timeout)
    finally:
        os.close(read_end)
    if message.startswith("ready"):
        return process.pid, True
    if message.startswith("running"):
        return int(message.split()[1]), False
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5.0)
    raise AgentStartError(f"the agent did not start: {_last_log_line(socket_file)}")


def _read_message(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            break
        chunk = os.read(fd, 64)
        if not chunk:
            break  # the agent exited without saying it was ready
        data += chunk
    return data.decode("ascii", "replace").strip()


def _last_log_line(socket_file: Path) -> str:
    try:
        lines = log_path(socket_file).read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1] if lines else "no reason given (see the agent's log)"
