"""Credentials in this process: one per store ``key``, shared by every manager of that key.

A [`Credential`][] holds what the managers of one credential share: its state (the rules of
``_core/credential.py``) with the mutex that guards it, the request that may still be in the
air (``attempts``), how long its refreshes take, and the store's change watcher. The registry
is weak: a credential lives as long as a manager holds it. After ``os.fork`` every credential
starts afresh in the child (locks held by other threads, flights and watchers did not come
along), keeping its view of the tokens as a fallback.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Hashable
from typing import TYPE_CHECKING

from .._core.credential import CredentialState
from ..stores._base import TokenStore
from .attempts import Attempts
from .flight import Flight

if TYPE_CHECKING:
    from .manager import TokenManager

__all__ = ["Credential", "credential_for", "recovered", "recovered_at", "release"]

_DECAY = 0.5  # each refresh halves the weight of the slowest one seen before it


class Credential:
    """A credential's state with the mutex that guards it and the managers that share it.

    The store's change watcher belongs to the credential, not to a manager: ``watched`` is the
    store it was asked of, and the last open manager to close asks that store to stop.
    """

    __slots__ = (
        "__weakref__",
        "attempts",
        "managers",
        "mutex",
        "rewatch",
        "slowest",
        "state",
        "watched",
    )

    def __init__(self) -> None:
        self.attempts = Attempts()  # on the host loop only
        self.mutex = threading.Lock()
        self.state = CredentialState(Flight)
        self.managers: weakref.WeakSet[TokenManager] = weakref.WeakSet()
        self.rewatch = False  # in a forked child: the store's watcher thread did not come along
        self.watched: TokenStore | None = None
        self.slowest = 0.0  # seconds: the slowest recent refresh, decaying (see _observed)

    def observed(self, seconds: float) -> None:
        """A refresh attempt answered after ``seconds``: remember the slowest, decaying."""
        with self.mutex:
            self.slowest = max(seconds, self.slowest * _DECAY)

    def invalidate(self) -> None:
        with self.mutex:
            self.state.invalidate()


_credentials: weakref.WeakValueDictionary[Hashable, Credential] = weakref.WeakValueDictionary()
_credentials_mutex = threading.Lock()


def credential_for(manager: TokenManager) -> Credential:
    """The credential of ``manager``'s store (by its ``key``), shared with its other managers."""
    store = manager.store
    with _credentials_mutex:
        credential = _credentials.get(store.key)
        if credential is None:
            credential = _credentials[store.key] = Credential()
        if credential.watched is None:  # new, or every manager of it closed meanwhile
            store.watch(credential.invalidate)
            credential.watched = store
        credential.managers.add(manager)
        return credential


def release(manager: TokenManager, credential: Credential) -> None:
    """``manager`` closed: the last open manager of the credential stops its watcher."""
    with _credentials_mutex:
        credential.managers.discard(manager)
        watched = credential.watched
        if credential.managers or watched is None:
            return
        credential.watched = None
        # Under the mutex: a manager made meanwhile must find the watcher gone, or running.
        watched.unwatch(credential.invalidate)


def _after_fork_in_child() -> None:
    # Locks held by other threads at fork time stay held forever in the child, and flights'
    # threads did not come along: start every credential afresh (the view stays as fallback).
    global _credentials_mutex
    _credentials_mutex = threading.Lock()
    for credential in list(_credentials.values()):
        credential.mutex = threading.Lock()
        credential.attempts = Attempts()  # its requests were the parent's host's
        credential.state.after_fork()
        credential.rewatch = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# refresher -> when a refresh through it last succeeded (the managers' monotonic clock)
_recoveries: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()


def recovered(refresher: object, mono: float) -> None:
    """A refresh through ``refresher`` succeeded at ``mono``: its provider answers."""
    try:
        if _recoveries.get(refresher, -math.inf) < mono:
            _recoveries[refresher] = mono
    except TypeError:  # not weakly referable: no provider-wide recovery for it
        pass


def recovered_at(refresher: object) -> float:
    """When a refresh through ``refresher`` last succeeded (-inf if never)."""
    try:
        return _recoveries.get(refresher, -math.inf)
    except TypeError:
        return -math.inf
