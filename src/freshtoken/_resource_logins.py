"""Log in to whatever protects a URL: [`for_resource()`][for_resource].

The API at the URL says where to log in (RFC 9728 protected resource metadata, from its 401's
``resource_metadata`` or the well-known URL); its authorization server is discovered (RFC
8414); a client is registered there (RFC 7591) unless one is given (a client id, or a client
ID metadata document URL); the user logs in in a browser (authorization code, PKCE, loopback
redirect); and the tokens are kept fresh by a [`TokenManager`][freshtoken.TokenManager].

How the pieces share the work:

* A [`ResourceRefresher`][] is the manager's refresher. It *acquires* (``can_acquire``): with no
  tokens, or no refresh token, its ``refresh`` is the browser login. So the manager's single
  flight covers logins too: of all the threads, tasks and processes that find no tokens, one
  logs in (under the store's lock) and the others adopt what it saved.
* Every token request of the grant carries the ``resource`` (RFC 8707): the authorization
  request, the code exchange and every refresh (DESIGN.md invariant 15).
* The client registration is stored beside the tokens, in a store of the same kind (a profile
  of the same file, a key of the same Redis, an entry of the same keychain: the same
  protections), keyed by authorization server, and made under that store's lock: every
  process uses one registration.
* A refresh refused while the access token still works keeps it (a ``RefreshFailed``, not the
  end of the session); once it has expired, or an API has refused it (the grant was revoked),
  a refused refresh ends the grant and, when ``interactive``, the next request logs in again.
* A 403 ``insufficient_scope`` asks for a step-up: [`ResourceRefresher.step_up()`][] says whether
  a login for the union of the scopes may help (once per scope set, never a loop), and the
  manager's forced refresh then logs in for it. A step-up is never a refresh.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import webbrowser
from collections.abc import Hashable, Mapping
from typing import Any
from urllib.parse import urlsplit

from ._core.challenges import HeaderValues
from ._core.clock import Clock, system_clock
from ._core.tokens import TokenResponseError, TokenSet
from ._engine.manager import TokenManager
from ._logins.flows import browser_with
from ._logins.loopback import OpenBrowser
from ._oauth.client_auth import ClientAuth
from ._oauth.discovery import ServerMetadata, discover
from ._oauth.http import Verify, drive
from ._oauth.registration import (
    ClientRegistration,
    registration_flow,
    supports_metadata_documents,
)
from ._oauth.resources import (
    ResourceChallenge,
    ResourceMetadata,
    canonical_resource,
    choose_scope,
    resource_metadata_flow,
    step_up_scope,
)
from .errors import LoginFailed, RefreshFailed, SessionExpired
from .refreshers import OAuth2Refresher
from .stores._base import MemoryStore, TokenStore

__all__ = [
    "DEFAULT_CLIENT_NAME",
    "RegistrationStore",
    "ResourceRefresher",
    "for_resource",
    "resource_profile",
]

DEFAULT_CLIENT_NAME = "freshtoken"
DEFAULT_REDIRECT_URI = "http://127.0.0.1/callback"
LOGIN_TIMEOUT = 300.0
_REGISTRATION_TYPE = "FreshtokenRegistration"


def resource_profile(url: str) -> str:
    """The FileStore profile name of the resource at ``url``: its host and a digest of its
    canonical URI (``mcp.example.com-1a2b3c4d5e``)."""
    canonical = canonical_resource(url)
    host = "".join(c for c in (urlsplit(canonical).hostname or "") if c.isalnum() or c in ".-")
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
    return f"{host[:40].strip('.-') or 'resource'}-{digest}"


class RegistrationStore:
    """Client registrations, one per authorization server, kept in stores of the same kind
    as ``tokens`` (see the module docstring). A registration is saved as a token set whose
    access token encodes it, so each store keeps it with the protections it gives tokens
    (encryption, the keychain, Redis ACLs)."""

    def __init__(self, tokens: TokenStore) -> None:
        self._tokens = tokens
        self._stores: dict[str, TokenStore] = {}
        self._mutex = threading.Lock()

    def store_for(self, issuer: str) -> TokenStore:
        with self._mutex:
            store = self._stores.get(issuer)
            if store is None:
                store = self._stores[issuer] = _sibling(self._tokens, issuer)
            return store

    def load(self, issuer: str) -> ClientRegistration | None:
        stored = self.store_for(issuer).load()
        if stored is None:
            return None
        return _decode(stored.tokens, issuer)

    def save(self, registration: ClientRegistration) -> None:
        self.store_for(registration.issuer).save(_encode(registration), expected_generation=None)

    def forget(self, issuer: str) -> None:
        self.store_for(issuer).clear()


class ResourceRefresher:
    """The refresher of a [`for_resource()`][for_resource] manager: logs in (browser, PKCE) when
    there are no tokens, refreshes with the grant's ``resource`` otherwise. See the module
    docstring; the settings are those of [`for_resource()`][for_resource]."""

    can_acquire = True

    def __init__(
        self,
        url: str,
        *,
        registrations: RegistrationStore,
        client_name: str = DEFAULT_CLIENT_NAME,
        scope: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        client_metadata_url: str | None = None,
        open_browser: OpenBrowser = webbrowser.open,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
        login_timeout: float = LOGIN_TIMEOUT,
        interactive: bool = True,
        verify: Verify = True,
        allow_insecure_http: bool = False,
    ) -> None:
        self.url = url
        self.resource = canonical_resource(url)
        self.registrations = registrations
        self.client_name = client_name
        self.scope = scope
        self.client_id = client_id
        self.client_secret = client_secret
        self.client_metadata_url = client_metadata_url
        self.open_browser = open_browser
        self.redirect_uri = redirect_uri
        self.login_timeout = login_timeout
        self.interactive = interactive
        self.verify = verify
        self.allow_insecure_http = allow_insecure_http
        self.logins = 0
        self.refreshes = 0
        self._mutex = threading.Lock()
        self._challenge = ResourceChallenge()
        self._resource_metadata: ResourceMetadata | None = None
        self._server: ServerMetadata | None = None
        self._step_up: str | None = None  # the scope the next login asks for
        self._stepped_up: set[frozenset[str]] = set()
        self._last_scope: str | None = None
        self._rejected: str | None = None  # the access token an API last refused

    # -- what the integrations tell it ---------------------------------------------------------

    def learn(
        self, www_authenticate: HeaderValues, rejected: TokenSet | None = None
    ) -> ResourceChallenge:
        """Read a resource server's challenge: its ``resource_metadata`` and ``scope`` serve
        the next discovery and login. ``rejected``: the API refused these tokens (a refused
        refresh then ends the session at once: the access token no longer works)."""
        challenge = ResourceChallenge.parse(www_authenticate)
        with self._mutex:
            if challenge.resource_metadata or challenge.scope:
                self._challenge = challenge
            if rejected is not None:
                self._rejected = rejected.access_token
        return challenge

    def step_up(self, www_authenticate: HeaderValues, granted: TokenSet) -> bool:
        """A 403 with ``granted``: whether a login for more scope may help. True arms it (the
        manager's next forced refresh logs in for the union of scopes); each scope set is
        asked for once, so a server that never grants it cannot make a loop."""
        challenge = self.learn(www_authenticate)
        if not challenge.insufficient_scope:
            return False
        with self._mutex:
            wanted = step_up_scope(granted.scope, self._last_scope or self.scope, challenge.scope)
            if wanted is None:
                return False
            key = frozenset(wanted.split())
            if key in self._stepped_up:
                return False
            self._stepped_up.add(key)
            self._step_up = wanted
            return True

    # -- the Refresher protocol ------------------------------------------------------------

    def refresh(
        self,
        current: TokenSet | None,
        clock: Clock = system_clock,
        *,
        deadline: float | None = None,
    ) -> TokenSet:
        with self._mutex:
            step_up, self._step_up = self._step_up, None
        if step_up is not None:
            return self.login(clock, scope=step_up)
        if current is None or current.refresh_token is None:
            return self.login(clock)
        try:
            return self._refresh_grant(current, clock, deadline)
        except SessionExpired as ended:
            with self._mutex:
                refused = self._rejected == current.access_token
            if not current.is_expired(clock()) and not refused:
                # Refused while the access token still works (a server that will not refresh
                # early, a grant that moved on): use it until it expires, then decide.
                raise RefreshFailed(
                    ended.error,
                    f"{ended.description or 'the refresh was refused'}; the access token is "
                    "kept until it expires",
                    status=ended.status,
                ) from None
            if ended.error == "invalid_client":
                self._forget_registration()
            if not self.interactive:
                raise
            return self.login(clock)

    def _refresh_grant(self, current: TokenSet, clock: Clock, deadline: float | None) -> TokenSet:
        server = self.server_metadata()
        registration = self.registration(server)
        assert server.token_endpoint is not None
        refresher = OAuth2Refresher(
            server.token_endpoint,
            client_id=registration.client_id,
            client_secret=registration.client_secret,
            auth_method=registration.auth_method,  # type: ignore[arg-type]
            extra_params={"resource": self.resource},
            verify=self.verify,
            allow_insecure_http=self.allow_insecure_http,
        )
        tokens = refresher.refresh(current, clock, deadline=deadline)
        self.refreshes += 1
        return tokens

    # -- discovery and registration ----------------------------------------------------------

    def resource_metadata(self) -> ResourceMetadata:
        """The resource's metadata (RFC 9728), fetched once."""
        with self._mutex:
            known, challenge = self._resource_metadata, self._challenge
        if known is not None:
            return known
        flow = resource_metadata_flow(
            self.url,
            metadata_url=challenge.resource_metadata,
            allow_insecure_http=self.allow_insecure_http,
        )
        metadata = drive(flow, verify=self.verify)
        with self._mutex:
            self._resource_metadata = metadata
        return metadata

    def server_metadata(self) -> ServerMetadata:
        """Its authorization server's metadata (RFC 8414; the issuer must match)."""
        if self._server is not None:
            return self._server
        issuer = self.resource_metadata().authorization_server
        server = discover(issuer, verify=self.verify, allow_insecure_http=self.allow_insecure_http)
        if server.token_endpoint is None:
            raise LoginFailed("discovery_failed", f"{server.issuer} names no token_endpoint")
        self._server = server
        return server

    def registration(self, server: ServerMetadata | None = None) -> ClientRegistration:
        """The client at the authorization server: given, a metadata document URL, stored, or
        registered now (under the registration store's lock: one per server)."""
        server = server or self.server_metadata()
        issuer = server.issuer
        if self.client_id is not None:
            return ClientRegistration(
                issuer,
                self.client_id,
                self.client_secret,
                "client_secret_basic" if self.client_secret else "none",
                kind="given",
            )
        if self.client_metadata_url is not None and supports_metadata_documents(server):
            return ClientRegistration(issuer, self.client_metadata_url, kind="document")
        stored = self.registrations.load(issuer)
        if stored is not None and not stored.expired(system_clock()):
            return stored
        store = self.registrations.store_for(issuer)
        with store.lock(self.login_timeout):
            stored = self.registrations.load(issuer)  # another process may have registered
            if stored is not None and not stored.expired(system_clock()):
                return stored
            flow = registration_flow(
                server,
                client_name=self.client_name,
                redirect_uris=[self.redirect_uri],
                allow_insecure_http=self.allow_insecure_http,
            )
            registration = drive(flow, verify=self.verify)
            self.registrations.save(registration)
            return registration

    def _forget_registration(self) -> None:
        if self.client_id is None and self._server is not None:
            self.registrations.forget(self._server.issuer)

    # -- the login -------------------------------------------------------------------------

    def login_scope(self) -> str | None:
        """What a first login asks for: ``scope`` if given, else the challenge's, else the
        resource's ``scopes_supported``; plus ``offline_access`` where the server offers it
        (for a refresh token)."""
        with self._mutex:
            challenged = self._challenge.scope
        scope = self.scope or choose_scope(challenged, self.resource_metadata())
        words = (scope or "").split()
        offered = self.server_metadata().scopes_supported or ()
        if "offline_access" in offered and "offline_access" not in words:
            words.append("offline_access")
        return " ".join(words) or None

    def login(self, clock: Clock = system_clock, *, scope: str | None = None) -> TokenSet:
        """The browser login (authorization code, PKCE S256, loopback redirect) with the
        ``resource`` on the authorization request and the code exchange."""
        if not self.interactive:
            raise SessionExpired(
                "login_required",
                f"no tokens for {self.resource}: log in (freshtoken login --resource "
                f"{self.resource})",
            )
        server = self.server_metadata()
        registration = self.registration(server)
        scope = scope or self.login_scope()
        client = ClientAuth(
            registration.client_id,
            registration.client_secret,
            registration.auth_method,  # type: ignore[arg-type]
            audience=server.token_endpoint,
        )
        tokens = browser_with(
            server,
            client,
            scope=scope or "",
            resource=self.resource,
            open_browser=self.open_browser,
            redirect_uri=self.redirect_uri,
            timeout=self.login_timeout,
            verify=self.verify,
            allow_insecure_http=self.allow_insecure_http,
            clock=clock,
        )
        with self._mutex:
            self._last_scope = scope
        self.logins += 1
        return tokens

    def __repr__(self) -> str:
        return f"ResourceRefresher({self.resource!r}, client_name={self.client_name!r})"


def for_resource(
    url: str,
    *,
    client_name: str = DEFAULT_CLIENT_NAME,
    scope: str | None = None,
    store: TokenStore | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    client_metadata_url: str | None = None,
    open_browser: OpenBrowser = webbrowser.open,
    redirect_uri: str = DEFAULT_REDIRECT_URI,
    login_timeout: float = LOGIN_TIMEOUT,
    interactive: bool = True,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    **manager_options: Any,
) -> TokenManager:
    """A [`TokenManager`][freshtoken.TokenManager] for the API at ``url``, which says itself where
    to log in (RFC 9728 protected resource metadata: MCP servers, and any API that publishes it).

    Nothing is sent until tokens are first needed. Then the resource's metadata names its
    authorization server; a client named ``client_name`` is registered there (RFC 7591) unless
    ``client_id`` (and ``client_secret``) name one registered beforehand or
    ``client_metadata_url`` is a client ID metadata document the server accepts; the user logs in
    through ``open_browser`` (authorization code with PKCE, a loopback ``redirect_uri``), for
    ``scope`` (default: the 401's ``scope``, else every scope the resource lists); and the
    tokens are refreshed with the ``resource`` (RFC 8707) on every request.

    ``store`` defaults to the user's [`FileStore`][freshtoken.FileStore] (profile
    `resource_profile()`): every process of the user shares the grant, and one refresh per
    expiry serves them all. The client registration is stored beside the tokens, keyed by
    authorization server. ``interactive=False`` never opens a browser: with no tokens (or a
    grant that ended) requests fail with [`SessionExpired`][freshtoken.SessionExpired].
    ``manager_options`` go to the manager (``policy=``, ``on_refresh=``...).

    Use it with any integration: ``httpx.Client(auth=freshtoken.httpx.TokenAuth(manager))``,
    or ``freshtoken.mcp.auth(url)`` for MCP clients.
    """
    if store is None:
        from .stores.file import FileStore

        store = FileStore(profile=resource_profile(url))
    refresher = ResourceRefresher(
        url,
        registrations=RegistrationStore(store),
        client_name=client_name,
        scope=scope,
        client_id=client_id,
        client_secret=client_secret,
        client_metadata_url=client_metadata_url,
        open_browser=open_browser,
        redirect_uri=redirect_uri,
        login_timeout=login_timeout,
        interactive=interactive,
        verify=verify,
        allow_insecure_http=allow_insecure_http,
    )
    # Other processes wait for a login in progress, not only for a refresh.
    manager_options.setdefault("lock_timeout", login_timeout + 30.0)
    return TokenManager(refresher, store, **manager_options)


# -- registrations beside the tokens ---------------------------------------------------------

_MEMORY_REGISTRATIONS: dict[Hashable, MemoryStore] = {}
_MEMORY_MUTEX = threading.Lock()


def _digest(issuer: str) -> str:
    return hashlib.sha256(issuer.encode()).hexdigest()[:16]


def _sibling(store: TokenStore, issuer: str) -> TokenStore:
    """A store of the same kind and place as ``store``, for ``issuer``'s registration."""
    from .stores.file import FileStore

    name = f"client-{_digest(issuer)}"
    if isinstance(store, FileStore):
        sibling = FileStore(store.path, profile=name, watch_interval=None)
        sibling._sealer = store._sealer
        return sibling
    kind = type(store).__name__
    if kind == "RedisStore":
        from .stores.redis import RedisStore

        assert isinstance(store, RedisStore)
        redis_sibling = RedisStore(
            store._sync,
            key=f"{store._redis_key}:{name}",
            watch=False,
        )
        redis_sibling._sealer = store._sealer
        return redis_sibling
    if kind == "KeyringStore":
        from .stores.keyring import KeyringStore

        assert isinstance(store, KeyringStore)
        return KeyringStore(store.service, f"{store.username}:{name}")
    # Memory (and stores of your own): registrations live as long as this process.
    with _MEMORY_MUTEX:
        key = (store.key, issuer)
        memory = _MEMORY_REGISTRATIONS.get(key)
        if memory is None:
            memory = _MEMORY_REGISTRATIONS[key] = MemoryStore()
        return memory


def _encode(registration: ClientRegistration) -> TokenSet:
    text = json.dumps(registration.to_dict(), separators=(",", ":"), sort_keys=True)
    encoded = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    return TokenSet(access_token=encoded, token_type=_REGISTRATION_TYPE)


def _decode(tokens: TokenSet, issuer: str) -> ClientRegistration | None:
    """The registration a store holds, or None if it holds something else (then a new one is
    made and replaces it)."""
    if tokens.token_type != _REGISTRATION_TYPE:
        return None
    try:
        padded = tokens.access_token + "=" * (-len(tokens.access_token) % 4)
        data: Mapping[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
        registration = ClientRegistration.from_dict(data)
    except (ValueError, TypeError, TokenResponseError):
        return None
    return registration if registration.issuer == issuer else None
