"""Serving the app with uvicorn: in a background thread (ReferenceServer) or in the foreground."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any, overload

import httpx
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .._core.clock import Clock, ManualClock, system_clock
from .._uvicorn import ReadyServer, base_url, bind_socket, uvicorn_config
from ._app import TRANSPORT_KEY, build_app
from ._browser import Browser
from ._config import FaultKind, ServerConfig
from ._state import ServerState

__all__ = [
    "ReferenceServer",
    "base_url",
    "bind_socket",
    "build_uvicorn_server",
    "uvicorn_config",
]

_START_TIMEOUT = 10.0


class _H11WithTransport(H11Protocol):
    """uvicorn's h11 protocol, handing each request its transport (for drop_connection)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app_state = {**self.app_state, TRANSPORT_KEY: transport}


def build_uvicorn_server(config: ServerConfig, url: str) -> uvicorn.Server:
    """A foreground server (for ``serve``) on the system clock; it handles SIGINT itself."""
    state = ServerState(config, clock=system_clock, url=url)
    return uvicorn.Server(uvicorn_config(build_app(state), http=_H11WithTransport))


class _Endpoint:
    """A read-only URL of a [`ReferenceServer`][]: ``path`` under its issuer, or under its own
    origin with ``of_origin`` (one line per endpoint, where a property each took four)."""

    __slots__ = ("_of_origin", "_path")

    def __init__(self, path: str, *, of_origin: bool = False) -> None:
        self._path = path
        self._of_origin = of_origin

    @overload
    def __get__(self, server: None, owner: type[ReferenceServer]) -> _Endpoint: ...
    @overload
    def __get__(self, server: ReferenceServer, owner: type[ReferenceServer]) -> str: ...
    def __get__(
        self, server: ReferenceServer | None, owner: type[ReferenceServer]
    ) -> str | _Endpoint:
        if server is None:
            return self
        return (server.url if self._of_origin else server.issuer) + self._path

    def __set__(self, server: ReferenceServer, value: object) -> None:
        raise AttributeError("a ReferenceServer's URLs follow its address: they cannot be set")


