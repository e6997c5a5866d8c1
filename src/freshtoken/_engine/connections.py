"""The token endpoint connections moved to ``freshtoken._runtime.connections`` (below the
wire, which uses them); these names stay importable from here for code written against the
old place."""

from __future__ import annotations

from .._runtime.connections import (
    DEFAULT_CONCURRENCY,
    QUEUE_WAIT,
    client_for,
    place_for,
    shared,
)

__all__ = ["DEFAULT_CONCURRENCY", "QUEUE_WAIT", "client_for", "place_for", "shared"]
