"""Stores that survive ``os.fork()``.

Only the thread that calls ``fork()`` lives on in the child. Locks that other threads held at
that moment stay held there forever, and background threads (watchers, lease renewals) are
gone while the objects that started them still point at them. Objects registered here get
their ``_after_fork_in_child()`` called in every child (through ``os.register_at_fork``), and
renew that state there. They are held weakly: registering keeps nothing alive.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["ForkAware", "renew_after_fork"]


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_registered: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def renew_after_fork(owner: ForkAware) -> None:
    """Call ``owner._after_fork_in_child()`` in the child of every fork while ``owner`` lives."""
    _registered.add(owner)


def _in_child() -> None:
    for owner in list(_registered):
        owner._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_in_child)
