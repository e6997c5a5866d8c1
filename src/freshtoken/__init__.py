"""freshtoken keeps an HTTP client's OAuth2/JWT access token fresh.

Integrations live in their own modules so that their libraries stay optional:
``freshtoken.httpx``, ``freshtoken.requests``, ``freshtoken.aiohttp``.
"""

from ._core.clock import Clock, ManualClock, system_clock
from ._core.policy import Freshness, RefreshPolicy, RetryPolicy
from ._core.quirks import Quirks
from ._core.tokens import TokenResponseError, TokenSet
from ._engine.manager import ManagerStats, TokenManager
from ._engine.observers import FlightObserver, FlightOutcome, FlightReport, RefreshObserver, Trigger
from ._logins.authorization import AuthorizationRequest
from ._logins.flows import (
    DevicePrompt,
    abrowser_login,
    aclient_credentials_login,
    adevice_login,
    ajson_login,
    apassword_login,
    browser_login,
    device_login,
    print_prompt,
)
from ._oauth.client_auth import ClientAuth
from ._oauth.discovery import ServerMetadata, adiscover, discover
from ._oauth.dpop import DPoPKey
from ._oauth.id_tokens import averify_id_token, verify_id_token
from ._resource_logins import for_resource
from ._version import __version__ as __version__
from .agent import AgentRefresher
from .errors import (
    AuthError,
    DPoPError,
    InsecureTransportError,
    LockTimeout,
    LoginFailed,
    RefreshFailed,
    ReplayError,
    SessionExpired,
    StoreError,
)
from .providers import Provider
from .refreshers import (
    ClientCredentials,
    FunctionRefresher,
    JSONRefresher,
    JWTBearer,
    OAuth2Refresher,
    Refresher,
    TokenExchange,
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

__all__ = [
    "AgentRefresher",
    "AuthError",
    "AuthorizationRequest",
    "ClientAuth",
    "ClientCredentials",
    "Clock",
    "DPoPError",
    "DPoPKey",
    "DevicePrompt",
    "FileStore",
    "FlightObserver",
    "FlightOutcome",
    "FlightReport",
    "Freshness",
    "FunctionRefresher",
    "GenerationConflict",
    "InsecureTransportError",
    "JSONRefresher",
    "JWTBearer",
    "KeyringStore",
    "LockTimeout",
    "LoginFailed",
    "ManagerStats",
    "ManualClock",
    "MemoryStore",
    "OAuth2Refresher",
    "RefreshFailed",
    "RefreshObserver",
    "RedisStore",
    "RefreshPolicy",
    "Refresher",
    "ReplayError",
    "RetryPolicy",
    "Provider",
    "Quirks",
    "ServerMetadata",
    "SessionExpired",
    "StoreError",
    "StoredTokens",
    "TokenExchange",
    "TokenManager",
    "TokenResponseError",
    "TokenSet",
    "TokenStore",
    "Trigger",
    "abrowser_login",
    "aclient_credentials_login",
    "adevice_login",
    "adiscover",
    "ajson_login",
    "apassword_login",
    "averify_id_token",
    "browser_login",
    "client_credentials_login",
    "device_login",
    "discover",
    "for_resource",
    "json_login",
    "password_login",
    "print_prompt",
    "system_clock",
    "verify_id_token",
]
