"""The BFF's cookies: the session's (an opaque id), the sealed, short-lived one each login
carries to its callback, and the logout link's ``sid`` (an HMAC only the session's ``/user``
answer shows)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from ..errors import StoreError
from ._keys import KeyRing
from ._security import SameSite, cookie_header, expired_cookie_header

__all__ = ["Cookies"]


class Cookies:
    """The cookies of one BFF: named after ``name``, sealed and signed with ``keys``."""

    def __init__(self, name: str, *, same_site: SameSite, secure: bool, keys: KeyRing) -> None:
        self.name = name
        self.same_site: SameSite = same_site
        self.secure = secure
        self.keys = keys

    def session(self, session_id: str, *, max_age: int) -> str:
        """The Set-Cookie header value that gives the browser ``session_id``."""
        return cookie_header(
            self.name, session_id, max_age=max_age, same_site=self.same_site, secure=self.secure
        )

    def expired(self) -> str:
        """The Set-Cookie header value that clears the session's cookie."""
        return expired_cookie_header(self.name, same_site=self.same_site, secure=self.secure)

    def login_name(self, state: str) -> str:
        """The cookie of the login whose ``state`` this is: several tabs may log in at once."""
        tag = hashlib.sha256(state.encode("utf-8", "replace")).hexdigest()[:16]
        return f"{self.name}-login-{tag}"

    def login_prefix(self) -> str:
        return f"{self.name}-login-"

    def seal(self, document: Mapping[str, Any], purpose: str) -> str:
        plain = json.dumps(document, separators=(",", ":")).encode()
        sealed = self.keys.seal(plain, context=f"freshtoken bff {purpose}")
        packed = json.dumps([sealed["nonce"], sealed["ciphertext"]], separators=(",", ":"))
        return base64.urlsafe_b64encode(packed.encode()).decode().rstrip("=")

    def open(self, value: str, purpose: str) -> dict[str, Any] | None:
        """The sealed document, or None for anything not sealed by this BFF's keys."""
        try:
            packed = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
            nonce, ciphertext = packed
            sealed = {"alg": "A256GCM", "kdf": "raw", "nonce": nonce, "ciphertext": ciphertext}
            plain = self.keys.open(sealed, context=f"freshtoken bff {purpose}", where="cookie")
            document = json.loads(plain)
        except (ValueError, TypeError, RecursionError, StoreError):
            return None
        return document if isinstance(document, dict) else None

    def logout_sid(self, handle: str, key: bytes | None = None) -> str:
        """A value only this session's ``/user`` answer knows: it lets a plain link log out
        (``logout?sid=``) without the CSRF header, and no other site can forge it."""
        message = b"logout " + handle.encode()
        digest = hmac.new(key or self.keys.current, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def logout_sid_ok(self, handle: str, sid: str) -> bool:
        """Whether ``sid`` is the session's, under any of the keys (a link shown before a key
        rotation still works)."""
        given = sid.encode()
        return any(
            hmac.compare_digest(given, self.logout_sid(handle, key).encode())
            for key in self.keys.keys
        )
