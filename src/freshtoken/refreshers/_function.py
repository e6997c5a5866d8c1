"""``FunctionRefresher``: a function of yours as a refresher."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._core.clock import Clock, system_clock
from .._core.tokens import TokenSet
from .._oauth.http import run_blocking

if TYPE_CHECKING:
    pass

from ._http import _awaited


class FunctionRefresher:
    """Wraps ``function(current) -> TokenSet | dict`` (plain or async) as a refresher.

    A dict is read as a token response. The function signals the end of the session by
    raising [`SessionExpired`][freshtoken.SessionExpired] and a passing failure with
    [`RefreshFailed`][freshtoken.RefreshFailed]; anything else it raises counts as a failure that
    keeps the tokens and is not retried.
    """

    def __init__(
        self,
        function: Callable[[TokenSet | None], TokenSet | Mapping[str, Any]]
        | Callable[[TokenSet | None], Awaitable[TokenSet | Mapping[str, Any]]],
        *,
        can_acquire: bool = False,
    ) -> None:
        self.function = function
        self._can_acquire = can_acquire

    @property
    def can_acquire(self) -> bool:
        return self._can_acquire

    def native_async(self) -> bool:
        """Whether ``arefresh`` awaits an async function (the engine then awaits it)."""
        call = getattr(self.function, "__call__", None)  # noqa: B004 - an async callable object
        return inspect.iscoroutinefunction(self.function) or inspect.iscoroutinefunction(call)

    def refresh(
        self,
        current: TokenSet | None,
        clock: Clock = system_clock,
        *,
        deadline: float | None = None,
    ) -> TokenSet:
        """Call the function; an async one runs on a private event loop of this thread."""
        sent_at = clock()
        result = self.function(current)
        if inspect.isawaitable(result):
            result = run_blocking(_awaited(result))
        return self._tokens(result, sent_at, current)

    async def arefresh(
        self,
        current: TokenSet | None,
        clock: Clock = system_clock,
        *,
        deadline: float | None = None,
    ) -> TokenSet:
        sent_at = clock()
        result = self.function(current)
        if inspect.isawaitable(result):
            result = await result
        return self._tokens(result, sent_at, current)

    @staticmethod
    def _tokens(result: object, sent_at: float, current: TokenSet | None) -> TokenSet:
        if isinstance(result, TokenSet):
            return result
        if isinstance(result, Mapping):
            return TokenSet.from_response(result, sent_at=sent_at, previous=current)
        raise TypeError(f"a refresher function must return a TokenSet or a dict, not {result!r}")

    def __repr__(self) -> str:
        return f"FunctionRefresher({getattr(self.function, '__name__', self.function)!r})"
