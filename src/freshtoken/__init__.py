"""freshtoken keeps an HTTP client's OAuth2/JWT access token fresh.

Integrations live in their own modules so that their libraries stay optional:
``freshtoken.httpx``, ``freshtoken.requests``, ``freshtoken.aiohttp``.
"""

from ._clock import Clock, ManualClock, system_clock
from ._manager import ManagerStats, TokenManager
from ._policy import Freshness, RefreshPolicy, RetryPolicy
from ._tokens import TokenResponseError, TokenSet
from .agent import AgentRefresher
from .errors import (
    AuthError,
    InsecureTransportError,
    LockTimeout,
    RefreshFailed,
    ReplayError,
    SessionExpired,
    StoreError,
)
from .refreshers import (
    ClientCredentials,
    FunctionRefresher,
    JSONRefresher,
    OAuth2Refresher,
    Refresher,
    client_credentials_login,
    json_login,
    password_login,
)
from .stores import (
    FileStore,
    GenerationConflict,
    KeyringStore,
    MemoryStore,
    RedisStore,
    StoredTokens,
    TokenStore,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "AgentRefresher",
    "AuthError",
    "ClientCredentials",
    "Clock",
    "FileStore",
    "Freshness",
    "FunctionRefresher",
    "GenerationConflict",
    "InsecureTransportError",
    "JSONRefresher",
    "KeyringStore",
    "LockTimeout",
    "ManagerStats",
    "ManualClock",
    "MemoryStore",
    "OAuth2Refresher",
    "RefreshFailed",
    "RedisStore",
    "RefreshPolicy",
    "Refresher",
    "ReplayError",
    "RetryPolicy",
    "SessionExpired",
    "StoreError",
    "StoredTokens",
    "TokenManager",
    "TokenResponseError",
    "TokenSet",
    "TokenStore",
    "client_credentials_login",
    "json_login",
    "password_login",
    "system_clock",
]
