"""The BFF's own endpoints under its prefix: ``login`` and ``callback`` (the authorization
code flow, with PKCE, state and nonce), ``user`` (who is logged in) and ``logout`` (revoke,
forget, and RP-initiated logout at the provider when it offers one)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from .._core.tokens import TokenResponseError
from .._logins.authorization import AuthorizationRequest
from .._oauth.client_auth import ClientAuth
from ..errors import LoginFailed, StoreError
from ._asgi import (
    Receive,
    Scope,
    Send,
    cookie_names,
    cookie_of,
    own_origin,
    query_of,
    send_json,
    send_redirect,
    send_unavailable,
)
from ._security import cookie_header, expired_cookie_header, safe_return_to

if TYPE_CHECKING:
    from ._app import BFF

__all__ = ["callback", "login", "logout", "user"]

logger = logging.getLogger("freshtoken.bff")

LOGIN_TIMEOUT = 600.0  # seconds a user may spend at the provider's login page
MAX_PENDING_LOGINS = 4  # login cookies a browser may hold at once (tabs logging in)
# ID token claims that describe the login, not the user: not shown by /user.
_PROTOCOL_CLAIMS = frozenset({"nonce", "at_hash", "c_hash", "s_hash", "azp", "auth_time"})


async def login(bff: BFF, scope: Scope, receive: Receive, send: Send) -> None:
    """Send the browser to the provider (code + PKCE + state + nonce); what the callback
    needs to finish travels in a sealed, short-lived cookie named after this login's
    state, so several tabs may log in at once and nothing is stored for a login that is
    never finished."""
    origin = own_origin(scope)
    back = safe_return_to(query_of(scope).get("returnTo") or "/", origin)
    if back is None:
        await send_json(send, 400, {"error": "invalid_return_to"})
        return
    if bff.metadata is None:  # made with a token_url or a refresher, not an issuer
        await send_json(send, 404, {"error": "login_not_configured"})
        return
    try:
        request = AuthorizationRequest.start(
            bff.metadata,
            client_id=bff.client_id,
            redirect_uri=bff.redirect_uri or f"{origin}{bff.prefix}/callback",
            scope=bff.scope,
            params=bff.authorize_params,
        )
    except LoginFailed as error:
        await send_json(send, 500, {"error": error.error})
        return
    saved = request.to_dict()
    saved["url"] = ""  # the browser carries it once, in the Location header
    pending = {"request": saved, "return_to": back, "started_at": bff.clock()}
    cookies = bff._cookies
    cookie = cookie_header(
        cookies.login_name(request.state),
        cookies.seal(pending, "login"),
        max_age=int(LOGIN_TIMEOUT),
        same_site="lax",  # the provider's redirect back is a top-level GET: Lax sends it
        secure=bff.secure_cookies,
    )
    headers = [(b"set-cookie", cookie.encode())]
    # A page that sends the browser to /login over and over must not pile up cookies until
    # its requests grow too large to serve: past a few pending logins, the older go.
    pending_logins = cookie_names(scope, cookies.login_prefix())
    if len(pending_logins) >= MAX_PENDING_LOGINS:
        for name in pending_logins:
            forget = expired_cookie_header(name, same_site="lax", secure=bff.secure_cookies)
            headers.append((b"set-cookie", forget.encode()))
    await send_redirect(send, request.url, headers)


async def callback(bff: BFF, scope: Scope, receive: Receive, send: Send) -> None:
    params = query_of(scope)
    state = params.get("state", "")
    cookie_name = bff._cookies.login_name(state)
    forget = expired_cookie_header(cookie_name, same_site="lax", secure=bff.secure_cookies)
    headers = [(b"set-cookie", forget.encode())]
    sealed = cookie_of(scope, cookie_name) if state else None
    pending = None if sealed is None else bff._cookies.open(sealed, "login")
    started = None if pending is None else pending.get("started_at")
    if (
        pending is None
        or not isinstance(started, (int, float))
        or not 0 <= bff.clock() - started <= LOGIN_TIMEOUT
    ):
        await send_json(send, 400, {"error": "login_expired"}, headers)
        return
    # Checked again (a login cookie sealed by an earlier version may hold what is now
    # refused), and made the Location now: no session is started for an answer that
    # could not be sent.
    back = pending.get("return_to")
    back = safe_return_to(back, own_origin(scope)) if isinstance(back, str) else None
    if back is None:
        await send_json(send, 400, {"error": "invalid_return_to"}, headers)
        return
    try:
        request = AuthorizationRequest.from_dict({**pending["request"], "url": ""})
        code = request.code_from(params)
        tokens = await request.aexchange(
            code,
            client_of(bff),
            verify=bff.verify,
            allow_insecure_http=bff.allow_insecure_http,
            clock=bff.clock,
        )
        claims = tokens.id_claims()
    except (LoginFailed, TokenResponseError, ValueError, TypeError, KeyError) as error:
        code_name = getattr(error, "error", "invalid_login")
        logger.warning("login failed: %s", error if isinstance(error, LoginFailed) else code_name)
        await send_json(send, 400, {"error": code_name}, headers)
        return
    # A new session id at every login: an id planted before (fixation) or left from an
    # earlier login ends here.
    try:
        previous = await bff.current_session(scope)
        if previous is not None:
            await bff.end_session(previous.handle)
        session_id, _ = await bff.start_session(tokens, _shown_claims(claims))
    except StoreError as error:
        await send_unavailable(send, error)
        return
    headers.append((b"set-cookie", bff.session_cookie(session_id).encode()))
    await send_redirect(send, back, headers)


def client_of(bff: BFF) -> ClientAuth:
    """The client that logs in (and revokes): the refresher's."""
    client = getattr(bff.refresher, "client", None)
    if not isinstance(client, ClientAuth):
        raise LoginFailed("invalid_client", "the refresher has no client to log in with")
    return client


