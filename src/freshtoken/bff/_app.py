"""The BFF application: session cookie in, fresh access token out, no token in the browser.

Endpoints under ``prefix`` (``/bff``): ``login``, ``callback``, ``user``, ``logout``; calls
under each proxy route go upstream with the session's token; anything else goes to the
wrapped ``app`` (the SPA's files, a FastAPI app) or gets a 404.

Errors a browser sees, always JSON:

    401 {"error": "login_required"}           no session, or it can no longer be refreshed
                                              (its cookie is cleared with the answer)
    403 {"error": "csrf"}                     the X-CSRF header (or a logout's sid) is missing
    400 {"error": "invalid_return_to"}        returnTo is not a path of the app's own origin
    400 {"error": "invalid_path"}             a proxied path tries to climb out of its route,
                                              or spells the route's prefix percent-encoded
    405 {"error": "method_not_allowed"}       TRACE, TRACK or CONNECT (or an override to one)
    429 {"error": "too_many_calls"}           the session has max_calls_per_session calls
                                              upstream already (with Retry-After)
    502 {"error": "bad_gateway"}              the upstream API cannot be reached
    503 {"error": "temporarily_unavailable"}  the token endpoint or the session store is down
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import providers
from .._core.clock import Clock, system_clock
from .._core.policy import RefreshPolicy, RetryPolicy
from .._core.tokens import TokenSet
from .._engine.manager import TokenManager
from .._oauth.discovery import ServerMetadata, ametadata_of
from ..errors import LoginFailed, LoginRequired, SessionExpired, StoreError
from ..providers import Provider
from ..refreshers import OAuth2Refresher, Refresher
from ..stores._sealing import _raw_key
from ._asgi import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    cookie_of,
    headers_of,
    send_json,
    send_unavailable,
)
from ._cookies import Cookies
from ._endpoints import callback, login, logout, user
from ._forward import proxy
from ._keys import KeyRing
from ._managers import WarmManagers
from ._memory_sessions import MemorySessionStore
from ._proxy import CallLimit, Routes
from ._security import SameSite, check_cookie_name, csrf_ok
from ._sessions import (
    Session,
    SessionStore,
    UnreadableSession,
    handle_of,
    new_session_id,
    valid_session_id,
)
from ._upstream import SharedTransport, Upstream

__all__ = ["BFF", "LoginRequired", "derive_key"]

_KEY_SALT = b"freshtoken bff key v1"
UPSTREAM_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
UPSTREAM_CONNECTIONS = 256
# Calls one session may have upstream at once (in one worker): an eighth of the upstream
# connections, far above what a page's fetches need.
MAX_CALLS_PER_SESSION = 32
# A call that waited this long for its session's refresh gets its 503 (with Retry-After)
# within 2 s of asking, the proxy's own time included (bench_bff_outage.py: with 2.0, 18% of
# the calls during an outage took 2-3.1 s; with 1.5, none over 2 s).
REFRESH_WAIT = 1.5


def derive_key(secret: bytes | str) -> bytes:
    """The BFF's 32-byte key: ``secret`` itself if it is 32 bytes (raw or url-safe base64),
    else a passphrase stretched once with scrypt. Every worker given the same secret derives
    the same key, so sessions sealed by one open in all."""
    raw = _raw_key(secret)
    if raw is not None:
        return raw
    if len(secret) < 16:
        raise ValueError("the BFF's secret must be 32 random bytes, or a passphrase of 16+")
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    material = secret.encode() if isinstance(secret, str) else bytes(secret)
    return Scrypt(salt=_KEY_SALT, length=32, n=2**15, r=8, p=1).derive(material)


class BFF:
    """A backend for frontend for one confidential OAuth client. See docs/bff.md.

    ``routes`` maps path prefixes to upstream APIs (``{"/api/": "https://api.example.com/"}``).
    ``secret_key`` seals what the BFF keeps (32 random bytes, or a long passphrase); every
    worker of the app needs the same one. ``previous_keys`` are keys it replaced: what they
    sealed still opens, and is sealed again with ``secret_key`` when next written (key
    rotation). ``sessions`` defaults to a [`MemorySessionStore`][] (one worker); give a
    [`RedisSessionStore`][] for more. ``max_calls_per_session`` bounds the calls one
    session has upstream at once (per worker); past it the proxy answers 429.
    ``provider`` is a [`Provider`][freshtoken.Provider] (or a preset's name, such as
    ``"github"``) in place of ``issuer``: its endpoints and quirks are used.
    ``refresh_wait`` bounds how long a proxied call waits for its session's refresh: past it
    the browser gets 503 temporarily_unavailable with Retry-After (the refresh goes on, and
    the session is kept).
    """

    def __init__(
        self,
        *,
        client_id: str,
        secret_key: bytes | str,
        previous_keys: Iterable[bytes | str] = (),
        routes: Mapping[str, str] | None = None,
        issuer: str | ServerMetadata | Provider | None = None,
        provider: Provider | str | None = None,
        client_secret: str | None = None,
        scope: str | None = None,
        authorize_params: Mapping[str, str] | None = None,
        redirect_uri: str | None = None,
        token_url: str | None = None,
        revocation_url: str | None = None,
        end_session_url: str | None = None,
        refresher: Refresher | None = None,
        api_origins: Iterable[str] = (),
        sessions: SessionStore | None = None,
        app: ASGIApp | None = None,
        prefix: str = "/bff",
        cookie_name: str = "__Host-bff",
        same_site: SameSite = "lax",
        secure_cookies: bool = True,
        idle_timeout: float = 8 * 3600,
        absolute_timeout: float = 7 * 24 * 3600,
        csrf_header: str = "X-CSRF",
        csrf_value: str = "1",
        post_logout_redirect: str = "/",
        replay_limit: int = 1 << 20,
        max_calls_per_session: int = MAX_CALLS_PER_SESSION,
        max_warm_sessions: int = 10_000,
        upstream_timeout: httpx.Timeout | float = UPSTREAM_TIMEOUT,
        refresh_wait: float = REFRESH_WAIT,
        verify: bool | str = True,
        allow_insecure_http: bool = False,
        leeway: float = 30.0,
        retry: RetryPolicy | None = None,
        clock: Clock = system_clock,
    ) -> None:
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError("prefix starts with '/' and does not end with one: '/bff'")
        if same_site not in ("lax", "strict", "none"):
            raise ValueError("same_site is 'lax', 'strict' or 'none'")
        check_cookie_name(cookie_name, secure=secure_cookies)
        if not 0 < idle_timeout <= absolute_timeout:
            raise ValueError("need 0 < idle_timeout <= absolute_timeout")
        if (
            not isinstance(max_calls_per_session, int)
            or isinstance(max_calls_per_session, bool)
            or max_calls_per_session < 1
        ):
            raise ValueError("max_calls_per_session must be a whole number, at least 1")
        if not (isinstance(refresh_wait, (int, float)) and 0 < refresh_wait < math.inf):
            raise ValueError("refresh_wait is a positive number of seconds")
        if isinstance(previous_keys, (str, bytes)) or not all(
            isinstance(key, (str, bytes)) for key in previous_keys
        ):
            raise ValueError("previous_keys is a list of keys (each as secret_key is given)")
        if refresher is None and token_url is not None:
            refresher = OAuth2Refresher(
                token_url,
                client_id=client_id,
                client_secret=client_secret,
                verify=verify,
                allow_insecure_http=allow_insecure_http,
            )
        if provider is not None:
            if issuer is not None:
                raise ValueError("give an issuer or a provider, not both")
            issuer = providers.get(provider) if isinstance(provider, str) else provider
        if refresher is None and issuer is None:
            raise ValueError("give an issuer (or a provider, a token_url, or a refresher)")
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.authorize_params = dict(authorize_params or {})
        self.redirect_uri = redirect_uri
        self.verify = verify
        self.metadata: ServerMetadata | None = (
            issuer if isinstance(issuer, ServerMetadata) else None
        )
        self._refresher = refresher
        self.revocation_url = revocation_url
        self.end_session_url = end_session_url
        self.routes = Routes(routes or {}, allow_insecure_http=allow_insecure_http)
        self.key = derive_key(secret_key)
        try:
            previous = [derive_key(key) for key in previous_keys]
        except ValueError as error:
            raise ValueError(f"previous_keys: {error}") from None
        keys = KeyRing(self.key, previous)
        self.sessions: SessionStore = MemorySessionStore() if sessions is None else sessions
        self.sessions.use_keys(self.key, keys.previous)
        self._cookies = Cookies(cookie_name, same_site=same_site, secure=secure_cookies, keys=keys)
        self.app = app
        self.prefix = prefix
        self.cookie_name = cookie_name
        self.same_site: SameSite = same_site
        self.secure_cookies = secure_cookies
        self.idle_timeout = float(idle_timeout)
        self.absolute_timeout = float(absolute_timeout)
        self.csrf_header = csrf_header
        self.csrf_value = csrf_value
        self.post_logout_redirect = post_logout_redirect
        self.replay_limit = replay_limit
        self.calls = CallLimit(max_calls_per_session)
        self.max_warm_sessions = max_warm_sessions
        self.allow_insecure_http = allow_insecure_http
        self.leeway = leeway
        self.retry = retry
        self.clock = clock
        # The sessions that call now: their managers, and their ids' handles.
        self._warm = WarmManagers(self._new_manager, max_warm_sessions)
        self._managers = self._warm  # the name tests and benchmarks set sessions up through
        self.api_origins = frozenset(api_origins)
        self._timeout = httpx.Timeout(upstream_timeout)
        self.refresh_wait = float(refresh_wait)
        # The proxy's client: no cookie jar (one user's API cookies never reach another's
        # calls), no redirects followed, nothing added; see _upstream.
        self._upstream = Upstream(verify=verify, timeout=self._timeout, limit=UPSTREAM_CONNECTIONS)
        # user_client() and revocation: httpx, one shared transport.
        self._shared = SharedTransport(httpx.AsyncHTTPTransport(verify=verify))
        self._cookie_bytes = cookie_name.encode("latin-1")
        self._csrf_bytes = csrf_header.lower().encode("latin-1")
        self._csrf_value_bytes = csrf_value.encode("latin-1")
        self._ready = False
        self._endpoints: dict[str, ASGIApp] = {
            f"{prefix}/{name}": functools.partial(endpoint, self)
            for name, endpoint in (
                ("login", login),
                ("callback", callback),
                ("user", user),
                ("logout", logout),
            )
        }
        self._discovery_lock = anyio.Lock()

    # -- the provider ---------------------------------------------------------------------

    @property
    def refresher(self) -> Refresher:
        if self._refresher is None:
            raise RuntimeError("the issuer is not discovered yet: await bff.ready() first")
        return self._refresher

    async def ready(self) -> None:
        """Discover the issuer (once) and make the refresher from its metadata. Requests do
        this by themselves; call it at start-up to fail early on a wrong issuer."""
        if self._refresher is not None and (self.issuer is None or self.metadata is not None):
            self._ready = True
            return
        async with self._discovery_lock:
            if self.metadata is None and self.issuer is not None:
                self.metadata = await ametadata_of(
                    self.issuer, verify=self.verify, allow_insecure_http=self.allow_insecure_http
                )
            metadata = self.metadata
            assert metadata is not None
            if self._refresher is None:
                self._refresher = OAuth2Refresher.from_issuer(
                    metadata,
                    client_id=self.client_id,
                    client_secret=self.client_secret,
                    verify=self.verify,
                    allow_insecure_http=self.allow_insecure_http,
                )
            if self.revocation_url is None:
                self.revocation_url = metadata.revocation_endpoint
            if self.end_session_url is None:
                self.end_session_url = metadata.end_session_endpoint
            self._ready = True

    # -- sessions -------------------------------------------------------------------------

    async def start_session(
        self, tokens: TokenSet, claims: Mapping[str, Any] | None = None
    ) -> tuple[str, Session]:
        """Start a session for tokens obtained at login; returns the new id (for the cookie:
        see [`session_cookie()`][session_cookie]) and the session. A new id every time: no
        fixation."""
        await self.ready()
        session_id = new_session_id()
        handle = handle_of(session_id)
        now = self.clock()
        session = await self.sessions.create(
            handle, claims or {}, now=now, idle=self.idle_timeout, absolute=self.absolute_timeout
        )
        await self.manager(handle).aset_tokens(tokens)
        return session_id, session

    async def end_session(self, handle: str) -> None:
        """Forget a session and its tokens here and in the store (no revocation)."""
        await self.ready()
        manager = self._warm.pop(handle) or self._new_manager(handle)
        with contextlib.suppress(StoreError):
            await manager.aclear()  # the session's deletion below removes them anyway
        await self.sessions.delete(handle)

    def session_cookie(self, session_id: str) -> str:
        """The Set-Cookie header value that gives the browser ``session_id``."""
        return self._cookies.session(session_id, max_age=int(self.absolute_timeout))

    def manager(self, handle: str) -> TokenManager:
        """The TokenManager of a session: warm ones are kept (least recently used dropped past
        ``max_warm_sessions``); a cold one is made on demand and reads the store."""
        return self._warm.get(handle)

    def _new_manager(self, handle: str) -> TokenManager:
        return TokenManager(
            self.refresher,
            self.sessions.token_store(handle),
            policy=RefreshPolicy(leeway=self.leeway),
            retry=self.retry,
            clock=self.clock,
        )

    async def current_session(self, scope: Scope) -> Session | None:
        """The live session of a request's cookie, or None."""
        session_id = cookie_of(scope, self.cookie_name)
        if session_id is None or not valid_session_id(session_id):
            return None
        return await self.sessions.get(
            handle_of(session_id), now=self.clock(), idle=self.idle_timeout
        )

    def logout_sid(self, handle: str, key: bytes | None = None) -> str:
        """A value only this session's ``/user`` answer knows: it lets a plain link log out
        (``logout?sid=``) without the CSRF header, and no other site can forge it."""
        return self._cookies.logout_sid(handle, key)

    # -- server-side calls ----------------------------------------------------------------

    async def user_client(self, request: Request) -> AsyncIterator[httpx.AsyncClient]:
        """A FastAPI dependency: an ``httpx.AsyncClient`` authorised as the request's user.

        ``client: httpx.AsyncClient = Depends(bff.user_client)`` in a route of the wrapped
        app. Its token goes only to the proxy routes' origins and ``api_origins``; a
        rejection is refreshed and retried once, as [`freshtoken.httpx.TokenAuth`][] does.
        No session raises [`LoginRequired`][]; [`install()`][install] answers it (and a session
        that expires during the call) with the BFF's 401.
        """
        from ..httpx import TokenAuth

        await self.ready()
        session = await self.current_session(request.scope)
        if session is None:
            raise LoginRequired("no session: log in first")
        auth = TokenAuth(
            self.manager(session.handle),
            origins=self.routes.origins | self.api_origins,
            allow_insecure_http=self.allow_insecure_http,
        )
        async with httpx.AsyncClient(
            auth=auth, transport=self._shared, timeout=self._timeout, follow_redirects=False
        ) as client:
            yield client

    def install(self, app: Any) -> None:
        """Answer [`LoginRequired`][], [`SessionExpired`][freshtoken.SessionExpired] and a session
        whose tokens no key opens, raised in ``app``'s routes (a Starlette or FastAPI app),
        with the BFF's 401 login_required."""

        async def login_required(request: Request, error: Exception) -> Response:
            session = await self._quiet_session(request.scope)
            if session is not None and isinstance(error, (SessionExpired, UnreadableSession)):
                with contextlib.suppress(StoreError):
                    await self.end_session(session.handle)
            return JSONResponse(
                {"error": "login_required"},
                status_code=401,
                headers={"set-cookie": self._cookies.expired(), "cache-control": "no-store"},
            )

        app.add_exception_handler(LoginRequired, login_required)
        app.add_exception_handler(SessionExpired, login_required)
        app.add_exception_handler(UnreadableSession, login_required)

    async def _quiet_session(self, scope: Scope) -> Session | None:
        try:
            return await self.current_session(scope)
        except StoreError:
            return None

    # -- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            if self.app is not None:
                await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        endpoint = self._endpoints.get(path)
        route = None if endpoint is not None else self.routes.match(path)
        if (endpoint is not None or route is not None) and not self._ready:
            try:
                await self.ready()
            except LoginFailed as error:  # the provider cannot be discovered
                await send_unavailable(send, error)
                return
        if endpoint is not None:
            await endpoint(scope, receive, send)
            return
        if route is not None:
            await proxy(self, scope, receive, send, route)
            return
        if self.app is not None:
            await self.app(scope, receive, send)
            return
        await send_json(send, 404, {"error": "not_found"})

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is not None:
            # The wrapped app owns the lifespan protocol; ours closes before its shutdown is
            # reported complete: once it is, the server may cancel what is still running.
            closed = False

            async def close_then_send(message: Message) -> None:
                nonlocal closed
                if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                    closed = True
                    await self.aclose()
                await send(message)

            try:
                await self.app(scope, receive, close_then_send)
            finally:
                if not closed:
                    await self.aclose()
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        await self._upstream.aclose()
        await self._shared.close()
        await self.sessions.aclose()

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` (a revocation) with the shared httpx transport; the answer's body
        is still to be read."""
        request.extensions["timeout"] = self._timeout.as_dict()
        response = await self._shared.handle_async_request(request)
        response.request = request
        return response

    # -- answers --------------------------------------------------------------------------

    def _csrf(self, scope: Scope) -> bool:
        return csrf_ok(headers_of(scope), self.csrf_header.lower(), self.csrf_value)

    async def _login_required(self, send: Send, handle: str | None) -> None:
        """401 login_required, the session's cookie cleared; ``handle``'s session (one that
        can no longer be refreshed) ended."""
        if handle is not None:
            with contextlib.suppress(StoreError):
                await self.end_session(handle)
        await send_json(
            send,
            401,
            {"error": "login_required"},
            [(b"set-cookie", self._cookies.expired().encode())],
        )

    def __repr__(self) -> str:
        return f"BFF(client_id={self.client_id!r}, prefix={self.prefix!r}, {self.sessions!r})"
