"""One proxied call, from the browser's request to the API's answer streamed back.

In order: the method and the CSRF header are checked, the path is matched to its route and
refused if it climbs out of it, the session cookie is looked up (401 login_required without a
live session), the session's slot in the [`CallLimit`][freshtoken.bff._proxy.CallLimit] taken
(429 past it), its token taken (waiting at most ``refresh_wait`` for a refresh: 503 with
Retry-After past it, never a 500), and the call sent upstream. The auth decisions after each
answer are the manager's ``ResourceCall``'s, as in every client integration. What is
forwarded both ways is decided in [`_proxy`][freshtoken.bff._proxy].
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import anyio

from .._core.tokens import TokenSet
from .._engine.manager import TokenManager
from .._engine.resource import Attempt, Rejected
from ..errors import AuthError, SessionExpired, StoreError
from ._asgi import (
    Receive,
    Scope,
    Send,
    body_chunks,
    send_json,
    send_still_refreshing,
    send_unavailable,
)
from ._proxy import (
    CallLimit,
    Inbound,
    Route,
    chained,
    forwarded_response_headers,
    read_replayable,
)
from ._security import ALLOWED_METHODS, method_allowed, uri_encoded
from ._sessions import UnreadableSession, valid_session_id
from ._upstream import UPSTREAM_ERRORS

if TYPE_CHECKING:
    from ._app import BFF

__all__ = ["proxy"]

logger = logging.getLogger("freshtoken.bff")

_SMALL_ANSWER = 64 * 1024  # a rejection's body up to this is read before the refresh wait


async def proxy(bff: BFF, scope: Scope, receive: Receive, send: Send, route: Route) -> None:
    """Answer a call under ``route``: forwarded upstream with its session's token, or
    refused with one of the BFF's JSON errors."""
    inbound = Inbound(
        scope["headers"],
        cookie_name=bff._cookie_bytes,
        csrf_header=bff._csrf_bytes,
        csrf_value=bff._csrf_value_bytes,
    )
    query: bytes = scope.get("query_string", b"")
    method: str = scope["method"]
    if not method_allowed(method, inbound.overrides, query):
        allow = [(b"allow", ALLOWED_METHODS.encode())]
        await send_json(send, 405, {"error": "method_not_allowed"}, allow)
        return
    if not inbound.csrf:
        await send_json(send, 403, {"error": "csrf"})
        return
    raw_path = scope.get("raw_path")
    # ASGI servers may leave raw_path out: then the decoded path, encoded again (an
    # encoded slash has become a slash, so its dot segments are seen and refused).
    path = raw_path.decode("latin-1") if raw_path else uri_encoded(scope["path"])
    target = bff.routes.target(route, path.split("?", 1)[0], query)
    if target is None:
        await send_json(send, 400, {"error": "invalid_path"})
        return
    session_id = inbound.session_id
    handle = None
    if session_id is not None and valid_session_id(session_id):
        handle = bff._warm.handle_of(session_id)
        try:
            alive = await bff.sessions.alive(handle, now=bff.clock(), idle=bff.idle_timeout)
        except StoreError as error:
            await send_unavailable(send, error)
            return
        if not alive:
            handle = None
    if handle is None:
        await bff._login_required(send, None)
        return
    if not bff.calls.enter(handle):
        await send_json(send, 429, {"error": "too_many_calls"}, [(b"retry-after", b"1")])
        return
    slot = _Slot(bff.calls, handle)
    try:
        await _forward(bff, scope, receive, send, slot, inbound=inbound, target=target)
    finally:
        slot.leave()


async def _tokens(
    bff: BFF, manager: TokenManager, handle: str, send: Send, deadline: float
) -> TokenSet | None:
    """The session's tokens to send, waiting for a refresh until ``deadline`` at most; None
    once the browser has its answer (401 login_required, or 503 to come back later)."""
    tokens = manager.cached_tokens()
    if tokens is not None:
        return tokens
    try:
        with anyio.move_on_at(deadline):
            return await manager.aget_tokens()
    except (SessionExpired, UnreadableSession):
        await bff._login_required(send, handle)
        return None
    except AuthError as error:  # RefreshFailed, StoreError, DPoPError...: never a 500
        await send_unavailable(send, error)
        return None
    await send_still_refreshing(send)
    return None


async def _forward(
    bff: BFF,
    scope: Scope,
    receive: Receive,
    send: Send,
    slot: _Slot,
    *,
    inbound: Inbound,
    target: str,
) -> None:
    handle = slot.handle
    manager = bff.manager(handle)
    # refresh_wait bounds the call's waits for refreshes, all together, from the first one:
    # a call that never waits (the hot path) never reads the clock.
    deadline: float | None = None
    tokens = manager.cached_tokens()
    if tokens is None:
        deadline = anyio.current_time() + bff.refresh_wait
        tokens = await _tokens(bff, manager, handle, send, deadline)
        if tokens is None:
            return
    headers = inbound.forward
    body: bytes | None = None
    rest: AsyncIterator[bytes] | None = None
    if inbound.has_body:
        try:
            body, rest = await read_replayable(body_chunks(receive), bff.replay_limit)
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
        response = await _send_upstream(bff, method, target, headers, attempt=attempt, body=content)
        if response is None:
            await send_json(send, 502, {"error": "bad_gateway"})
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
            if deadline is None:
                deadline = anyio.current_time() + bff.refresh_wait
            try:
                with anyio.move_on_at(deadline) as waited:
                    replacement = await manager.ahandle_rejection(decision.tokens)
            except SessionExpired:
                response.close()
                await bff._login_required(send, handle)
                return
            except AuthError as error:  # RefreshFailed, StoreError, DPoPError...
                unavailable = error
            if unavailable is not None or waited.cancelled_caught:
                # The token was rejected and no new one can be had now (the provider is
                # down, or slower than refresh_wait): come back later, not "log in
                # again", which an app may read the API's 401 as. The refresh goes on.
                response.close()
                if unavailable is not None:
                    await send_unavailable(send, unavailable)
                else:
                    await send_still_refreshing(send)
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
    bff: BFF,
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    *,
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
        return await bff._upstream.send(method, url, authorized, content)
    except (*UPSTREAM_ERRORS, ConnectionAbortedError) as error:
        logger.warning("proxy: %s %s failed: %s", method, _redacted(url), type(error).__name__)
        return None


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


def _redacted(url: str) -> str:
    return url.split("?", 1)[0]


class _Slot:
    """One call's place in its session's [`CallLimit`][freshtoken.bff._proxy.CallLimit], given
    back exactly once: before the answer's last message goes out, or when the call ends
    otherwise."""

    __slots__ = ("_calls", "_taken", "handle")

    def __init__(self, calls: CallLimit, handle: str) -> None:
        self._calls = calls
        self.handle = handle
        self._taken = True

    def leave(self) -> None:
        if self._taken:
            self._taken = False
            self._calls.leave(self.handle)