async def user(bff: BFF, scope: Scope, receive: Receive, send: Send) -> None:
    if not bff._csrf(scope):
        await send_json(send, 403, {"error": "csrf"})
        return
    try:
        session = await bff.current_session(scope)
    except StoreError as error:
        await send_unavailable(send, error)
        return
    if session is None:
        await send_json(send, 200, {"authenticated": False})
        return
    await send_json(
        send,
        200,
        {
            "authenticated": True,
            "claims": dict(session.claims),
            "logout_url": f"{bff.prefix}/logout?sid={bff.logout_sid(session.handle)}",
        },
    )


async def logout(bff: BFF, scope: Scope, receive: Receive, send: Send) -> None:
    method = scope["method"]
    query = query_of(scope)
    try:
        session = await bff.current_session(scope)
    except StoreError as error:
        await send_unavailable(send, error)
        return
    sid = query.get("sid")
    by_link = (
        method == "GET"
        and session is not None
        and sid is not None
        and bff._cookies.logout_sid_ok(session.handle, sid)
    )
    if not by_link and not (method == "POST" and bff._csrf(scope)):
        await send_json(send, 403, {"error": "csrf"})
        return
    origin = own_origin(scope)
    back = safe_return_to(query.get("returnTo") or bff.post_logout_redirect, origin)
    if back is None:
        await send_json(send, 400, {"error": "invalid_return_to"})
        return
    id_token: str | None = None
    if session is not None:
        id_token = await _revoke(bff, session.handle)
        await bff.end_session(session.handle)
    target = _end_session_redirect(bff, origin + back, id_token) or back
    headers = [(b"set-cookie", bff._cookies.expired().encode())]
    if method == "GET":
        await send_redirect(send, target, headers)
    else:
        await send_json(send, 200, {"redirect": target}, headers)


def _end_session_redirect(bff: BFF, back: str, id_token: str | None) -> str | None:
    """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0), when offered."""
    if bff.end_session_url is None:
        return None
    params = {"client_id": bff.client_id, "post_logout_redirect_uri": back}
    if id_token is not None:
        params["id_token_hint"] = id_token
    separator = "&" if "?" in bff.end_session_url else "?"
    return bff.end_session_url + separator + str(httpx.QueryParams(params))


async def _revoke(bff: BFF, handle: str) -> str | None:
    """Revoke the session's refresh token (RFC 7009); returns its ID token, if any, for
    the end-session hint. A failure is logged: the local logout goes on regardless."""
    try:
        stored = await bff.sessions.token_store(handle).aload()
    except StoreError as error:
        logger.warning("logout: cannot read the session's tokens to revoke them: %s", error)
        return None
    if stored is None:
        return None
    tokens = stored.tokens
    id_token = getattr(tokens, "id_token", None)
    if bff.revocation_url is None or tokens.refresh_token is None:
        return id_token
    try:
        client = client_of(bff)
    except LoginFailed:
        logger.warning("logout: the refresher has no client to revoke the refresh token with")
        return id_token
    request = client.request(
        bff.revocation_url,
        {"token": tokens.refresh_token, "token_type_hint": "refresh_token"},
        {},
    )
    try:
        response = await bff._exchange(request)
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


def _shown_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in claims.items() if name not in _PROTOCOL_CLAIMS}