class ReferenceServer:
    """A reference OAuth2 server on a free loopback port, served from a background thread.

    ``clock`` is the client-side clock; the server reads ``clock() + config.clock_offset``.
    Use a [`ManualClock`][freshtoken.ManualClock] to make [`advance()`][advance] work, and share it
    with the client under test. Helpers such as [`login()`][login] go over real HTTP; the fault and
    counter helpers act directly on the server's state (they need no ``admin`` routes).
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        clock: Clock = system_clock,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.clock = clock
        self._initial_config = config or ServerConfig()
        self._host = host
        self._port = port
        self._state: ServerState | None = None
        self._server: ReadyServer | None = None
        self._thread: threading.Thread | None = None
        self._http: httpx.Client | None = None
        self.url = ""
        """Where the server listens once started (``http://127.0.0.1:PORT``), else ``""``."""

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> ReferenceServer:
        """Returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        sock = bind_socket(self._host, self._port)
        self.url = base_url(sock)
        self._state = ServerState(self._initial_config, clock=self.clock, url=self.url)
        self._server = ReadyServer(uvicorn_config(build_app(self._state), http=_H11WithTransport))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"freshtoken-server-{self.url}",
            daemon=True,
        )
        self._thread.start()
        while not self._server.ready.wait(0.05):
            if not self._thread.is_alive():
                sock.close()
                raise RuntimeError(f"the reference server at {self.url} failed to start")
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"the reference server at {self.url} failed to start")
        # Plain HTTP to loopback: verify=False only skips loading CA certificates (~50 ms).
        self._http = httpx.Client(base_url=self.url, timeout=10.0, verify=False)
        return self

    def stop(self, *, wait: bool = True) -> None:
        """Stop serving. ``wait=False`` returns at once and lets uvicorn finish its ~0.1 s
        shutdown in the background (test suites stop a server per test)."""
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            if not wait:
                self._server = None
                self._thread = None
                return
            self._thread.join(timeout=10.0)
            if self._thread.is_alive():
                raise RuntimeError(f"the reference server at {self.url} did not stop")
        self._server = None
        self._thread = None

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- where it is ---------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        """The issuer: [`url`][] plus ``config.issuer_path``; the OAuth endpoints are under it."""
        return self.url + self._initial_config.issuer_path

    token_url = _Endpoint("/oauth/token")
    """The token endpoint (RFC 6749 section 3.2)."""
    revoke_url = _Endpoint("/oauth/revoke")
    """Token revocation (RFC 7009)."""
    authorize_url = _Endpoint("/oauth/authorize")
    """The authorization endpoint: a login form, PKCE, any loopback redirect port."""
    device_authorization_url = _Endpoint("/oauth/device_authorization")
    """Device authorization (RFC 8628)."""
    device_url = _Endpoint("/device")
    """The device flow's verification page."""
    userinfo_url = _Endpoint("/oauth/userinfo")
    """OpenID Connect userinfo."""
    jwks_url = _Endpoint("/.well-known/jwks.json")
    """The signing keys, for ID tokens and JWT access tokens."""

    @property
    def metadata_url(self) -> str:
        """RFC 8414 metadata (path-aware: the issuer's path comes after the well-known part)."""
        return (
            f"{self.url}/.well-known/oauth-authorization-server{self._initial_config.issuer_path}"
        )

    openid_configuration_url = _Endpoint("/.well-known/openid-configuration")
    """OpenID Connect discovery."""
    login_url = _Endpoint("/auth/login", of_origin=True)
    """The JSON login API (``POST`` a user and password), for in-house style clients."""
    refresh_url = _Endpoint("/auth/refresh", of_origin=True)
    """The JSON login API's refresh."""
    api_url = _Endpoint("/api", of_origin=True)
    """The demo resource API (``/api/me``, ``/api/items``, ...)."""

    @property
    def state(self) -> ServerState:
        if self._state is None:
            raise RuntimeError("the server is not started")
        return self._state

    @property
    def config(self) -> ServerConfig:
        return self.state.config

    # -- tokens over HTTP ----------------------------------------------------------------

    def _post_token(
        self, form: dict[str, str], client_id: str, client_secret: str | None, scope: str | None
    ) -> dict[str, Any]:
        """POST a grant with client_secret_post authentication (none for a public client)."""
        if self._http is None:
            raise RuntimeError("the server is not started")
        form["client_id"] = client_id
        if client_secret is not None:
            form["client_secret"] = client_secret
        if scope is not None:
            form["scope"] = scope
        # JSON whatever the personality: some answer form-encoded unless asked (GitHub).
        response = self._http.post(
            self.token_url, data=form, headers={"Accept": "application/json"}
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def login(
        self,
        username: str = "demo",
        password: str = "demo",
        *,
        client_id: str = "demo",
        client_secret: str | None = "demo-secret",
        scope: str | None = None,
    ) -> dict[str, Any]:
        """A password grant (client_secret_post; a public client passes ``client_secret=None``).

        Returns the token response; raises ``httpx.HTTPStatusError`` on an error answer.
        """
        form = {"grant_type": "password", "username": username, "password": password}
        return self._post_token(form, client_id, client_secret, scope)

    def refresh(
        self,
        refresh_token: str,
        *,
        client_id: str = "demo",
        client_secret: str | None = "demo-secret",
        scope: str | None = None,
    ) -> dict[str, Any]:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return self._post_token(form, client_id, client_secret, scope)

    def client_credentials(
        self,
        client_id: str = "demo",
        client_secret: str = "demo-secret",
        *,
        scope: str | None = None,
    ) -> dict[str, Any]:
        return self._post_token(
            {"grant_type": "client_credentials"}, client_id, client_secret, scope
        )

    # -- a person at a browser ------------------------------------------------------------

    def browser(
        self, username: str = "demo", password: str = "demo", *, approve: bool = True
    ) -> Browser:
        """An ``open_browser`` for [`freshtoken.browser_login()`][freshtoken.browser_login] that
        signs in on this server's login form as ``username`` (or denies, ``approve=False``) and then
        visits the redirect, as a person would. Also approves device logins:
        ``server.browser().approve_device(verification_uri_complete)``."""
        return Browser(username, password, approve)

    def rotate_signing_key(self) -> str:
        """Sign new tokens with a new key (new ``kid``); the JWKS keeps the old one too."""
        return self.state.rotate_signing_key()

    # -- faults, counters, time ----------------------------------------------------------

    def inject(self, kind: FaultKind, count: int = 1, *, retry_after: int | None = None) -> None:
        """The next ``count`` token requests fail as ``kind`` (queued after earlier faults)."""
        self.state.inject(kind, count, retry_after=retry_after)

    def set_latency(self, seconds: float) -> None:
        """Delay every token endpoint answer by ``seconds`` of real time."""
        self.state.set_latency(seconds)

    def fail_api(self, calls: int) -> None:
        """The next ``calls`` protected API calls answer 401 invalid_token."""
        self.state.fail_api(calls)

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def demand_new_dpop_nonce(self, count: int = 1) -> None:
        """The next ``count`` DPoP proofs, at the token endpoint or the API, are answered
        ``use_dpop_nonce`` with a new nonce (a large count: a server that always does)."""
        self.state.dpop.demand_new_nonce(count)

    def rotate_dpop_nonce(self) -> str:
        """Replace the server's DPoP nonce now; returns the new one."""
        return self.state.dpop.rotate_nonce()

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired from now on."""
        self.state.expire_access_tokens()

    def revoke(self, user: str) -> int:
        """Revoke every session of ``user``; returns how many were alive."""
        return self.state.revoke_user(user)

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def reset_stats(self) -> None:
        self.state.reset_stats()

    def configure(self, **changes: Any) -> ServerConfig:
        """Change the token lifecycle at run time, e.g. ``configure(reuse_grace=2)``."""
        return self.state.configure(**changes)

    def now(self) -> float:
        """The server's time: ``clock() + clock_offset``."""
        return self.state.now()

    def advance(self, seconds: float) -> float:
        """Move the shared ManualClock forward; returns the new (client-side) time."""
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs a server made with clock=ManualClock()")
        return self.clock.advance(seconds)

    def __repr__(self) -> str:
        running = "running" if self._thread is not None else "stopped"
        return f"ReferenceServer({self.url or 'unbound'}, {running})"
