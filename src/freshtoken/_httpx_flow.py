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
from ._engine.resource import Attempt, Rejected
from .errors import ReplayError

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
        flow = self._flow(request, manager.get_tokens())
        step = next(flow)
        try:
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
        flow = self._flow(request, manager.cached_tokens() or await manager.aget_tokens())
        step = next(flow)
        try:
            while True:
                if isinstance(step, Rejected):
                    step = flow.send(await manager.ahandle_rejection(step.tokens))
                elif isinstance(step, StepUp):
                    step = flow.send(await manager.arefresh())
                else:
                    step = flow.send((yield step))
        except StopIteration:
            return

    def _flow(self, request: Any, tokens: TokenSet) -> _Flow:
        manager = self.manager
        call = manager.call(request.method, request.url)
        attempt: Attempt | None = call.first(tokens)
        stepped = False
        while attempt is not None:
            _authorize(request, attempt)
            response = yield request
            if response.status_code != 403 and call.settled(response.status_code):
                return  # the hot path: no header to read (a 403 may ask for a step-up)
            sent = response.request
            if sent.headers.get("Authorization") != attempt.authorization:
                # httpx follows redirects inside the flow: a 401 from a hop that went out
                # without our token (another origin) says nothing about it.
                return
            if sent is not request and manager.dpop is not None:
                # A hop of the same origin carried the first request's proof: send it again
                # with its own (once). Its 401 says nothing about the token.
                attempt = call.hop(
                    sent.method,
                    str(sent.url),
                    response.status_code,
                    response.headers.get("DPoP-Nonce"),
                )
                request = sent
                continue
            challenges = response.headers.get_list("WWW-Authenticate")
            decision = call.answer(
                response.status_code, challenges, response.headers.get("DPoP-Nonce")
            )
            if isinstance(decision, Rejected):
                _learn(manager, challenges, decision.tokens)
                decision = call.replaced((yield decision))
            elif decision is None and not stepped and _wants_step_up(manager, response, attempt):
                stepped = True
                stepped_up: TokenSet | None = yield StepUp(attempt.tokens)
                if (
                    stepped_up is not None
                    and stepped_up.access_token != attempt.tokens.access_token
                ):
                    decision = Attempt(stepped_up, stepped_up.authorization, None)
            if decision is not None:
                self._ensure_replayable(request, response)
            attempt = decision

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
