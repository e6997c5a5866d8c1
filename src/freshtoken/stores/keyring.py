"""KeyringStore: tokens in the operating system's secret store, through ``keyring``.

The secret is one JSON document per (service, username) entry::

    {"format": "freshtoken/1", "generation": 7, "tokens": {...}}

The OS secret store has no compare-and-swap and no lock, so two lock files stand beside it
(in ``$XDG_CACHE_HOME/freshtoken/locks`` unless ``lock_path`` says otherwise): the refresh lock
(:meth:`KeyringStore.lock`) and a write lock taken for each read-check-write of a save. The
generation is a counter inside the entry, so a fenced save works as with any other store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Hashable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from .._tokens import TokenResponseError, TokenSet
from ..errors import StoreError
from ._base import BlockingTokenStore, GenerationConflict, StoredTokens
from ._files import cache_dir, process_lock

__all__ = ["KeyringStore"]

FORMAT = "freshtoken/1"
_FORMAT_RE = re.compile(r"freshtoken/(\d+)")
_WRITE_LOCK_TIMEOUT = 30.0
_INSTALL = "KeyringStore needs keyring: pip install 'freshtoken[keyring]'"


def _keyring() -> ModuleType:
    try:
        import keyring
    except ModuleNotFoundError:
        raise StoreError(_INSTALL) from None
    return keyring


class KeyringStore(BlockingTokenStore):
    """One credential's tokens in the OS keychain (macOS Keychain, Windows Credential Locker,
    the freedesktop Secret Service...), shared safely between processes.

    ``lock_path`` is the refresh lock file; the write lock is ``lock_path`` + ``.write``.
    """

    def __init__(
        self, service: str, username: str, *, lock_path: str | os.PathLike[str] | None = None
    ) -> None:
        if not service or not username:
            raise ValueError("service and username must be non-empty")
        self._keyring = _keyring()
        self.service = service
        self.username = username
        if lock_path is None:
            digest = hashlib.sha256(f"{service}\0{username}".encode()).hexdigest()[:24]
            lock_path = cache_dir() / "locks" / f"keyring-{digest}.lock"
        self.lock_path = Path(lock_path).expanduser().absolute()
        self._refresh_lock = process_lock(self.lock_path)
        self._write_lock = process_lock(Path(f"{self.lock_path}.write"))
        self._parsed: tuple[str, StoredTokens | None] | None = None

    @property
    def key(self) -> Hashable:
        return ("keyring", self.service, self.username)

    def __repr__(self) -> str:
        return f"KeyringStore(service={self.service!r}, username={self.username!r})"

    @property
    def _where(self) -> str:
        return f"keyring entry {self.service!r}/{self.username!r}"

    def load(self) -> StoredTokens | None:
        return self._decode(self._get())

    def save(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        with self._write_lock.hold(_WRITE_LOCK_TIMEOUT, "keyring write"):
            stored = self._decode(self._get())
            current = 0 if stored is None else stored.generation
            if expected_generation is not None and current != expected_generation:
                raise GenerationConflict(
                    f"{self._where}: the tokens changed since they were read "
                    f"(generation {current}, expected {expected_generation})"
                )
            # An entry cleared with delete loses its counter; the fenced save that follows a
            # clear starts at 0 again, which is what "expected empty" means.
            saved = StoredTokens(tokens, current + 1)
            text = json.dumps(
                {"format": FORMAT, "generation": saved.generation, "tokens": tokens.to_dict()}
            )
            self._set(text)
            self._parsed = (text, saved)
        return saved

    def clear(self) -> None:
        with self._write_lock.hold(_WRITE_LOCK_TIMEOUT, "keyring write"):
            errors = self._keyring.errors
            try:
                self._keyring.delete_password(self.service, self.username)
            except errors.PasswordDeleteError:
                return  # nothing stored: already clear
            except Exception as error:  # noqa: BLE001 - any backend failure, reported as ours
                raise self._failure("delete", error) from None
            self._parsed = None

    @contextlib.contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        with self._refresh_lock.hold(timeout, "keyring refresh"):
            yield

    # -- the keyring and the document ---------------------------------------------------------

    def _get(self) -> str | None:
        try:
            value: str | None = self._keyring.get_password(self.service, self.username)
        except Exception as error:  # noqa: BLE001 - any backend failure, reported as ours
            raise self._failure("read", error) from None
        return value

    def _set(self, text: str) -> None:
        try:
            self._keyring.set_password(self.service, self.username, text)
        except Exception as error:  # noqa: BLE001 - any backend failure, reported as ours
            raise self._failure("write", error) from None

    def _failure(self, action: str, error: BaseException) -> StoreError:
        # Backends raise anything (D-Bus, Win32, keychain errors), and their messages may quote
        # what they were handed: only the type is shown, and the original is not chained.
        return StoreError(
            f"cannot {action} {self._where}: the keyring backend raised {type(error).__name__}"
        )

    def _decode(self, text: str | None) -> StoredTokens | None:
        if text is None:
            return None
        parsed = self._parsed
        if parsed is not None and parsed[0] == text:
            return parsed[1]
        stored = _parse(text, self._where)
        self._parsed = (text, stored)
        return stored


def _parse(text: str, where: str) -> StoredTokens:
    try:
        document: Any = json.loads(text)
    except ValueError:
        raise StoreError(
            f"{where} is not freshtoken's JSON (corrupt, or written by another program)"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("format"), str):
        raise StoreError(f"{where} is not a freshtoken entry (no 'format' field)")
    match = _FORMAT_RE.fullmatch(document["format"])
    if match is None or int(match.group(1)) < 1:
        raise StoreError(f"{where} is not a freshtoken entry (format {document['format']!r})")
    if int(match.group(1)) > 1:
        raise StoreError(
            f"{where} has format {document['format']}, newer than this freshtoken understands "
            f"({FORMAT}): upgrade freshtoken"
        )
    generation = document.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 1:
        raise StoreError(f"{where} is corrupt: bad generation")
    tokens_data = document.get("tokens")
    if not isinstance(tokens_data, dict):
        raise StoreError(f"{where} is corrupt: no token set")
    try:
        tokens = TokenSet.from_dict(tokens_data)
    except (TokenResponseError, TypeError) as error:
        raise StoreError(f"{where} is corrupt: {error}") from None
    return StoredTokens(tokens, generation)
