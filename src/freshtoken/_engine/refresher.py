"""What the engine needs of a refresher: the [`Refresher`][] protocol.

The engine calls a refresher; it does not know the kinds there are (``freshtoken.refreshers``
has the OAuth2 ones, ``freshtoken.agent`` the agent's, any object with these members will do).
The protocol lives with its caller, so that the engine imports nothing of the refreshers.
"""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

from .._core.clock import Clock
from .._core.tokens import TokenSet

__all__ = ["Refresher", "takes_dpop"]


@runtime_checkable
class Refresher(Protocol):
    """What a [`TokenManager`][freshtoken.TokenManager] needs from a refresher.

    ``can_acquire`` says it can get tokens with no refresh token (client credentials).
    ``refresh`` raises [`SessionExpired`][freshtoken.SessionExpired] when the session is over and
    [`RefreshFailed`][freshtoken.RefreshFailed] when trying again later may work. ``clock`` is the
    manager's clock, for timing the answer; ``deadline`` (a ``time.monotonic()`` instant) is
    when the attempt must have ended. The manager calls ``refresh`` from a worker thread of
    its flight host, never from an event loop; a refresher whose ``arefresh`` is a coroutine
    function (defined with ``refresh`` or below it) is awaited on the host's loop instead. A
    refresher may decide that itself with a ``native_async()`` method returning a bool (a
    ``FunctionRefresher`` does: its ``arefresh`` is native only for an async function).
    """

    @property
    def can_acquire(self) -> bool: ...

    def refresh(
        self, current: TokenSet | None, clock: Clock, *, deadline: float | None = None
    ) -> TokenSet: ...


def takes_dpop(refresher: object) -> bool:
    """Whether ``refresher.refresh`` takes ``dpop=``: it can sign its token requests."""
    try:
        return "dpop" in inspect.signature(refresher.refresh).parameters  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return False
