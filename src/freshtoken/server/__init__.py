"""The reference OAuth2 server: token rotation, reuse detection and fault injection.

Needs the ``server`` extra (Starlette, uvicorn, cryptography). The configuration values import
without it; the app and the runner are loaded on first use, so that a missing extra fails
with the command that installs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._config import Client, DPoPConfig, FaultKind, Faults, ServerConfig, TokenFault, User

if TYPE_CHECKING:
    from ._app import create_app
    from ._browser import Browser, BrowserError
    from ._mcp import MCPResourceServer
    from ._runner import ReferenceServer
    from ._state import ServerState

__all__ = [
    "Browser",
    "BrowserError",
    "Client",
    "DPoPConfig",
    "FaultKind",
    "Faults",
    "MCPResourceServer",
    "ReferenceServer",
    "ServerConfig",
    "ServerState",
    "TokenFault",
    "User",
    "create_app",
]

_LAZY = {
    "Browser": "._browser",
    "BrowserError": "._browser",
    "create_app": "._app",
    "MCPResourceServer": "._mcp",
    "ReferenceServer": "._runner",
    "ServerState": "._state",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(_LAZY[name], __name__)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "?").partition(".")[0]
        raise ModuleNotFoundError(
            f"freshtoken.server needs {missing!r}: pip install 'freshtoken[server]'",
            name=exc.name,
        ) from exc
    return getattr(module, name)
