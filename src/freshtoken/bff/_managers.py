"""The BFF's warm sessions: a [`TokenManager`][freshtoken.TokenManager] per session that
calls, kept while it is among the ``limit`` most recently used, and the session handles of the
ids that call (a SHA-256 per call saved). A session dropped from here costs a store read when
it calls again, nothing else: its tokens live in the session store."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from .._engine.manager import TokenManager
from ._sessions import handle_of

__all__ = ["WarmManagers"]


class WarmManagers:
    """At most ``limit`` managers, least recently used dropped first; ``make`` makes a
    session's manager (it reads the store when first used)."""

    def __init__(self, make: Callable[[str], TokenManager], limit: int) -> None:
        self._make = make
        self.limit = limit
        self._managers: OrderedDict[str, TokenManager] = OrderedDict()
        self._handles: dict[str, str] = {}

    def get(self, handle: str) -> TokenManager:
        managers = self._managers
        manager = managers.get(handle)
        if manager is None:
            manager = managers[handle] = self._make(handle)
            if len(managers) > self.limit:
                managers.popitem(last=False)
        else:
            managers.move_to_end(handle)
        return manager

    def pop(self, handle: str) -> TokenManager | None:
        return self._managers.pop(handle, None)

    def handle_of(self, session_id: str) -> str:
        """[`handle_of()`][freshtoken.bff._sessions.handle_of], remembered for the sessions
        that call now."""
        handles = self._handles
        handle = handles.get(session_id)
        if handle is None:
            if len(handles) >= self.limit:
                handles.clear()
            handle = handles[session_id] = handle_of(session_id)
        return handle

    def __setitem__(self, handle: str, manager: TokenManager) -> None:
        """Use ``manager`` for the session (tests and benchmarks set up sessions so)."""
        self._managers[handle] = manager

    def __contains__(self, handle: object) -> bool:
        return handle in self._managers

    def __len__(self) -> int:
        return len(self._managers)

    def clear(self) -> None:
        """Drop every warm manager (the sessions and their tokens stay in the store)."""
        self._managers.clear()
