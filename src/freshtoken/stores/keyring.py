"""KeyringStore: tokens in the operating system's secret store, through ``keyring``.

The secret is one JSON document per (service, username) entry:

    {"format": "freshtoken/1", "generation": 7, "tokens": {...}}

The OS secret store has no compare-and-swap and no lock, so two lock files stand beside it
(in ``$XDG_CACHE_HOME/freshtoken/locks`` unless ``lock_path`` says otherwise): the refresh lock
([`KeyringStore.lock()`][KeyringStore.lock]) and a write lock taken for each read-check-write of a
save. The generation is a counter inside the entry, so a fenced save works as with any other store.

[`KeyringStore.clear()`][KeyringStore.clear] keeps that counter: it replaces the entry with a
tombstone that holds no secret, ``{"format": "freshtoken/1", "generation": 8, "tokens": null}``,
rather than deleting it, so that the next login's generation is larger than any read before the
logout. An entry deleted by other means (``keyring del SERVICE USERNAME``) loses the counter; the
next save then starts at a random generation (see `freshtoken.stores._base`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Hashable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from .._core.tokens import TokenSet
from ..errors import StoreError
from ._base import BlockingTokenStore, GenerationConflict, StoredTokens, starting_generation
from ._documents import corrupt, parse_json, token_set
from ._files import cache_dir, process_lock

__all__ = ["KeyringStore"]

FORMAT = "freshtoken/1"
_FORMAT_RE = re.compile(r"freshtoken/([0-9]{1,9})")  # bounded: int() of 5000 digits raises
_WRITE_LOCK_TIMEOUT = 30.0
_INSTALL = "KeyringStore needs keyring: pip install 'freshtoken[keyring]'"


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    generation: int  # the last one given out, by a save or a clear
    stored: StoredTokens | None  # None: a tombstone left by clear()


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
        self._parsed: tuple[str, _Entry] | None = None

    @property
    def key(self) -> Hashable:
        return ("keyring", self.service, self.username)

    def __repr__(self) -> str:
        return f"KeyringStore(service={self.service!r}, username={self.username!r})"

    @property
    def _where(self) -> str:
        return f"keyring entry {self.service!r}/{self.username!r}"

    @property
    def _fix(self) -> str:
        return (
            f"remove it (keyring del {self.service} {self.username}) and log in again, "
            "or give freshtoken another service or username"
        )

    def load(self) -> StoredTokens | None:
        entry = self._decode(self._get())
        return None if entry is None else entry.stored

    def save(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        with self._write_lock.hold(_WRITE_LOCK_TIMEOUT, "keyring write"):
            entry = self._decode(self._get())
            current = 0 if entry is None or entry.stored is None else entry.generation
            if expected_generation is not None and current != expected_generation:
                raise GenerationConflict(
                    f"{self._where}: the tokens changed since they were read "
                    f"(generation {current}, expected {expected_generation})"
                )
            last = starting_generation() if entry is None else entry.generation
            saved = StoredTokens(tokens, last + 1)
            self._put(_Entry(saved.generation, saved), tokens.to_dict())
        return saved

    def clear(self) -> None:
        """Replace the tokens with a tombstone that keeps only the generation (no secret)."""
        with self._write_lock.hold(_WRITE_LOCK_TIMEOUT, "keyring write"):
            entry = self._decode(self._get())
            if entry is None or entry.stored is None:
                return  # nothing stored: already clear
            self._put(_Entry(entry.generation + 1, None), None)

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

    def _put(self, entry: _Entry, tokens: dict[str, Any] | None) -> None:
        text = json.dumps({"format": FORMAT, "generation": entry.generation, "tokens": tokens})
        self._set(text)
        self._parsed = (text, entry)

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

    def _decode(self, text: str | None) -> _Entry | None:
        if text is None:
            return None
        parsed = self._parsed
        if parsed is not None and parsed[0] == text:
            return parsed[1]
        entry = _parse(text, self._where, self._fix)
        self._parsed = (text, entry)
        return entry


def _parse(text: str, where: str, fix: str) -> _Entry:
    document = parse_json(text, where, fix)
    if not isinstance(document, dict) or not isinstance(document.get("format"), str):
        raise StoreError(f"{where} is not a freshtoken entry (no 'format' field); {fix}")
    match = _FORMAT_RE.fullmatch(document["format"])
    if match is None or int(match.group(1)) < 1:
        raise StoreError(
            f"{where} is not a freshtoken entry (its format is not freshtoken's); {fix}"
        )
    if int(match.group(1)) > 1:
        raise StoreError(
            f"{where} has format {document['format']}, newer than this freshtoken understands "
            f"({FORMAT}): upgrade freshtoken"
        )
    generation = document.get("generation")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 1:
        raise corrupt(where, "bad generation", fix)
    if "tokens" not in document:
        raise corrupt(where, "no token set", fix)
    if document["tokens"] is None:
        return _Entry(generation, None)
    tokens = token_set(document["tokens"], where, fix)
    return _Entry(generation, StoredTokens(tokens, generation))
