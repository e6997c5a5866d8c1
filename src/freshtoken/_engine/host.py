"""The flight host moved to ``freshtoken._runtime.host`` (below the wire and the stores, which
use it too); these names stay importable from here for code written against the old place."""

from __future__ import annotations

from .._runtime.host import (
    DRAIN_LIMIT,
    THREAD_NAME,
    WORKERS,
    FlightHost,
    flights_in_progress,
    host,
    in_host_thread,
)

__all__ = [
    "DRAIN_LIMIT",
    "THREAD_NAME",
    "WORKERS",
    "FlightHost",
    "flights_in_progress",
    "host",
    "in_host_thread",
]
