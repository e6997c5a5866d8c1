"""Who is at the other end of a unix socket: the kernel says, the client cannot lie.

Linux answers ``SO_PEERCRED`` (pid, uid, gid, fixed at ``connect()``); macOS and the BSDs
answer ``LOCAL_PEERCRED`` (an ``xucred``). The socket's mode and its private directory already
keep other users out; this check still holds when those were loosened by hand, or when a
socket is handed over by systemd with a mode the user chose.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Any

__all__ = ["PeerCheckUnavailable", "peer_uid", "supported"]

_LINUX_UCRED = struct.Struct("=iII")  # pid_t pid; uid_t uid; gid_t gid
# struct xucred: u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]
_XUCRED_SIZE = 76
_XUCRED_HEAD = struct.Struct("=II")
_SOL_LOCAL = 0
_LOCAL_PEERCRED = 1


class PeerCheckUnavailable(Exception):
    """This platform cannot tell who connected; the agent does not run without it."""


def supported() -> bool:
    return hasattr(socket, "SO_PEERCRED") or sys.platform == "darwin" or "bsd" in sys.platform


def peer_uid(sock: Any) -> int:
    """The effective uid of the process that connected ``sock`` (a connected unix socket,
    or asyncio's wrapper of one)."""
    if hasattr(socket, "SO_PEERCRED"):
        data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _LINUX_UCRED.size)
        _, uid, _ = _LINUX_UCRED.unpack(data)
        return int(uid)
    if supported():
        data = sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERCRED, _XUCRED_SIZE)
        version, uid = _XUCRED_HEAD.unpack_from(data)
        if version != 0:  # XUCRED_VERSION
            raise PeerCheckUnavailable(f"unknown xucred version {version}")
        return int(uid)
    raise PeerCheckUnavailable(
        f"{sys.platform} offers neither SO_PEERCRED nor LOCAL_PEERCRED: the agent cannot "
        "check who connects, so it does not run here"
    )
