"""The auth flow of httpx and of httpx2, written once.

httpx2 (Pydantic's successor of httpx, which the MCP SDK and FastMCP use) keeps httpx's
``Auth`` protocol, requests and responses, but its classes are its own: an ``httpx.Auth`` is
no ``httpx2.Auth``. So each library gets its ``TokenAuth`` (``freshtoken.httpx``,
``freshtoken.httpx2``), and both are this mixin over their library's ``Auth``: the requests and
responses are only read through the attributes the two share. The one library-specific piece,
the class of a replayable body, is ``_byte_stream``.

The flow is a thin loop over the request's ``ResourceCall`` (``freshtoken/_engine/resource.py``),
which decides every retry. It yields the requests to send, the rejected tokens when it needs
the manager's answer, and, for a [`for_resource()`][freshtoken.for_resource] manager, a
[`StepUp`][] when a 403 ``insufficient_scope`` calls for a login with more scope (once per
request, never a refresh); the sync and async entry points differ only in how they ask the
manager (one blocks, the other awaits).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Iterable
from typing import Any, NamedTuple, TypeAlias

from ._core.policy import Destinations
from ._core.tokens import TokenSet
from ._engine.manager import TokenManager
from ._engine.resource import Attempt, Rejected, ResourceCall, bearer_settled
from .errors import AuthError, ReplayError

__all__ = ["HTTPXFlow", "StepUp"]


class StepUp(NamedTuple):
    """A 403 ``insufficient_scope`` that a login with more scope may cure: ask the manager
    for a forced refresh (the resource refresher then logs in for the union of scopes)."""

    tokens: TokenSet


# What the flow yields: a request to send (it receives the response), the tokens the API
# rejected (it receives the manager's replacement, or None), or a step-up (it receives the
# new tokens, or None).
_Flow: TypeAlias = Generator[Any, Any, None]


class HTTPXFlow:
    """``TokenAuth`` of httpx and httpx2 (see the module docstring)."""

    _byte_stream: type = object

    def __init__(
        self,
        manager: TokenManager,
        *,
        origins: Iterable[str] | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        self.manager = manager
        self.destinations = Destinations(origins, allow_insecure_http=allow_insecure_http)

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        if not self._applies(request):
            yield request
            return
        manager = self.manager
        tokens = manager.get_tokens()
        if manager.dpop is None:
            request.headers["Authorization"] = tokens.authorization
            response = yield request
            status = response.status_code
            if status != 403 and bearer_settled(manager, status):
                return  # the hot path: one generator, no call made, no header read
            call = manager.call(request.method, request.url)
            attempt = call.first(tokens)
        else:
            call = manager.call(request.method, request.url)
            attempt = call.first(tokens)
            _authorize(request, attempt)
            response = yield request
        flow = self._answers(request, call, attempt, response)
        try:
            step = next(flow)
            while True:
                if isinstance(step, Rejected):
                    step = flow.send(manager.handle_rejection(step.tokens))
                elif isinstance(step, StepUp):
                    step = flow.send(manager.refresh())
                else:
                    step = flow.send((yield step))
        except StopIteration:
            return

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        if not self._applies(request):
            yield request
            return
        manager = self.manager
        tokens = manager.cached_tokens() or await manager.aget_tokens()
        if manager.dpop is None:
            request.headers["Authorization"] = tokens.authorization
            response = yield request
            status = response.status_code
            if status != 403 and bearer_settled(manager, status):
                return  # the hot path: one generator, no call made, no header read
            call = manager.call(request.method, request.url)
            attempt = call.first(tokens)
        else:
            call = manager.call(request.method, request.url)
            attempt = call.first(tokens)
            _authorize(request, attempt)
            response = yield request
        flow = self._answers(request, call, attempt, response, late_tokens=True)
        try:
            step = next(flow)
            while True:
                if isinstance(step, Rejected):
                    step = flow.send(await manager.ahandle_rejection(step.tokens))
                elif isinstance(step, StepUp):
                    step = flow.send(await manager.arefresh())
                else:
                    step = flow.send((yield step))
        except StopIteration:
            return

    def _answers(
        self,
        request: Any,
        call: ResourceCall,
        attempt: Attempt,
        response: Any,
        *,
        late_tokens: bool = False,
    ) -> _Flow:
        """The flow from the first answer that is not settled on: every retry it leads to."""
        manager = self.manager
        stepped = False
        retry: _LateTokens | None = None
        while True:
            decision: Attempt | None
            sent = response.request
            if sent.headers.get("Authorization") != attempt.authorization:
                # httpx follows redirects inside the flow: a 401 from a hop that went out
                # without our token (another origin) says nothing about it.
                return
            if sent is not request and manager.dpop is not None:
                # A hop of the same origin carried the first request's proof: send it again
                # with its own (once). Its 401 says nothing about the token.
                decision = call.hop(
                    sent.method,
                    str(sent.url),
                    response.status_code,
                    response.headers.get("DPoP-Nonce"),
                )
                request = sent
            else:
                challenges = response.headers.get_list("WWW-Authenticate")
                answer = call.answer(
                    response.status_code, challenges, response.headers.get("DPoP-Nonce")
                )
                if isinstance(answer, Rejected):
                    _learn(manager, challenges, answer.tokens)
                    decision = call.replaced((yield answer))
                else:
                    decision = answer
                    if (
                        decision is None
                        and not stepped
                        and _wants_step_up(manager, response, attempt)
                    ):
                        stepped = True
                        stepped_up: TokenSet | None = yield StepUp(attempt.tokens)
                        if (
                            stepped_up is not None
                            and stepped_up.access_token != attempt.tokens.access_token
                        ):
                            decision = Attempt(stepped_up, stepped_up.authorization, None)
                if decision is not None:
                    self._ensure_replayable(request, response)
                    if late_tokens and retry is None and manager.dpop is None:
                        # A retry may wait in httpx's pool longer than its token lives (a
                        # storm of requests on one client): it leaves with the newest tokens.
                        retry = _LateTokens(manager, call, request)
            if decision is None:
                return
            attempt = decision
            _authorize(request, attempt)
            if retry is not None:
                retry.attempt = attempt
            response = yield request
            if retry is not None:
                attempt = retry.ended(request)
            status = response.status_code
            if status != 403 and call.settled(status):
                return

    def _applies(self, request: Any) -> bool:
        url = request.url
        destinations = self.destinations
        path = url.raw_path.partition(b"?")[0].decode("ascii") if destinations.has_paths else "/"
        return destinations.allows(url.scheme, url.host, url.port, path)

    def _ensure_replayable(self, request: Any, response: Any) -> None:
        # httpx keeps bytes, JSON, forms and multipart as re-iterable streams; only a caller's
        # iterator is one-shot, and buffering it behind the caller's back could exhaust memory.
        stream = request.stream
        if isinstance(stream, self._byte_stream) or type(stream).__name__ == "MultipartStream":
            return
        raise ReplayError(
            f"{request.method} {request.url.copy_with(query=None)} was rejected with "
            f"{response.status_code} and its body is a one-shot stream, so it was not retried; "
            "the token has been refreshed: send the request again"
        )

    def __repr__(self) -> str:
        return f"TokenAuth({self.manager!r}, origins={self.destinations!r})"


class _LateTokens:
    """httpcore's ``trace`` extension on a Bearer retry (async only): when its headers are
    about to be written, after any wait for a pooled connection, tokens newer than the ones
    it was given go in their place (``ResourceCall.swapped()``)."""

    __slots__ = ("_call", "_manager", "_previous", "attempt")

    def __init__(self, manager: TokenManager, call: Any, request: Any) -> None:
        self._manager = manager
        self._call = call
        self._previous = request.extensions.get("trace")
        request.extensions = {**request.extensions, "trace": self._trace}
        self.attempt: Attempt | None = None

    async def _trace(self, name: str, info: dict[str, Any]) -> None:
        attempt = self.attempt
        if attempt is not None and name.endswith(".send_request_headers.started"):
            manager = self._manager
            try:
                # FRESH tokens at once; else the current ones (a STALE token still works, and
                # starts its refresh), waiting only for a refresh of an expired one.
                tokens = manager.cached_tokens() or await manager.aget_tokens()
            except AuthError:
                tokens = None  # sent as it was: its answer says what comes next
            if tokens is not None:
                self._swap(attempt, tokens, info.get("request"))
        if self._previous is not None:
            await self._previous(name, info)

    def _swap(self, attempt: Attempt, tokens: TokenSet, sent: Any) -> None:
        if tokens.access_token == attempt.tokens.access_token:
            return
        swapped = self._call.swapped(tokens)
        if swapped is None or sent is None:
            return
        value = swapped.authorization.encode("latin-1")
        sent.headers[:] = [
            (name, value if name.lower() == b"authorization" else old) for name, old in sent.headers
        ]
        self.attempt = swapped

    def ended(self, request: Any) -> Attempt:
        """The attempt that went out; ``request``'s headers say so too (the flow reads them)."""
        attempt = self.attempt
        assert attempt is not None  # set by the flow before each send
        request.headers["Authorization"] = attempt.authorization
        return attempt


def _authorize(request: Any, attempt: Attempt) -> None:
    headers = request.headers
    headers["Authorization"] = attempt.authorization
    if attempt.proof is not None:
        headers["DPoP"] = attempt.proof


def _learn(manager: TokenManager, challenges: list[str], rejected: TokenSet) -> None:
    """A resource refresher reads a 401's ``resource_metadata`` and ``scope``, and which
    tokens the API refused."""
    learn = getattr(manager.refresher, "learn", None)
    if learn is not None:
        learn(challenges, rejected)


def _wants_step_up(manager: TokenManager, response: Any, attempt: Attempt) -> bool:
    """A 403 ``insufficient_scope`` to a Bearer request of a manager that can log in for more
    scope (a [`for_resource()`][freshtoken.for_resource] manager): its refresher decides."""
    if response.status_code != 403 or manager.dpop is not None:
        return False
    step_up = getattr(manager.refresher, "step_up", None)
    if step_up is None:
        return False
    return bool(step_up(response.headers.get_list("WWW-Authenticate"), attempt.tokens))
