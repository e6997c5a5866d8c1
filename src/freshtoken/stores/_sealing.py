"""Encryption at rest for stored secrets: AES-256-GCM, bound to the record it protects.

A key is either 32 random bytes (``bytes``, or url-safe base64 text as printed by
``Fernet.generate_key()`` or ``base64.urlsafe_b64encode(os.urandom(32))``) or any other string,
taken as a passphrase and stretched with scrypt. The sealed record names its key derivation
and carries its salt and nonce; the associated data binds it to its file format and profile,
so that a record copied into another profile does not open.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Mapping
from typing import Any, TypeGuard

from ..errors import StoreError

__all__ = ["ENV_KEY", "Sealer", "resolve_key", "shape_problem"]

ENV_KEY = "FRESHTOKEN_ENCRYPTION_KEY"
ALGORITHM = "A256GCM"
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
_INSTALL = "encryption at rest needs cryptography: pip install 'freshtoken[encryption]'"


def resolve_key(key: bytes | str | None) -> bytes | str | None:
    """The key given, else ``$FRESHTOKEN_ENCRYPTION_KEY``, else None."""
    if key is None:
        key = os.environ.get(ENV_KEY) or None
    if key is not None and not key:
        raise ValueError("an encryption key must not be empty")
    return key


def _raw_key(key: bytes | str) -> bytes | None:
    """32 bytes given as bytes, or as url-safe base64 text; None for a passphrase."""
    if isinstance(key, bytes) and len(key) == 32:
        return key
    text = key.encode() if isinstance(key, str) else key
    try:
        decoded = base64.urlsafe_b64decode(text.strip())
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == 32 else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _small_int(value: object, limit: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= limit


class _Malformed(Exception):
    """A sealed record that is not what freshtoken writes (says what, no secret)."""


def shape_problem(sealed: Mapping[str, Any]) -> str | None:
    """What is wrong with a sealed record, as far as can be seen without the key; None if
    nothing. Lets a store refuse a malformed record when it reads the file, key or no key."""
    if sealed.get("alg") != ALGORITHM:
        return "unknown algorithm"
    kdf = sealed.get("kdf")
    if kdf != "raw":
        problem = _scrypt_problem(kdf)
        if problem is not None:
            return problem
        assert isinstance(kdf, Mapping)
        if not isinstance(kdf.get("salt"), str):
            return "salt is not a string"
    for name in ("nonce", "ciphertext"):
        if not isinstance(sealed.get(name), str):
            return f"{name} is not a string"
    return None


def _scrypt_problem(kdf: object) -> str | None:
    if not isinstance(kdf, Mapping) or kdf.get("name") != "scrypt":
        return "unknown key derivation"
    n, r, p = (kdf.get(name) for name in ("n", "r", "p"))
    if not (_small_int(n, 2**20) and _small_int(r, 16) and _small_int(p, 4)):
        return "scrypt parameters outside what freshtoken writes"
    if n < 2 or n & (n - 1):
        return "scrypt n is not a power of two"
    return None


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise _Malformed(f"{what} is not a string")
    try:
        return base64.urlsafe_b64decode(value.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise _Malformed(f"{what} is not base64") from None


class Sealer:
    """Seals and opens byte strings with one key. Never shows the key in its repr."""

    def __init__(self, key: bytes | str) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ModuleNotFoundError:
            raise StoreError(_INSTALL) from None
        self._aesgcm = AESGCM
        self._material = key.encode() if isinstance(key, str) else bytes(key)
        self._raw = _raw_key(key)
        self._derived: dict[tuple[bytes, int, int, int], bytes] = {}
        self._mutex = threading.Lock()

    def seal(self, plaintext: bytes, *, context: str, salt: bytes | None = None) -> dict[str, Any]:
        """``salt`` reuses a passphrase record's salt, so that its derivation stays cached."""
        if self._raw is not None:
            key, kdf = self._raw, "raw"
            kdf_record: str | dict[str, Any] = kdf
        else:
            salt = salt or os.urandom(16)
            key = self._derive(salt, _SCRYPT["n"], _SCRYPT["r"], _SCRYPT["p"])
            kdf_record = {"name": "scrypt", "salt": _b64(salt), **_SCRYPT}
        nonce = os.urandom(12)
        ciphertext = self._aesgcm(key).encrypt(nonce, plaintext, context.encode())
        return {
            "alg": ALGORITHM,
            "kdf": kdf_record,
            "nonce": _b64(nonce),
            "ciphertext": _b64(ciphertext),
        }

    def open(self, sealed: Mapping[str, Any], *, context: str, where: str) -> bytes:
        """The plaintext; StoreError naming ``where`` if the key is wrong or the record bad."""
        from cryptography.exceptions import InvalidTag

        try:
            key, nonce, ciphertext = self._parts(sealed)
        except _Malformed as error:
            raise StoreError(f"{where}: malformed encrypted record ({error})") from None
        if key is None:
            raise StoreError(
                f"{where}: wrong encryption key (the record was sealed with a raw 32-byte key, "
                "and the key given is not one)"
            )
        try:
            return bytes(self._aesgcm(key).decrypt(nonce, ciphertext, context.encode()))
        except InvalidTag:
            raise StoreError(f"{where}: wrong encryption key, or the record was altered") from None
        except ValueError as error:  # e.g. a nonce of the wrong size
            raise StoreError(f"{where}: malformed encrypted record ({error})") from None

    def _parts(self, sealed: Mapping[str, Any]) -> tuple[bytes | None, bytes, bytes]:
        if sealed.get("alg") != ALGORITHM:
            raise _Malformed("unknown algorithm")
        key = self._key_for(sealed.get("kdf"))
        return (
            key,
            _unb64(sealed.get("nonce"), "nonce"),
            _unb64(sealed.get("ciphertext"), "ciphertext"),
        )

    @staticmethod
    def salt_of(sealed: object) -> bytes | None:
        """The scrypt salt of a sealed record, if it has one (to reuse when resealing)."""
        if isinstance(sealed, Mapping):
            kdf = sealed.get("kdf")
            if isinstance(kdf, Mapping):
                try:
                    return _unb64(kdf.get("salt"), "salt")
                except _Malformed:
                    return None
        return None

    def _key_for(self, kdf: object) -> bytes | None:
        if kdf == "raw":
            return self._raw
        problem = _scrypt_problem(kdf)
        if problem is not None:
            raise _Malformed(problem)
        assert isinstance(kdf, Mapping)
        n, r, p = kdf["n"], kdf["r"], kdf["p"]
        return self._derive(_unb64(kdf.get("salt"), "salt"), n, r, p)

    def _derive(self, salt: bytes, n: int, r: int, p: int) -> bytes:
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

        cache_key = (salt, n, r, p)
        with self._mutex:
            cached = self._derived.get(cache_key)
            if cached is None:
                cached = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(self._material)
                self._derived[cache_key] = cached
            return cached

    def __repr__(self) -> str:
        return f"Sealer(kind={'raw' if self._raw is not None else 'passphrase'})"
