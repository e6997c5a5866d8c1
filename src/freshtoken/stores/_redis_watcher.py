"""[`RedisStore.watch()`][freshtoken.stores.redis.RedisStore.watch]'s subscriber: a daemon thread
on the store's ``K:changed`` channel that calls back when another process saves or clears,
reconnects with backoff, and after a reconnection tells whether a change slipped by unheard."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._redis_client import first_line
from ._redis_scripts import generation_of

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = ["Watcher"]

logger = logging.getLogger("freshtoken")

_WATCH_POLL = 0.2  # how long the watcher blocks on the socket before it checks for close()
_WATCH_BACKOFF = (0.05, 2.0)  # first and longest pause between reconnection attempts


class Watcher:
    """A daemon thread subscribed to the store's channel, reconnecting with backoff.

    It holds no reference to the store (only what it needs), so a store dropped without
    ``close()`` is still collected, and its finalizer stops this thread.
    """

    def __init__(self, store: RedisStore) -> None:
        self._client = store._sync
        self._errors = store._errors
        self._redis_key = store.redis_key
        self._channel = store._channel
        self._origin = store._origin
        self._label = repr(store)
        self._callbacks: list[Callable[[], None]] = []
        self._mutex = threading.Lock()
        self._stopped = threading.Event()
        self._subscribed = threading.Event()
        self._reconnected = threading.Event()
        self._generation: int | None = None  # the last one seen, to spot changes missed offline
        self._synced = False  # whether _generation was read once (None may mean unreadable)
        self._thread = threading.Thread(
            target=self._run, name=f"freshtoken-watch-{self._redis_key}", daemon=True
        )
        self._thread.start()

    def add(self, callback: Callable[[], None]) -> None:
        with self._mutex:
            self._callbacks.append(callback)

    def remove(self, callback: Callable[[], None]) -> int:
        """Forget one registration of ``callback``; how many callbacks are left."""
        with self._mutex:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
            return len(self._callbacks)

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def stop(self, join: bool) -> None:
        self._stopped.set()
        if join and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        pause = _WATCH_BACKOFF[0]
        outage = False
        while not self._stopped.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
            try:
                pubsub.subscribe(self._channel)
                # redis-py may reconnect (and resubscribe) by itself inside get_message: hear
                # of it, since changes made while the subscription was down went unheard.
                # subscribe() connected it; redis-py 8.2's hints say it is always None.
                connection: Any = pubsub.connection
                connection.register_connect_callback(self._on_reconnect)
                self._resync()
                self._subscribed.set()
                if outage:
                    logger.info("%s: change notifications resumed", self._label)
                outage, pause = False, _WATCH_BACKOFF[0]
                while not self._stopped.is_set():
                    message = pubsub.get_message(timeout=_WATCH_POLL)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message.get("data"))
                    if self._reconnected.is_set():
                        self._reconnected.clear()
                        self._resync()
            except self._errors.RedisError as error:
                # ConnectionError and TimeoutError (Redis down or restarting) mostly; any other
                # answer (NOAUTH after a restart, say) is retried with the same backoff.
                if not outage:
                    logger.warning(
                        "%s: change notifications interrupted (%s: %s); reconnecting",
                        self._label,
                        type(error).__name__,
                        first_line(error),
                    )
                outage = True
            finally:
                with contextlib.suppress(self._errors.RedisError, OSError):
                    pubsub.close()  # closing a dead connection may fail; it is being dropped
            if self._stopped.wait(pause):
                return
            pause = min(pause * 2, _WATCH_BACKOFF[1])

    def _on_reconnect(self, connection: object) -> None:
        self._reconnected.set()

    def _resync(self) -> None:
        """After (re)subscribing: tell the callbacks if a change slipped by unheard."""
        raw = self._client.hget(self._redis_key, "generation")
        generation = 0 if raw is None else generation_of(raw)
        if generation is None:
            logger.warning(
                "%s: the stored generation is not a number (the hash was written by something "
                "else than freshtoken?); loading the tokens will fail until they are saved again",
                self._label,
            )
        previous, self._generation = self._generation, generation
        if self._synced and previous != generation:
            self._notify()
        self._synced = True

    def _on_message(self, data: object) -> None:
        raw = data if isinstance(data, bytes) else str(data).encode("utf-8", "replace")
        number, _, origin = raw.partition(b" ")
        generation = generation_of(number)
        if generation is None:
            # Not what a store publishes: someone else writes on the channel. Ignored, so that
            # it cannot make every manager re-read the store.
            logger.debug("%s: ignored a message that is not a change notification", self._label)
            return
        self._generation = generation
        if origin != self._origin.encode():
            self._notify()

    def _notify(self) -> None:
        with self._mutex:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("%s: a change callback raised", self._label)
