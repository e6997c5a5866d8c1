"""freshtoken.bff: a backend for frontend. The browser keeps an HttpOnly session cookie and
no token at all; the BFF keeps each session's tokens server-side, fresh (one refresh per
expiry across every worker), and forwards the SPA's API calls with them.

The BFF needs ``freshtoken[bff]`` (Starlette, uvicorn, cryptography); the FastAPI
dependency needs FastAPI too.
See docs/bff.md.
"""

from typing import TYPE_CHECKING

from .._deprecation import module_getattr as _module_getattr
from ..errors import LoginRequired
from ._app import BFF, derive_key
from ._memory_sessions import MemorySessionStore
from ._redis_sessions import RedisSessionStore
from ._sessions import Session, SessionStore

if TYPE_CHECKING:  # deprecated names (see _DEPRECATED): typed, warned about at use
    from ._serving import ServedApp as ServedApp
    from ._sessions import handle_of as handle_of
    from ._sessions import new_session_id as new_session_id

__all__ = [
    "BFF",
    "LoginRequired",
    "MemorySessionStore",
    "RedisSessionStore",
    "Session",
    "SessionStore",
    "derive_key",
]

# Internals the package used to export: importable from here until 0.2.0, with a warning.
_INTERNAL = "internal: import it from its module, or do without"
__getattr__ = _module_getattr(
    "freshtoken.bff",
    {
        "ServedApp": ("freshtoken.bff._serving", "ServedApp", _INTERNAL),
        "handle_of": ("freshtoken.bff._sessions", "handle_of", _INTERNAL),
        "new_session_id": ("freshtoken.bff._sessions", "new_session_id", _INTERNAL),
    },
)
