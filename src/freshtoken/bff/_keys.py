"""The BFF's keys: the current one seals, every one opens, so the key can be rotated without
logging every user out.

What the BFF seals (login cookies, Redis session records and their tokens) is opened with the
current key first, then with each previous one; whatever a previous key opened is sealed
again with the current key when it is next written. Once nothing sealed under a previous key
is left (see docs/bff.md for how long that takes), it can be dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import StoreError
from ..stores._sealing import Sealer

__all__ = ["KeyRing"]


class KeyRing(Sealer):
    """Seals with ``current``; opens what ``current`` or any of ``previous`` sealed. Keys are
    the BFF's derived 32-byte keys; the repr shows none of them."""

    def __init__(self, current: bytes, previous: Iterable[bytes] = ()) -> None:
        super().__init__(current)
        self.current = current
        self.previous = tuple(key for key in dict.fromkeys(previous) if key != current)
        self._previous = [Sealer(key) for key in self.previous]

    @property
    def keys(self) -> tuple[bytes, ...]:
        """Every key, the current one first."""
        return (self.current, *self.previous)

    def open(self, sealed: Mapping[str, Any], *, context: str, where: str) -> bytes:
        return self.open_aged(sealed, context=context, where=where)[0]

    def open_aged(
        self, sealed: Mapping[str, Any], *, context: str, where: str
    ) -> tuple[bytes, bool]:
        """The plaintext, and whether a previous key sealed it (so it is due for sealing
        again); the current key's StoreError if no key opens it."""
        try:
            return super().open(sealed, context=context, where=where), False
        except StoreError:
            for sealer in self._previous:
                with contextlib.suppress(StoreError):  # not this one: try the next key
                    return sealer.open(sealed, context=context, where=where), True
            raise

    def __repr__(self) -> str:
        return f"KeyRing(previous={len(self.previous)})"
