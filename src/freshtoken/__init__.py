"""freshtoken keeps an HTTP client's OAuth2/JWT access token fresh.

Integrations live in their own modules so that their libraries stay optional:
``freshtoken.httpx``, ``freshtoken.requests``, ``freshtoken.aiohttp``.

One way to log in: ``manager.login(refresher.browser_login)`` (or ``device_login``,
``password_login``; ``await manager.alogin(refresher.abrowser_login)`` from async code). The
refresher knows the client, the manager keeps the tokens. The free functions that took the
client's settings again as keyword arguments (``freshtoken.browser_login(issuer, client_id=...)``
and the like) are deprecated until 0.2.0.
"""

from typing import TYPE_CHECKING

from ._core.clock import Clock, ManualClock, system_clock
from ._core.policy import Freshness, RefreshPolicy, RetryPolicy
from ._core.quirks import Quirks
from ._core.tokens import TokenSet
from ._deprecation import module_getattr as _module_getattr
from ._engine.manager import ManagerStats, TokenManager
from ._engine.observers import FlightObserver, FlightOutcome, FlightReport, RefreshObserver, Trigger
from ._logins.authorization import AuthorizationRequest
from ._logins.flows import DevicePrompt, ajson_login, json_login
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
    GenerationConflict,
    InsecureTransportError,
    LockTimeout,
    LoginFailed,
    RefreshFailed,
    ReplayError,
    SessionExpired,
    StoreError,
    TokenResponseError,
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
)

if TYPE_CHECKING:  # deprecated names (see _DEPRECATED): typed, documented, warned about at use
    from ._logins.flows import abrowser_login as abrowser_login
    from ._logins.flows import aclient_credentials_login as aclient_credentials_login
    from ._logins.flows import adevice_login as adevice_login
    from ._logins.flows import apassword_login as apassword_login
    from ._logins.flows import browser_login as browser_login
    from ._logins.flows import client_credentials_login as client_credentials_login
    from ._logins.flows import device_login as device_login
    from ._logins.flows import password_login as password_login
    from ._logins.flows import print_prompt as print_prompt
from .stores import (
    FileStore,
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
    "adiscover",
    "ajson_login",
    "averify_id_token",
    "discover",
    "for_resource",
    "json_login",
    "system_clock",
    "verify_id_token",
]

# name -> (module, attribute, what to use instead): importable until 0.2.0, with a warning.
_DEPRECATED = {
    "browser_login": (
        "freshtoken._logins.flows",
        "browser_login",
        "manager.login(refresher.browser_login)",
    ),
    "abrowser_login": (
        "freshtoken._logins.flows",
        "abrowser_login",
        "await manager.alogin(refresher.abrowser_login)",
    ),
    "device_login": (
        "freshtoken._logins.flows",
        "device_login",
        "manager.login(refresher.device_login)",
    ),
    "adevice_login": (
        "freshtoken._logins.flows",
        "adevice_login",
        "await manager.alogin(refresher.adevice_login)",
    ),
    "password_login": (
        "freshtoken._logins.flows",
        "password_login",
        "manager.login(refresher.password_login, username=..., password=...)",
    ),
    "apassword_login": (
        "freshtoken._logins.flows",
        "apassword_login",
        "await manager.alogin(refresher.apassword_login, username=..., password=...)",
    ),
    "client_credentials_login": (
        "freshtoken._logins.flows",
        "client_credentials_login",
        "TokenManager(ClientCredentials(...)), which acquires its tokens itself",
    ),
    "aclient_credentials_login": (
        "freshtoken._logins.flows",
        "aclient_credentials_login",
        "TokenManager(ClientCredentials(...)), which acquires its tokens itself",
    ),
    "print_prompt": (
        "freshtoken._logins.flows",
        "print_prompt",
        "device_login's default on_prompt (it is what it prints)",
    ),
}

__getattr__ = _module_getattr("freshtoken", _DEPRECATED)
