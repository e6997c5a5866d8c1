"""The BFF's small pure checks: cookies, the CSRF header, where a login may return to, and
which request paths and methods may be forwarded. No I/O; each is a function of strings.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = [
    "HOP_BY_HOP",
    "SameSite",
    "cookie_header",
    "csrf_ok",
    "expired_cookie_header",
    "forwardable_method",
    "forwardable_path",
    "forwardable_path_cached",
    "method_allowed",
    "safe_return_to",
    "uri_encoded",
]

SameSite = Literal["lax", "strict", "none"]

# RFC 9110 section 7.6.1 and the older hop-by-hop headers proxies still meet.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 token
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")  # RFC 6265 octets
_LONGEST_RETURN = 2048
# What may stand unencoded in a URI (RFC 3986 reserved characters, and "%" for the escapes
# already there); quote() keeps letters, digits and "-._~" by itself.
_URI_CHARACTERS = "!#$%&'()*+,/:;=?@[]"
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Escapes some servers decode though no standard does: IIS's %u002e, and overlong UTF-8 for
# ASCII (%c0%ae, %e0%80%ae, %f0%80%80%ae), which old decoders read as ".".
_NONSTANDARD_ESCAPE = re.compile(r"%(?![0-9a-f]{2})|%(?:c0|c1|e0%[89]|f0%8)", re.IGNORECASE)
# Methods that have a server echo the request back (TRACE, and IIS's TRACK: the Authorization
# header the proxy adds would reach the page) or open a tunnel (CONNECT).
_REFUSED_METHODS = frozenset({"TRACE", "TRACK", "CONNECT"})
# Where frameworks (Express's method-override, Rails, Symfony, Spring...) read the method
# they run instead of the request's own.
_METHOD_OVERRIDE_HEADERS = frozenset(
    {b"x-http-method-override", b"x-http-method", b"x-method-override"}
)
_METHOD_OVERRIDE_PARAMETER = "_method"
ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


def check_cookie_name(name: str, *, secure: bool) -> None:
    """Refuse names a browser would drop: ``__Host-`` needs Secure (and gets Path=/, no
    Domain), ``__Secure-`` needs Secure."""
    if not _COOKIE_NAME.fullmatch(name):
        raise ValueError(f"not a valid cookie name: {name!r}")
    if name.startswith(("__Host-", "__Secure-")) and not secure:
        raise ValueError(
            f"a {name.split('-', maxsplit=1)[0]}- cookie must be Secure: keep secure=True"
        )


def cookie_header(
    name: str, value: str, *, max_age: int | None, same_site: SameSite, secure: bool
) -> str:
    """A Set-Cookie value: HttpOnly always, Path=/, never a Domain (``__Host-`` rules)."""
    if not _COOKIE_VALUE.fullmatch(value):
        raise ValueError("a cookie value must be RFC 6265 cookie-octets")
    if same_site == "none" and not secure:
        raise ValueError("SameSite=None needs Secure")
    parts = [f"{name}={value}", "Path=/", "HttpOnly", f"SameSite={same_site.capitalize()}"]
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max(0, int(max_age))}")
    return "; ".join(parts)


def expired_cookie_header(name: str, *, same_site: SameSite, secure: bool) -> str:
    """A Set-Cookie that makes the browser drop the cookie now."""
    return cookie_header(name, "", max_age=0, same_site=same_site, secure=secure)


def csrf_ok(headers: Mapping[str, str], name: str, value: str) -> bool:
    """Whether a request proves it came from the app's own script: the custom header (which a
    cross-site form cannot send, and a cross-site ``fetch`` cannot send without a CORS
    preflight the BFF never grants), and no ``Sec-Fetch-Site: cross-site`` where the browser
    says so."""
    if headers.get(name) != value:
        return False
    return headers.get("sec-fetch-site", "same-origin") != "cross-site"


def safe_return_to(value: str | None, own_origin: str) -> str | None:
    """Where a login or logout may send the browser back to: a path on the app's own origin,
    percent-encoded for a ``Location`` header (``/商品`` becomes ``/%E5%95%86%E5%93%81``).

    ``value`` is a path (``/orders?id=3#top``) or an absolute URL of ``own_origin``
    (``https://app.example.com``), which becomes its path. Anything else is None: another
    origin, protocol-relative ``//evil``, backslash tricks (``/\\evil``, which browsers read
    as ``//evil``), a scheme without authority (``https:evil``), userinfo
    (``https://app.example.com@evil``), control characters (``/\\t/evil``, header injection),
    a dot segment in the path (``/app/..//evil`` lands the browser on ``//evil``, which app
    code redirecting to the current path would follow), and each of these percent-encoded.
    """
    if not value or len(value) > _LONGEST_RETURN:
        return None
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F or 0xD800 <= ord(ch) < 0xE000 for ch in value):
        return None  # a raw space or control character: browsers strip or split on them
    for candidate in (value, unquote(value), unquote(unquote(value))):
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in candidate) or "\\" in candidate:
            return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        origin = urlsplit(own_origin)
        if (
            parts.scheme.lower() != origin.scheme.lower()
            or parts.netloc.lower() != origin.netloc.lower()
            or "@" in parts.netloc
        ):
            return None
        value = value[len(parts.scheme) + 3 + len(parts.netloc) :] or "/"
        parts = urlsplit(value)
    if not value.startswith("/"):
        return None
    for candidate in (value, unquote(value), unquote(unquote(value))):
        if candidate.startswith("//") or urlsplit(candidate).netloc:
            return None
    # Browsers resolve dot segments, "%2e" ones too, in the path (not in the query or the
    # fragment): refused rather than resolved, since an app's own links never have them.
    path = re.split("[?#]", value, maxsplit=1)[0]
    if _may_climb(path):
        return None
    encoded = uri_encoded(value)
    return encoded if len(encoded) <= _LONGEST_RETURN else None


def uri_encoded(value: str) -> str:
    """``value`` with every character that may not stand in a URI percent-encoded (as UTF-8),
    the escapes already there kept: what a ``Location`` header can carry (ASCII only)."""
    return quote(_STRAY_PERCENT.sub("%25", value), safe=_URI_CHARACTERS)


def forwardable_path(raw_rest: str) -> bool:
    """Whether the part of a request path after a proxy route's prefix may be appended to the
    upstream base: no dot segment and no encoded slash or backslash, however encoded, so a
    request cannot climb out of the route's base path upstream.

    A dot segment is one made of dots once its ``;`` parameters and trailing spaces are
    removed: Tomcat, Spring and Jetty read ``..;x`` as ``..``, Windows drops trailing dots and
    spaces, so ``..;``, ``.;``, ``...`` and ``%2e%2e%3b`` climb as well as ``..`` does. Escapes
    no standard defines (a ``%`` without two hex digits, IIS's ``%u002e``, overlong UTF-8
    such as ``%c0%ae``) are refused too: some server out there reads them as a dot."""
    if _may_climb(raw_rest) or _NONSTANDARD_ESCAPE.search(raw_rest):
        return False
    lowered = raw_rest.lower()
    return "%2f" not in lowered and "%5c" not in lowered and "%25" not in lowered


def forwardable_method(method: str, headers: Iterable[tuple[bytes, bytes]], query: bytes) -> bool:
    """Whether a call may go upstream with the session's token: not TRACE, TRACK or CONNECT,
    in any case, nor one of them named in a method-override header or ``_method`` query
    parameter (every value of each: frameworks differ on which one they read)."""
    overrides = [value for name, value in headers if name.lower() in _METHOD_OVERRIDE_HEADERS]
    return method_allowed(method, overrides, query)


def method_allowed(method: str, overrides: Sequence[bytes], query: bytes) -> bool:
    """[`forwardable_method()`][forwardable_method] over the override headers' values, already
    picked out of the request's headers."""
    # A query can name "_method" only as those bytes or with an escape: any other is read
    # without parsing it.
    parse = b"_method" in query or b"%" in query
    if not overrides and not parse:
        return method.strip().upper() not in _REFUSED_METHODS
    named = [method]
    for value in overrides:
        named.extend(value.decode("latin-1").split(","))
    if parse:
        for parameter, given in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if parameter == _METHOD_OVERRIDE_PARAMETER:
                named.append(given)
    return not any(word.strip().upper() in _REFUSED_METHODS for word in named)


@functools.lru_cache(maxsize=4096)
def forwardable_path_cached(raw_rest: str) -> bool:
    """[`forwardable_path()`][forwardable_path], remembered for the paths an app calls over and
    over (a pure function of its argument, so a cache cannot change an answer)."""
    return forwardable_path(raw_rest)


def _may_climb(path: str) -> bool:
    """Whether ``path``, as written or percent-decoded once or twice, has a dot segment (see
    [`forwardable_path()`][forwardable_path]), a backslash (servers read it as a slash) or a control
    character."""
    for candidate in (path, unquote(path), unquote(unquote(path))):
        if "\\" in candidate or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in candidate):
            return True
        for segment in candidate.split("/"):
            name = segment.split(";", 1)[0].rstrip(" ")
            if name and name.strip(".") == "":
                return True
    return False
