"""[`RedisStore`][freshtoken.stores.redis.RedisStore]'s refresh lock, around redis-py's ``Lock``:
how often a waiter retries it, the lease renewed every ``lease / 3`` seconds while its holder
lives (a thread for the blocking side, a task for the async side), and what is logged when a
lease lapses or a release fails. Fenced saves keep the store consistent whatever happens to
the lock: these only say so.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import LockTimeout

if TYPE_CHECKING:
    import redis.asyncio.lock
    import redis.lock

__all__ = [
    "Renewal",
    "lease_lost",
    "lock_timeout",
    "pauses",
    "release_failed",
    "renew",
    "renewal_failed",
]

logger = logging.getLogger("freshtoken")

_MAX_LOCK_POLL = 0.25


def pauses(poll: float) -> Iterator[float]:
    """Waits between attempts at a held lock: ``poll``, growing by half each time up to a
    quarter second, so a fleet waiting out a slow refresh does not flood Redis."""
    pause = poll
    while True:
        yield pause
        pause = min(pause * 1.5, max(poll, _MAX_LOCK_POLL))


def lock_timeout(label: str, lock_key: str, timeout: float, lease: float) -> LockTimeout:
    return LockTimeout(
        f"{label}: the refresh lock {lock_key!r} was not released within "
        f"{timeout:g} s (another process is refreshing, or died holding it less than "
        f"{lease:g} s ago)"
    )


def release_failed(label: str, lease: float, errors: Any, error: Exception) -> None:
    # The refresh is over either way; the fenced save already kept the store consistent,
    # and an unreleased lock ends with its lease.
    if isinstance(error, errors.LockError):
        logger.warning(
            "%s: the refresh lock's lease had lapsed before release (held over %g s "
            "without renewal); fenced writes kept the store consistent",
            label,
            lease,
        )
    else:
        logger.warning(
            "%s: could not release the refresh lock (%s); it ends with its %g s lease",
            label,
            type(error).__name__,
            lease,
        )


def lease_lost(label: str) -> None:
    logger.warning(
        "%s: the refresh lock's lease lapsed while held; another process may refresh, "
        "and this one's save will be refused if it does",
        label,
    )


def renewal_failed(label: str, error: Exception) -> None:
    logger.warning(
        "%s: could not renew the refresh lock's lease (%s); retrying",
        label,
        type(error).__name__,
    )


class Renewal:
    """Extends a held lock's lease every ``lease / 3`` seconds until stopped."""

    def __init__(
        self, lock: redis.lock.Lock, lease: float, errors: Any, label: str, name: str
    ) -> None:
        self._lock = lock
        self._lease = lease
        self._errors = errors
        self._label = label
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        errors = self._errors
        while not self._stopped.wait(self._lease / 3):
            try:
                self._lock.extend(self._lease, replace_ttl=True)
            except errors.LockError:
                lease_lost(self._label)
                return
            except (errors.ConnectionError, errors.TimeoutError) as error:
                renewal_failed(self._label, error)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


async def renew(lock: redis.asyncio.lock.Lock, lease: float, errors: Any, label: str) -> None:
    """[`Renewal`][]'s loop for a redis.asyncio lock, as a task the holder cancels."""
    while True:
        await asyncio.sleep(lease / 3)
        try:
            await lock.extend(lease, replace_ttl=True)
        except errors.LockError:
            lease_lost(label)
            return
        except (errors.ConnectionError, errors.TimeoutError) as error:
            renewal_failed(label, error)
