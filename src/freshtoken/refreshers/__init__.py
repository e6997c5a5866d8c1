"""Refreshers turn the current tokens into new ones.

* [`OAuth2Refresher`][]: the ``refresh_token`` grant of RFC 6749 section 6.
* [`JSONRefresher`][]: in-house ``POST /auth/refresh`` APIs that take and give JSON.
* [`ClientCredentials`][]: re-acquires with the ``client_credentials`` grant (no refresh
  token exists; a new access token is simply asked for).
* [`FunctionRefresher`][]: any function of yours, plain or async.

The HTTP refreshers build an ``httpx.Request`` and read an ``httpx.Response`` without doing
I/O themselves (``build_request``, ``parse_response``); ``refresh`` and ``arefresh`` only send.
Token endpoint calls go through their own client with no auth attached, so they never pass
through [`freshtoken.httpx.TokenAuth`][] (no recursion) and carry nothing from the request
that triggered them. Redirects are not followed: credentials stay with the configured URL.

The grant refreshers authenticate as the client ([`ClientAuth`][]: secret, private key or
none); [`OAuth2Refresher.from_issuer()`][OAuth2Refresher.from_issuer] finds the token endpoint and
the method through discovery, and such a refresher logs in with the same settings
(``browser_login``, ``device_login``, ``password_login``). The free first-token functions
(``password_login``, ``client_credentials_login``, ``json_login``) are still importable from
here until 0.2.0, with a DeprecationWarning, as from ``freshtoken``.

A grant refresher describes itself ([`OAuth2Refresher.describe()`][OAuth2Refresher.describe]): its
settings, none of them secret, and apart from them its client secret or private key, a
[`RefresherSettings`][] that [`rebuild()`][RefresherSettings.rebuild] turns back into the same
refresher. A [`FileStore`][freshtoken.FileStore] keeps that description with a profile, so that a
profile saved from Python can be refreshed by ``freshtoken token`` and the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._deprecation import module_getattr as _module_getattr
from .._engine.refresher import Refresher
from .._oauth.client_auth import ClientAuth, ClientAuthMethod
from ._function import FunctionRefresher
from ._grants import JWT_BEARER_GRANT as JWT_BEARER_GRANT
from ._grants import JWT_BEARER_LIFETIME as JWT_BEARER_LIFETIME
from ._grants import TOKEN_EXCHANGE_GRANT as TOKEN_EXCHANGE_GRANT
from ._grants import JWTBearer, TokenExchange, token_type
from ._grants import TokenSource as TokenSource
from ._http import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._http import HTTPRefresher
from ._http import exchange as exchange
from ._json import JSONRefresher
from ._oauth2 import ClientCredentials, OAuth2Refresher, RefresherSettings
from ._oauth2 import RefresherKind as RefresherKind

if TYPE_CHECKING:  # deprecated names (see _DEPRECATED): typed, warned about at use
    from .._logins.flows import client_credentials_login as client_credentials_login
    from .._logins.flows import json_login as json_login
    from .._logins.flows import password_login as password_login

__all__ = [
    "ClientAuth",
    "ClientAuthMethod",
    "ClientCredentials",
    "FunctionRefresher",
    "HTTPRefresher",
    "JSONRefresher",
    "JWTBearer",
    "OAuth2Refresher",
    "Refresher",
    "RefresherSettings",
    "TokenExchange",
    "token_type",
]

# name -> (module, attribute, what to use instead): importable until 0.2.0, with a warning.
_DEPRECATED = {
    "password_login": (
        "freshtoken._logins.flows",
        "password_login",
        "manager.login(refresher.password_login, username=..., password=...)",
    ),
    "client_credentials_login": (
        "freshtoken._logins.flows",
        "client_credentials_login",
        "TokenManager(ClientCredentials(...)), which acquires its tokens itself",
    ),
    "json_login": ("freshtoken._logins.flows", "json_login", "freshtoken.json_login"),
}

__getattr__ = _module_getattr("freshtoken.refreshers", _DEPRECATED)
