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

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

import aiohttp
import anyio
import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import providers
from .._core.clock import Clock, system_clock
from .._core.policy import RefreshPolicy, RetryPolicy
from .._core.tokens import TokenResponseError, TokenSet
from .._engine.manager import TokenManager
from .._engine.resource import Attempt, Rejected
from .._logins.authorization import AuthorizationRequest
from .._oauth.client_auth import ClientAuth
from .._oauth.discovery import ServerMetadata, ametadata_of
from ..errors import (
    AuthError,
    LoginFailed,
    LoginRequired,
    SessionExpired,
    StoreError,
)
from ..providers import Provider
from ..refreshers import OAuth2Refresher, Refresher
from ..stores._sealing import _raw_key
from ._keys import KeyRing
from ._memory_sessions import MemorySessionStore
from ._proxy import (
    CallLimit,
    Inbound,
    Route,
    Routes,
    chained,
    forwarded_response_headers,
    read_replayable,
)
from ._security import (
    ALLOWED_METHODS,
    SameSite,
    check_cookie_name,
    cookie_header,
    csrf_ok,
    expired_cookie_header,
    method_allowed,
    safe_return_to,
    uri_encoded,
)
from ._sessions import (
    Session,
    SessionStore,
    UnreadableSession,
    handle_of,
    new_session_id,
    valid_session_id,
)
from ._upstream import UPSTREAM_ERRORS, Upstream

__all__ = ["BFF", "LoginRequired", "derive_key"]

