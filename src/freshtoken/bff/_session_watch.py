"""One worker's subscription to every session's change channel in Redis: the managers of a
session whose tokens another worker replaced drop what they cached (see [`SessionWatcher`][])."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["SessionWatcher"]

logger = logging.getLogger("freshtoken.bff")

_WATCH_POLL = 0.2  # seconds the subscriber blocks on its socket before it checks for stop()
_WATCH_BACKOFF = (0.05, 2.0)  # first and longest pause between reconnection attempts


class SessionWatcher:
    """One worker's subscription to every session's change channel (``PSUBSCRIBE
    <prefix>{*}:changed``; each token save publishes ``<generation> <origin>`` there): when
    another worker replaced a session's tokens, the managers of that session here drop what
    they cached, so this worker never sends a token another one already replaced.

    A daemon thread, started with the first session watched, reconnecting with backoff; after
    each (re)subscription every session watched is told to re-read (a change may have gone
    unheard meanwhile). Callbacks are held weakly: a session's manager dropped from the BFF's
    warm set costs nothing here.
    """

    def __init__(self, client: Any, prefix: str, origin: str, errors: Any) -> None:
        self._client = client
        self._errors = errors
        self._prefix = prefix
        self._pattern = _glob_escaped(prefix) + "{*}:changed"
        self._origin = origin.encode()
        self._callbacks: dict[str, list[Callable[[], Callable[[], None] | None]]] = {}
        self._mutex = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, handle: str, callback: Callable[[], None]) -> None:
        reference = _weakly(callback)
        with self._mutex:
            if self._stopped.is_set():
                return
            self._callbacks.setdefault(handle, []).append(reference)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="freshtoken-bff-sessions-watch", daemon=True
                )
                self._thread.start()

    def remove(self, handle: str, callback: Callable[[], None]) -> None:
        with self._mutex:
            kept = [ref for ref in self._callbacks.get(handle, []) if ref() not in (None, callback)]
            if kept:
                self._callbacks[handle] = kept
            else:
                self._callbacks.pop(handle, None)

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        pause = _WATCH_BACKOFF[0]
        while not self._stopped.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(self._pattern)
                self._notify(None)  # whatever changed before (or between) subscriptions
                pause = _WATCH_BACKOFF[0]
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=_WATCH_POLL)
                    if message is not None and message.get("type") == "pmessage":
                        self._on_message(message.get("channel"), message.get("data"))
            except self._errors.RedisError as error:
                logger.warning(
                    "bff: session change notifications interrupted (%s); reconnecting",
                    type(error).__name__,
                )
            finally:
                with contextlib.suppress(self._errors.RedisError, OSError):
                    pubsub.close()
            if self._stopped.wait(pause):
                return
            pause = min(pause * 2, _WATCH_BACKOFF[1])

    def _on_message(self, channel: object, data: object) -> None:
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        if not isinstance(channel, str) or not isinstance(data, bytes):
            return
        start = len(self._prefix) + 1
        handle = channel[start : channel.find("}", start)]
        if data.partition(b" ")[2] == self._origin:
            return  # this worker's own save: its managers already hold those tokens
        self._notify(handle)

    def _notify(self, handle: str | None) -> None:
        """Tell ``handle``'s managers (every session's, for None) to re-read."""
        with self._mutex:
            if handle is None:
                found = [ref for refs in self._callbacks.values() for ref in refs]
            else:
                found = list(self._callbacks.get(handle, ()))
        for reference in found:
            callback = reference()
            if callback is None:
                continue
            try:
                callback()
            except Exception:
                logger.exception("bff: a session change callback raised")
        if handle is not None and any(reference() is None for reference in found):
            with self._mutex:  # managers collected since: forget them
                kept = [ref for ref in self._callbacks.get(handle, []) if ref() is not None]
                if kept:
                    self._callbacks[handle] = kept
                else:
                    self._callbacks.pop(handle, None)


def _weakly(callback: Callable[[], None]) -> Callable[[], Callable[[], None] | None]:
    """A weak reference to a bound method (a credential's ``invalidate``), else a strong one."""
    if hasattr(callback, "__self__") and hasattr(callback, "__func__"):
        return weakref.WeakMethod(callback)
    return lambda: callback


def _glob_escaped(text: str) -> str:
    """``text`` matched literally in a Redis glob pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
