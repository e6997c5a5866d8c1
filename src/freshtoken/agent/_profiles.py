"""The agent's profiles: one [`TokenManager`][freshtoken.TokenManager] per profile of the token
file, made when a client first asks for it and made again when ``freshtoken login`` changes the
profile's settings (the store's watch says so); a refresher replaced while it may still be
refreshing is closed only when the agent stops."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import TYPE_CHECKING

from .._core.tokens import TokenSet
from .._engine.manager import TokenManager
from ..profiles import close_refresher, refresher_of
from ..refreshers import Refresher
from ..stores.file import FileStore

if TYPE_CHECKING:
    from ._server import Agent

__all__ = ["Profile", "Profiles"]


class Profile:
    """The agent's state for one profile: its store, its manager, what was last served."""

    __slots__ = ("changed", "last", "manager", "served", "settings", "store", "watched")

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.manager: TokenManager | None = None  # None while the profile is logged out
        self.settings = ""
        self.changed = True  # set from the store's watch thread; read on the loop
        self.watched = False
        self.served = 0
        self.last: TokenSet | None = None  # the last tokens served, for status

    def mark_changed(self) -> None:
        self.changed = True


class Profiles:
    """The agent's profiles by name."""

    __slots__ = ("_agent", "_by_name", "_locks", "_retired")

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._by_name: dict[str, Profile] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._retired: list[Refresher] = []  # replaced while they may still be refreshing

    def in_order(self) -> list[tuple[str, Profile]]:
        return sorted(self._by_name.items())

    async def get(self, name: str) -> Profile | None:
        """The profile's state, its manager rebuilt if ``freshtoken login`` changed it."""
        profile = self._by_name.get(name)
        if profile is not None and not profile.changed:
            return profile
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            profile = self._by_name.get(name)
            if profile is not None and not profile.changed:
                return profile
            if profile is None:
                store = FileStore(self._agent.store_path, profile=name)  # ValueError for a bad name
                profile = Profile(store)
            profile.changed = False  # before reading: a change during the read is not lost
            loaded = await asyncio.to_thread(profile.store.load_profile)
            if loaded is None:  # logged out, or never logged in
                if profile.manager is not None:
                    self._retired.append(profile.manager.refresher)
                    profile.manager = None
                return None
            settings = hashlib.sha256(
                json.dumps(
                    [dict(loaded.meta), loaded.client_secret, loaded.private_key], sort_keys=True
                ).encode()
            ).hexdigest()
            if profile.manager is not None and profile.settings == settings:
                return profile
            refresher = refresher_of(profile.store, loaded)
            if profile.manager is not None:
                self._retired.append(profile.manager.refresher)
            if not profile.watched:
                profile.store.watch(profile.mark_changed)
                profile.watched = True
            profile.manager = TokenManager(
                refresher,
                profile.store,
                clock=self._agent.clock,
                lock_timeout=self._agent.lock_timeout,
                retry=self._agent.retry,
            )
            profile.settings = settings
            self._by_name[name] = profile
            return profile

    def close(self) -> None:
        """Close every profile's refresher and store (the agent has stopped)."""
        for profile in self._by_name.values():
            if profile.manager is not None:
                close_refresher(profile.manager.refresher)
            profile.store.close()
        for refresher in self._retired:
            close_refresher(refresher)
        self._by_name.clear()
        self._retired.clear()
