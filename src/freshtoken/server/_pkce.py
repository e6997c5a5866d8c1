"""PKCE as the server checks it (RFC 7636 section 4.6), written apart from the client's.

The reference server is what the client is tested against: were it to compute the S256
challenge with the client's own function, a bug there would pass on both sides. This one is
written independently and checked against the RFC's Appendix B example by the tests.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

__all__ = ["s256", "verifier_matches"]


def s256(verifier: str) -> str:
    """``BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`` without padding (section 4.2)."""
    standard = base64.b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode()
    return standard.translate(str.maketrans("+/", "-_")).rstrip("=")


def verifier_matches(verifier: str, challenge: str) -> bool:
    """Whether ``verifier`` answers an S256 ``challenge``, compared in constant time."""
    return secrets.compare_digest(s256(verifier), challenge)
