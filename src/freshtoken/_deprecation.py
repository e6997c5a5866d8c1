"""Names on their way out of the public API: they keep working, with a DeprecationWarning that
names the replacement, until 0.2.0. A module lists them and hands [`module_getattr()`][] to
Python as its ``__getattr__`` (PEP 562), so that only a use of an old name warns."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["REMOVED_IN", "module_getattr", "warn"]

REMOVED_IN = "0.2.0"


def warn(old: str, instead: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` goes in [`REMOVED_IN`][] and what to use ``instead``."""
    warnings.warn(
        f"{old} is deprecated and goes in freshtoken {REMOVED_IN}: use {instead}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def module_getattr(module: str, moved: Mapping[str, tuple[str, str, str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``moved``: old name -> (defining module, its name there,
    what to use instead). Any other name is an AttributeError, as without it."""

    def __getattr__(name: str) -> Any:
        try:
            where, attribute, instead = moved[name]
        except KeyError:
            raise AttributeError(f"module {module!r} has no attribute {name!r}") from None
        warn(f"{module}.{name}", instead)
        return getattr(importlib.import_module(where), attribute)

    return __getattr__
