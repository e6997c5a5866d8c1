"""freshtoken.bff: a backend for frontend. The browser keeps an HttpOnly session cookie and
no token at all; the BFF keeps each session's tokens server-side, fresh (one refresh per
expiry across every worker), and forwards the SPA's API calls with them.

The BFF needs ``freshtoken[bff]`` (Starlette, uvicorn, cryptography); the FastAPI
dependency needs FastAPI too.
See docs/bff.md.
"""

from ._app import BFF, LoginRequired, derive_key
from ._serving import ServedApp
from ._sessions import (
    MemorySessionStore,
    RedisSessionStore,
    Session,
    SessionStore,
    handle_of,
    new_session_id,
)

__all__ = [
    "BFF",
    "LoginRequired",
    "MemorySessionStore",
    "RedisSessionStore",
    "ServedApp",
    "Session",
    "SessionStore",
    "derive_key",
    "handle_of",
    "new_session_id",
]