logger = logging.getLogger("freshtoken.bff")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_KEY_SALT = b"freshtoken bff key v1"
LOGIN_TIMEOUT = 600.0  # seconds a user may spend at the provider's login page
MAX_PENDING_LOGINS = 4  # login cookies a browser may hold at once (tabs logging in)
# ID token claims that describe the login, not the user: not shown by /user.
_PROTOCOL_CLAIMS = frozenset({"nonce", "at_hash", "c_hash", "s_hash", "azp", "auth_time"})
UPSTREAM_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
UPSTREAM_CONNECTIONS = 256
# Calls one session may have upstream at once (in one worker): an eighth of the upstream
# connections, far above what a page's fetches need.
MAX_CALLS_PER_SESSION = 32
REFRESH_WAIT = 2.0
_SMALL_ANSWER = 64 * 1024  # a rejection's body up to this is read before the refresh wait


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
        self._sealer = KeyRing(self.key, previous)
        self.sessions: SessionStore = MemorySessionStore() if sessions is None else sessions
        self.sessions.use_keys(self.key, self._sealer.previous)
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
        self._managers: OrderedDict[str, TokenManager] = OrderedDict()
        self.api_origins = frozenset(api_origins)
        self._timeout = httpx.Timeout(upstream_timeout)
        self.refresh_wait = float(refresh_wait)
        # The proxy's client: no cookie jar (one user's API cookies never reach another's
        # calls), no redirects followed, nothing added; see _upstream.
        self._upstream = Upstream(verify=verify, timeout=self._timeout, limit=UPSTREAM_CONNECTIONS)
        # user_client() and revocation: httpx, one shared transport.
        self._shared = _SharedTransport(httpx.AsyncHTTPTransport(verify=verify))
        self._cookie_bytes = cookie_name.encode("latin-1")
        self._csrf_bytes = csrf_header.lower().encode("latin-1")
        self._csrf_value_bytes = csrf_value.encode("latin-1")
        self._handles: dict[str, str] = {}
        self._ready = False
        self._endpoints: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            f"{prefix}/login": self._login,
            f"{prefix}/callback": self._callback,
            f"{prefix}/user": self._user,
            f"{prefix}/logout": self._logout,
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
        manager = self._managers.pop(handle, None) or self._new_manager(handle)
        with contextlib.suppress(StoreError):
            await manager.aclear()  # the session's deletion below removes them anyway
        await self.sessions.delete(handle)

    def session_cookie(self, session_id: str) -> str:
        """The Set-Cookie header value that gives the browser ``session_id``."""
        return cookie_header(
            self.cookie_name,
            session_id,
            max_age=int(self.absolute_timeout),
            same_site=self.same_site,
            secure=self.secure_cookies,
        )

    def manager(self, handle: str) -> TokenManager:
        """The TokenManager of a session: warm ones are kept (least recently used dropped past
        ``max_warm_sessions``); a cold one is made on demand and reads the store."""
        managers = self._managers
        manager = managers.get(handle)
        if manager is None:
            manager = managers[handle] = self._new_manager(handle)
            if len(managers) > self.max_warm_sessions:
                managers.popitem(last=False)
        else:
            managers.move_to_end(handle)
        return manager

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
        session_id = _cookie(scope, self.cookie_name)
        if session_id is None or not valid_session_id(session_id):
            return None
        return await self.sessions.get(
            handle_of(session_id), now=self.clock(), idle=self.idle_timeout
        )

    def logout_sid(self, handle: str, key: bytes | None = None) -> str:
        """A value only this session's ``/user`` answer knows: it lets a plain link log out
        (``logout?sid=``) without the CSRF header, and no other site can forge it."""
        message = b"logout " + handle.encode()
        digest = hmac.new(key or self.key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def _logout_sid_ok(self, handle: str, sid: str) -> bool:
        """Whether ``sid`` is the session's, under any of the keys (a link shown before a key
        rotation still works)."""
        given = sid.encode()
        return any(
            hmac.compare_digest(given, self.logout_sid(handle, key).encode())
            for key in self._sealer.keys
        )

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
                headers={"set-cookie": self._expired_cookie(), "cache-control": "no-store"},
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
                await self._unavailable(send, error)
                return
        if endpoint is not None:
            await endpoint(scope, receive, send)
            return
        if route is not None:
            await self._proxy(scope, receive, send, route)
            return
        if self.app is not None:
            await self.app(scope, receive, send)
            return
        await _json(send, 404, {"error": "not_found"})

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

    # -- endpoints ------------------------------------------------------------------------

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the browser to the provider (code + PKCE + state + nonce); what the callback
        needs to finish travels in a sealed, short-lived cookie named after this login's
        state, so several tabs may log in at once and nothing is stored for a login that is
        never finished."""
        origin = _own_origin(scope)
        back = safe_return_to(_query(scope).get("returnTo") or "/", origin)
        if back is None:
            await _json(send, 400, {"error": "invalid_return_to"})
            return
        if self.metadata is None:  # made with a token_url or a refresher, not an issuer
            await _json(send, 404, {"error": "login_not_configured"})
            return
        try:
            request = AuthorizationRequest.start(
                self.metadata,
                client_id=self.client_id,
                redirect_uri=self.redirect_uri or f"{origin}{self.prefix}/callback",
                scope=self.scope,
                params=self.authorize_params,
            )
        except LoginFailed as error:
            await _json(send, 500, {"error": error.error})
            return
        saved = request.to_dict()
        saved["url"] = ""  # the browser carries it once, in the Location header
        pending = {"request": saved, "return_to": back, "started_at": self.clock()}
        cookie = cookie_header(
            self._login_cookie_name(request.state),
            self._seal_cookie(pending, "login"),
            max_age=int(LOGIN_TIMEOUT),
            same_site="lax",  # the provider's redirect back is a top-level GET: Lax sends it
            secure=self.secure_cookies,
        )
        headers = [(b"set-cookie", cookie.encode())]
        # A page that sends the browser to /login over and over must not pile up cookies until
        # its requests grow too large to serve: past a few pending logins, the older go.
        pending_logins = _cookie_names(scope, f"{self.cookie_name}-login-")
        if len(pending_logins) >= MAX_PENDING_LOGINS:
            for name in pending_logins:
                forget = expired_cookie_header(name, same_site="lax", secure=self.secure_cookies)
                headers.append((b"set-cookie", forget.encode()))
        await _redirect(send, request.url, headers)

    async def _callback(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = _query(scope)
        state = params.get("state", "")
        cookie_name = self._login_cookie_name(state)
        forget = expired_cookie_header(cookie_name, same_site="lax", secure=self.secure_cookies)
        headers = [(b"set-cookie", forget.encode())]
        sealed = _cookie(scope, cookie_name) if state else None
        pending = None if sealed is None else self._open_cookie(sealed, "login")
        started = None if pending is None else pending.get("started_at")
        if (
            pending is None
            or not isinstance(started, (int, float))
            or not 0 <= self.clock() - started <= LOGIN_TIMEOUT
        ):
            await _json(send, 400, {"error": "login_expired"}, headers)
            return
        # Checked again (a login cookie sealed by an earlier version may hold what is now
        # refused), and made the Location now: no session is started for an answer that
        # could not be sent.
        back = pending.get("return_to")
        back = safe_return_to(back, _own_origin(scope)) if isinstance(back, str) else None
        if back is None:
            await _json(send, 400, {"error": "invalid_return_to"}, headers)
            return
        try:
            request = AuthorizationRequest.from_dict({**pending["request"], "url": ""})
            code = request.code_from(params)
            tokens = await request.aexchange(
                code,
                self._client(),
                verify=self.verify,
                allow_insecure_http=self.allow_insecure_http,
                clock=self.clock,
            )
            claims = tokens.id_claims()
        except (LoginFailed, TokenResponseError, ValueError, TypeError, KeyError) as error:
            code_name = getattr(error, "error", "invalid_login")
            logger.warning(
                "login failed: %s", error if isinstance(error, LoginFailed) else code_name
            )
            await _json(send, 400, {"error": code_name}, headers)
            return
        # A new session id at every login: an id planted before (fixation) or left from an
        # earlier login ends here.
        try:
            previous = await self.current_session(scope)
            if previous is not None:
                await self.end_session(previous.handle)
            session_id, _ = await self.start_session(tokens, _shown_claims(claims))
        except StoreError as error:
            await self._unavailable(send, error)
            return
        headers.append((b"set-cookie", self.session_cookie(session_id).encode()))
        await _redirect(send, back, headers)

    def _client(self) -> ClientAuth:
        client = getattr(self.refresher, "client", None)
        if not isinstance(client, ClientAuth):
            raise LoginFailed("invalid_client", "the refresher has no client to log in with")
        return client

    def _login_cookie_name(self, state: str) -> str:
        tag = hashlib.sha256(state.encode("utf-8", "replace")).hexdigest()[:16]
        return f"{self.cookie_name}-login-{tag}"

    def _seal_cookie(self, document: Mapping[str, Any], purpose: str) -> str:
        plain = json.dumps(document, separators=(",", ":")).encode()
        sealed = self._sealer.seal(plain, context=f"freshtoken bff {purpose}")
        packed = json.dumps([sealed["nonce"], sealed["ciphertext"]], separators=(",", ":"))
        return base64.urlsafe_b64encode(packed.encode()).decode().rstrip("=")

    def _open_cookie(self, value: str, purpose: str) -> dict[str, Any] | None:
        """The sealed document, or None for anything not sealed by this BFF's key."""
        try:
            packed = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
            nonce, ciphertext = packed
            sealed = {"alg": "A256GCM", "kdf": "raw", "nonce": nonce, "ciphertext": ciphertext}
            plain = self._sealer.open(sealed, context=f"freshtoken bff {purpose}", where="cookie")
            document = json.loads(plain)
        except (ValueError, TypeError, RecursionError, StoreError):
            return None
        return document if isinstance(document, dict) else None

    async def _user(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._csrf(scope):
            await _json(send, 403, {"error": "csrf"})
            return
        try:
            session = await self.current_session(scope)
        except StoreError as error:
            await self._unavailable(send, error)
            return
        if session is None:
            await _json(send, 200, {"authenticated": False})
            return
        await _json(
            send,
            200,
            {
                "authenticated": True,
                "claims": dict(session.claims),
                "logout_url": f"{self.prefix}/logout?sid={self.logout_sid(session.handle)}",
            },
        )

    async def _logout(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        query = _query(scope)
        try:
            session = await self.current_session(scope)
        except StoreError as error:
            await self._unavailable(send, error)
            return
        sid = query.get("sid")
        by_link = (
            method == "GET"
            and session is not None
            and sid is not None
            and self._logout_sid_ok(session.handle, sid)
        )
        if not by_link and not (method == "POST" and self._csrf(scope)):
            await _json(send, 403, {"error": "csrf"})
            return
        origin = _own_origin(scope)
        back = safe_return_to(query.get("returnTo") or self.post_logout_redirect, origin)
        if back is None:
            await _json(send, 400, {"error": "invalid_return_to"})
            return
        id_token: str | None = None
        if session is not None:
            id_token = await self._revoke(session.handle)
            await self.end_session(session.handle)
        target = self._end_session_redirect(origin + back, id_token) or back
        headers = [(b"set-cookie", self._expired_cookie().encode())]
        if method == "GET":
            await _redirect(send, target, headers)
        else:
            await _json(send, 200, {"redirect": target}, headers)

    def _end_session_redirect(self, back: str, id_token: str | None) -> str | None:
        """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0), when offered."""
        if self.end_session_url is None:
            return None
        params = {"client_id": self.client_id, "post_logout_redirect_uri": back}
        if id_token is not None:
            params["id_token_hint"] = id_token
        separator = "&" if "?" in self.end_session_url else "?"
        return self.end_session_url + separator + str(httpx.QueryParams(params))

    async def _revoke(self, handle: str) -> str | None:
        """Revoke the session's refresh token (RFC 7009); returns its ID token, if any, for
        the end-session hint. A failure is logged: the local logout goes on regardless."""
        try:
            stored = await self.sessions.token_store(handle).aload()
        except StoreError as error:
            logger.warning("logout: cannot read the session's tokens to revoke them: %s", error)
            return None
        if stored is None:
            return None
        tokens = stored.tokens
        id_token = getattr(tokens, "id_token", None)
        if self.revocation_url is None or tokens.refresh_token is None:
            return id_token
        try:
            client = self._client()
        except LoginFailed:
            logger.warning("logout: the refresher has no client to revoke the refresh token with")
            return id_token
        request = client.request(
            self.revocation_url,
            {"token": tokens.refresh_token, "token_type_hint": "refresh_token"},
            {},
        )
        try:
            response = await self._exchange(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        except httpx.HTTPError as error:
            logger.warning("logout: revocation failed: %s", type(error).__name__)
            return id_token
        if response.status_code != 200:
            logger.warning("logout: the revocation endpoint answered %d", response.status_code)
        return id_token

    # -- the proxy ------------------------------------------------------------------------

    async def _proxy(self, scope: Scope, receive: Receive, send: Send, route: Route) -> None:
        inbound = Inbound(
            scope["headers"],
            cookie_name=self._cookie_bytes,
            csrf_header=self._csrf_bytes,
            csrf_value=self._csrf_value_bytes,
        )
        query: bytes = scope.get("query_string", b"")
        method: str = scope["method"]
        if not method_allowed(method, inbound.overrides, query):
            allow = [(b"allow", ALLOWED_METHODS.encode())]
            await _json(send, 405, {"error": "method_not_allowed"}, allow)
            return
        if not inbound.csrf:
            await _json(send, 403, {"error": "csrf"})
            return
        raw_path = scope.get("raw_path")
        # ASGI servers may leave raw_path out: then the decoded path, encoded again (an
        # encoded slash has become a slash, so its dot segments are seen and refused).
        path = raw_path.decode("latin-1") if raw_path else uri_encoded(scope["path"])
        target = self.routes.target(route, path.split("?", 1)[0], query)
        if target is None:
            await _json(send, 400, {"error": "invalid_path"})
            return
        session_id = inbound.session_id
        handle = None
        if session_id is not None and valid_session_id(session_id):
            handle = self._handle_of(session_id)
            try:
                alive = await self.sessions.alive(handle, now=self.clock(), idle=self.idle_timeout)
            except StoreError as error:
                await self._unavailable(send, error)
                return
            if not alive:
                handle = None
        if handle is None:
            await self._login_required(send, None)
            return
        if not self.calls.enter(handle):
            await _json(send, 429, {"error": "too_many_calls"}, [(b"retry-after", b"1")])
            return
        slot = _Slot(self.calls, handle)
        try:
            await self._forward(scope, receive, send, slot, inbound=inbound, target=target)
        finally:
            slot.leave()

    def _handle_of(self, session_id: str) -> str:
        """handle_of(), remembered for the sessions that call now (a hash per call saved)."""
        handles = self._handles
        handle = handles.get(session_id)
        if handle is None:
            if len(handles) >= self.max_warm_sessions:
                handles.clear()
            handle = handles[session_id] = handle_of(session_id)
        return handle

    async def _tokens(self, manager: TokenManager, handle: str, send: Send) -> TokenSet | None:
        """The session's tokens to send, waiting at most ``refresh_wait`` for a refresh; None
        once the browser has its answer (401 login_required, or 503 to come back later)."""
        tokens = manager.cached_tokens()
        if tokens is not None:
            return tokens
        try:
            with anyio.move_on_after(self.refresh_wait):
                return await manager.aget_tokens()
        except (SessionExpired, UnreadableSession):
            await self._login_required(send, handle)
            return None
        except AuthError as error:  # RefreshFailed, StoreError, DPoPError...: never a 500
            await self._unavailable(send, error)
            return None
        await self._still_refreshing(send)
        return None

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        slot: _Slot,
        *,
        inbound: Inbound,
        target: str,
    ) -> None:
        handle = slot.handle
        manager = self.manager(handle)
        # refresh_wait bounds the call's waits for refreshes, all together.
        deadline = anyio.current_time() + self.refresh_wait
        tokens = manager.cached_tokens() or await self._tokens(manager, handle, send)
        if tokens is None:
            return
        headers = inbound.forward
        body: bytes | None = None
        rest: AsyncIterator[bytes] | None = None
        if inbound.has_body:
            try:
                body, rest = await read_replayable(_body_chunks(receive), self.replay_limit)
            except ConnectionAbortedError:
                return  # the browser went away before sending its body: nobody to answer
        method = scope["method"]
        # The auth decisions are the manager's ResourceCall, as in every client integration:
        # a rejected token is refreshed (or its newer successor taken) and the call sent again,
        # at most MOST_SENDS tokens in all.
        call = manager.call(method, target)
        attempt: Attempt | None = call.first(tokens)
        content: tuple[bytes | None, AsyncIterator[bytes] | None] = (body, rest)
        rejected: bytes | None = None  # a 401's body, read while its refresh is waited for
        while True:
            assert attempt is not None
            response = await self._send_upstream(method, target, headers, attempt, content)
            if response is None:
                await _json(send, 502, {"error": "bad_gateway"})
                return
            if call.settled(response.status):
                break  # the hot path: nothing to read
            answer_headers = response.headers
            decision = call.answer(
                response.status,
                answer_headers.getall("WWW-Authenticate", []),
                answer_headers.get("DPoP-Nonce"),
            )
            if not isinstance(decision, Rejected):
                attempt = decision
            else:
                replacement = None
                unavailable: AuthError | None = None
                length = response.content_length
                if length is not None and length <= _SMALL_ANSWER and rejected is None:
                    # Read now: the connection goes back to the pool while this call waits
                    # for the refresh (during an outage, waiting calls held them all).
                    rejected = await response.read()
                try:
                    with anyio.move_on_at(deadline) as waited:
                        replacement = await manager.ahandle_rejection(decision.tokens)
                except SessionExpired:
                    response.close()
                    await self._login_required(send, handle)
                    return
                except AuthError as error:  # RefreshFailed, StoreError, DPoPError...
                    unavailable = error
                if unavailable is not None or waited.cancelled_caught:
                    # The token was rejected and no new one can be had now (the provider is
                    # down, or slower than refresh_wait): come back later, not "log in
                    # again", which an app may read the API's 401 as. The refresh goes on.
                    response.close()
                    if unavailable is not None:
                        await self._unavailable(send, unavailable)
                    else:
                        await self._still_refreshing(send)
                    return
                attempt = call.replaced(replacement)
            # A body streamed through cannot be sent again: its 401 goes back to the browser
            # (after the refresh above, so that its next call succeeds).
            if attempt is None or rest is not None:
                break
            response.release()
            content = (body, None)
            rejected = None
        await _stream(send, response, slot, rejected)

    async def _send_upstream(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        attempt: Attempt,
        body: tuple[bytes | None, AsyncIterator[bytes] | None],
    ) -> aiohttp.ClientResponse | None:
        first, rest = body
        content: bytes | AsyncIterator[bytes] | None = first
        if rest is not None and first is not None:
            content = chained(first, rest)
        authorized = [*headers, ("authorization", attempt.authorization)]
        if attempt.proof is not None:
            authorized.append(("dpop", attempt.proof))
        try:
            return await self._upstream.send(method, url, authorized, content)
        except (*UPSTREAM_ERRORS, ConnectionAbortedError) as error:
            logger.warning("proxy: %s %s failed: %s", method, _redacted(url), type(error).__name__)
            return None

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` (a revocation) with the shared httpx transport; the answer's body
        is still to be read."""
        request.extensions["timeout"] = self._timeout.as_dict()
        response = await self._shared.handle_async_request(request)
        response.request = request
        return response

    # -- answers --------------------------------------------------------------------------

    def _csrf(self, scope: Scope) -> bool:
        return csrf_ok(_headers(scope), self.csrf_header.lower(), self.csrf_value)

    def _expired_cookie(self) -> str:
        return expired_cookie_header(
            self.cookie_name, same_site=self.same_site, secure=self.secure_cookies
        )

    async def _login_required(self, send: Send, handle: str | None) -> None:
        if handle is not None:
            with contextlib.suppress(StoreError):
                await self.end_session(handle)
        await _json(
            send,
            401,
            {"error": "login_required"},
            [(b"set-cookie", self._expired_cookie().encode())],
        )

    async def _unavailable(self, send: Send, error: Exception) -> None:
        logger.warning("bff: %s", error)
        retry_after = getattr(error, "retry_after", None)
        if not isinstance(retry_after, (int, float)) or not math.isfinite(retry_after):
            retry_after = 1  # come back soon: the browser's session is kept
        headers = [(b"retry-after", str(max(1, math.ceil(retry_after))).encode())]
        await _json(send, 503, {"error": "temporarily_unavailable"}, headers)

    async def _still_refreshing(self, send: Send) -> None:
        """The session's refresh takes longer than refresh_wait: come back in a second."""
        await _json(send, 503, {"error": "temporarily_unavailable"}, [(b"retry-after", b"1")])

    def __repr__(self) -> str:
        return f"BFF(client_id={self.client_id!r}, prefix={self.prefix!r}, {self.sessions!r})"


# -- ASGI helpers ---------------------------------------------------------------------------


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
    }


def _cookie(scope: Scope, name: str) -> str | None:
    for header, value in scope["headers"]:
        if header.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, _, found = part.strip().partition("=")
            if key == name:
                return str(found)
    return None


def _cookie_names(scope: Scope, prefix: str) -> list[str]:
    names = []
    for header, value in scope["headers"]:
        if header.lower() == b"cookie":
            for part in value.decode("latin-1").split(";"):
                name = part.strip().partition("=")[0]
                if name.startswith(prefix):
                    names.append(name)
    return names


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return dict(httpx.QueryParams(raw))


def _own_origin(scope: Scope) -> str:
    scheme = scope.get("scheme", "http")
    host = _headers(scope).get("host")
    if host is None:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    return f"{scheme}://{host}"


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("the browser went away")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _json(
    send: Send, status: int, document: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(document, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 302,
            "headers": [
                (b"location", uri_encoded(location).encode("ascii")),
                (b"cache-control", b"no-store"),
                (b"content-length", b"0"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _stream(
    send: Send, response: aiohttp.ClientResponse, slot: _Slot, read: bytes | None = None
) -> None:
    """Send the upstream response as it arrives (or its body ``read`` already); release it
    (its connection kept) once read to the end, close it otherwise. The call's place is given
    back before the answer's last message goes out: a browser that sends its next call as
    soon as this one ends finds it free."""
    done = False
    try:
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": forwarded_response_headers(response.raw_headers),
            }
        )
        content = response.content
        chunk = b"" if read is None else read
        while read is None:
            chunk = await content.readany()
            if not chunk or content.at_eof():
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        done = True
        slot.leave()
        await send({"type": "http.response.body", "body": chunk})
    finally:
        if done:
            response.release()
        else:
            response.close()


def _shown_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in claims.items() if name not in _PROTOCOL_CLAIMS}


def _redacted(url: str) -> str:
    return url.split("?", 1)[0]


class _Slot:
    """One call's place in its session's [`CallLimit`][], given back exactly once: before
    the answer's last message goes out, or when the call ends otherwise."""

    __slots__ = ("_calls", "_taken", "handle")

    def __init__(self, calls: CallLimit, handle: str) -> None:
        self._calls = calls
        self.handle = handle
        self._taken = True

    def leave(self) -> None:
        if self._taken:
            self._taken = False
            self._calls.leave(self.handle)


class _SharedTransport(httpx.AsyncBaseTransport):
    """One connection pool for every user_client: a client closing does not close it."""

    def __init__(self, transport: httpx.AsyncHTTPTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        """Kept open: the BFF closes it ([`close()`][close])."""

    async def close(self) -> None:
        await self._transport.aclose()
