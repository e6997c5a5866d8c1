"""Where the agent listens, and the private directory around its socket.

The socket is ``$FRESHTOKEN_AGENT_SOCKET`` when set (clients and agent agree through it, as
with ``SSH_AUTH_SOCK``), else ``$XDG_RUNTIME_DIR/freshtoken/agent.sock``. Without
``XDG_RUNTIME_DIR`` (no systemd login session: containers, cron, macOS) it is
``${TMPDIR:-/tmp}/freshtoken-<uid>/agent.sock``, as tmux does: a local file system (a home
directory on NFS may not carry sockets), a path well under the 104-108 bytes a socket address
holds, and a per-user name. Anyone may create that name first in a shared /tmp, so the
agent starts only in a real directory that this user owns and nobody else may enter.

Clients ([`AgentRefresher`][freshtoken.AgentRefresher], ``freshtoken agent status | stop``) check
before they connect, whatever the path, and refuse with [`AgentPathError`][]:

* the socket's directory (symlinks in the path resolved) must belong to this user or to root
  and must not be writable by others, unless it is sticky as /tmp is: nobody else may put a
  socket there or swap ours for theirs;
* the socket must be a socket that this user owns;
* once connected, the kernel must say that the process serving it runs as this user
  ([`check_peer()`][check_peer]): this closes the moment between the checks and ``connect()``, and
  holds for sockets handed over by systemd or loosened by hand.

A directory or socket that does not exist passes: the connection then fails as for an agent
that is not running (and ``AgentRefresher`` may start one, in a directory made private).

Beside the socket: ``agent.lock`` (held by the running agent for its whole life, so a second
agent cannot start and a killed agent's lock dies with it) and ``agent.log`` (the output of
an agent started in the background).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from ._peer import PeerCheckUnavailable, peer_uid

__all__ = [
    "ENV_SOCKET",
    "AgentPathError",
    "check_peer",
    "check_socket",
    "default_socket_path",
    "ensure_private_directory",
    "lock_path",
    "log_path",
    "socket_path",
]

ENV_SOCKET = "FRESHTOKEN_AGENT_SOCKET"
SOCKET_NAME = "agent.sock"
# sockaddr_un.sun_path is 108 bytes on Linux and 104 on macOS and the BSDs, NUL included.
MAX_SOCKET_PATH = 103


class AgentPathError(Exception):
    """The socket path or its directory cannot be used safely; the message says why."""


def default_socket_path() -> Path:
    """The socket path when none is configured (see the module docstring)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "freshtoken" / SOCKET_NAME
    return Path(tempfile.gettempdir()) / f"freshtoken-{os.geteuid()}" / SOCKET_NAME


def socket_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``$FRESHTOKEN_AGENT_SOCKET``, else
    [`default_socket_path()`][default_socket_path]."""
    chosen = explicit if explicit is not None else os.environ.get(ENV_SOCKET) or None
    path = Path(chosen).expanduser() if chosen is not None else default_socket_path()
    path = Path(os.path.abspath(path))
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise AgentPathError(
            f"the agent socket path {path} is longer than a unix socket address may be "
            f"({MAX_SOCKET_PATH} bytes): choose a shorter one with --socket or ${ENV_SOCKET}"
        )
    return path


def lock_path(socket: Path) -> Path:
    return socket.parent / "agent.lock"


def log_path(socket: Path) -> Path:
    return socket.parent / "agent.log"


def ensure_private_directory(directory: Path, *, create: bool) -> None:
    """Make sure ``directory`` is ours alone: created 0700 if missing (and ``create``),
    refused if it is a symlink, another user's, or open to group or others."""
    try:
        status = os.lstat(directory)
    except FileNotFoundError:
        if not create:
            raise AgentPathError(f"the agent directory {directory} does not exist") from None
        _make_directory(directory)
        status = os.lstat(directory)
    except OSError as error:
        raise AgentPathError(f"cannot inspect {directory}: {error.strerror}") from None
    if not stat.S_ISDIR(status.st_mode):
        raise AgentPathError(f"{directory} is not a directory (a symlink or a file is refused)")
    if status.st_uid != os.geteuid():
        raise AgentPathError(
            f"the agent directory {directory} belongs to uid {status.st_uid}, not to this "
            f"user ({os.geteuid()}): remove it, or choose another socket path"
        )
    if stat.S_IMODE(status.st_mode) & 0o077:
        raise AgentPathError(
            f"the agent directory {directory} is open to other users "
            f"(mode {stat.S_IMODE(status.st_mode):04o}); fix it with: chmod 700 {directory}"
        )


def _make_directory(directory: Path) -> None:
    parent = directory.parent
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass  # another agent or client made it meanwhile; it is checked next
    except OSError as error:
        raise AgentPathError(f"cannot create {directory}: {error.strerror}") from None
    else:
        os.chmod(directory, 0o700)  # mkdir's mode passes through the umask


def check_socket(path: Path) -> Path:
    """Before connecting: the real path of the agent socket ``path``, unless another user
    could have put it there (see the module docstring); AgentPathError says why."""
    real = Path(os.path.realpath(path))
    uid = os.geteuid()
    try:
        directory = os.stat(real.parent)
    except FileNotFoundError:
        return real
    except OSError as error:
        raise AgentPathError(f"cannot inspect {real.parent}: {error.strerror}") from None
    if directory.st_uid not in (uid, 0):
        raise AgentPathError(
            f"the agent directory {real.parent} belongs to uid {directory.st_uid}, not to this "
            f"user ({uid}): its socket is not your agent's; remove the directory, or choose "
            f"another socket path (${ENV_SOCKET})"
        )
    mode = stat.S_IMODE(directory.st_mode)
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise AgentPathError(
            f"other users may replace the agent socket: {real.parent} is writable by them "
            f"(mode {mode:04o}); fix it with: chmod go-w {real.parent}"
        )
    try:
        status = os.lstat(real)
    except FileNotFoundError:
        return real
    except OSError as error:
        raise AgentPathError(f"cannot inspect {real}: {error.strerror}") from None
    if not stat.S_ISSOCK(status.st_mode):
        raise AgentPathError(f"{real} is not a socket, so no agent listens there")
    if status.st_uid != uid:
        raise AgentPathError(
            f"the agent socket {real} belongs to uid {status.st_uid}, not to this user "
            f"({uid}): it is not your agent's; remove it, or choose another socket path"
        )
    return real


def check_peer(sock: Any, path: Path) -> None:
    """Refuse a connected socket whose server does not run as this user (the kernel's word:
    ``SO_PEERCRED``, ``LOCAL_PEERCRED``), as the agent refuses clients of other users."""
    try:
        uid = peer_uid(sock)
    except (PeerCheckUnavailable, OSError) as error:
        raise AgentPathError(
            f"cannot tell who serves the agent socket {path} ({error}), so it is not trusted"
        ) from None
    if uid != os.geteuid():
        raise AgentPathError(
            f"the process serving the agent socket {path} runs as uid {uid}, not as this user "
            f"({os.geteuid()}): it is not your agent; stop it, or choose another socket path"
        )
