"""Every operation of a FileStore, for tests that check they all refuse the same input."""

from __future__ import annotations

from collections.abc import Callable

from freshtoken import TokenSet
from freshtoken.stores import FileStore


def every_operation(store: FileStore, tokens: TokenSet) -> list[Callable[[], object]]:
    """Reads and writes of ``store``; the writes save ``tokens``."""
    return [
        store.load,
        store.profiles,
        store.load_profile,
        lambda: store.save(tokens, expected_generation=None),
        lambda: store.save_profile(tokens, meta={}),
        store.clear,
        store.remove_profile,
    ]
