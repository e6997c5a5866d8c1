"""The local token agent: ``freshtoken agent``, and [`AgentRefresher`][] to draw from it.

The agent holds the refresh tokens of a token file's profiles and serves access tokens,
only, to processes of the same user over a unix socket (HTTP/1.1):

    GET  /v1/token?profile=NAME[&stale=TOKEN_ID][&wait=SECONDS]
    GET  /v1/status        what it serves, its counters (no secret)
    GET  /v1/health
    POST /v1/stop

Any program that speaks HTTP over a unix socket can use it (``curl --unix-socket``, Go's
``net.Dial("unix", ...)``, Node's ``socketPath``); Python programs hand an
[`AgentRefresher`][] to a [`TokenManager`][freshtoken.TokenManager]. ``_protocol`` describes the
answers, ``_paths`` where the socket lives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._client import AgentRefresher
from ._paths import ENV_SOCKET, default_socket_path, socket_path

if TYPE_CHECKING:
    from ._server import Agent, AgentLimits

__all__ = [
    "ENV_SOCKET",
    "Agent",
    "AgentLimits",
    "AgentRefresher",
    "default_socket_path",
    "socket_path",
]


def __getattr__(name: str) -> Any:
    # The server side (h11, the profile machinery) loads only in a process that runs an agent.
    if name in ("Agent", "AgentLimits"):
        from . import _server

        return getattr(_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
