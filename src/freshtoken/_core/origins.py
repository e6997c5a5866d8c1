"""Origins and where a token may go, with no I/O: an ``origins`` allow-list
([`Destinations`][]) that every integration asks, and plain HTTP refused off loopback."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import threading
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from ..errors import InsecureTransportError

__all__ = [
    "Destinations",
    "Origin",
    "check_transport",
    "default_port",
    "is_loopback",
    "normal_path",
    "origin_of",
]

logger = logging.getLogger("freshtoken")


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def default_port(scheme: str) -> int:
    return _DEFAULT_PORTS.get(scheme, 0)


def origin_of(url: str) -> Origin:
    """The RFC 6454 origin of an absolute http(s) URL, with the default port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    return Origin(scheme, parts.hostname.lower(), parts.port or _DEFAULT_PORTS[scheme])


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_transport(origin: Origin, *, allow_insecure_http: bool, what: str) -> None:
    """Refuse to send a secret over plain HTTP except to loopback (or when allowed)."""
    if origin.scheme == "http" and not allow_insecure_http and not is_loopback(origin.host):
        raise InsecureTransportError(
            f"refusing to send {what} over plain HTTP to {origin.host}; use https, "
            "or pass allow_insecure_http=True if the network is trusted"
        )


_SCHEME_AND_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Escapes a server may decode into a separator, a NUL or (decoded twice) anything: a path that
# holds one could be routed outside a prefix that it seems to be below.
_AMBIGUOUS_ESCAPES = ("%2F", "%5C", "%00", "%25")

# A verdict on an origin: the token goes everywhere on it (True), nowhere (False), or only to
# paths below these prefixes.
_Verdict = bool | tuple[str, ...]


def normal_path(raw: str) -> str | None:
    """A raw (still percent-encoded) URL path as prefixes are matched against it.

    Escapes of unreserved characters are decoded (``/%61pi`` is ``/api``, RFC 3986 6.2.2.2)
    and the others upper-cased. None when servers could read the path two ways, so that no
    prefix may match it: a dot segment (``..``, ``%2e%2e``, Tomcat's ``..;``), a backslash, an
    encoded slash, backslash, NUL or percent sign.
    """
    path = _ESCAPE.sub(_unescape_unreserved, raw) or "/"
    if "\\" in path or any(escape in path for escape in _AMBIGUOUS_ESCAPES):
        return None
    if any(segment.split(";", 1)[0] in (".", "..") for segment in path.split("/")):
        return None
    return path


def _unescape_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else match.group(0).upper()


def _rule_of(entry: str) -> tuple[Origin, str]:
    """An ``origins`` entry: its origin and path prefix (``""``: the whole origin)."""
    origin = origin_of(entry)
    parts = urlsplit(entry)
    if parts.query or parts.fragment or "?" in entry or "#" in entry:
        raise ValueError(f"origins entry {entry!r}: a query or fragment has no place in it")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"origins entry {entry!r}: credentials have no place in it")
    path = normal_path(parts.path)
    if path is None:
        raise ValueError(
            f"origins entry {entry!r}: its path has a dot segment or an encoded separator"
        )
    return origin, path.rstrip("/")


class Destinations:
    """Where an integration may send the token: the ``origins`` allow-list (None: anywhere),
    and never plain HTTP off loopback unless ``allow_insecure_http``.

    An entry is ``scheme://host[:port]`` (that whole origin) or ``scheme://host[:port]/path``:
    then only to that path and below it, on a segment boundary (``/api`` allows ``/api`` and
    ``/api/x``, not ``/apix``), and never to a path servers could read two ways (see
    [`normal_path()`][normal_path]). Every integration asks this one object, with the path as it
    goes on the wire.

    Verdicts are remembered per origin: integrations ask on every request. The first request
    to an origin outside the allow-list (or to a path outside its prefixes) logs a WARNING
    naming it and the allowed ones: an ``origins`` entry that says ``localhost`` where requests
    say ``127.0.0.1`` would otherwise leave the API's 401 unexplained.
    """

    __slots__ = (
        "_by_prefix",
        "_mutex",
        "_rules",
        "_verdicts",
        "_warned",
        "allow_insecure_http",
        "has_paths",
        "origins",
    )

    def __init__(self, origins: Iterable[str] | None, *, allow_insecure_http: bool) -> None:
        if isinstance(origins, str):
            raise TypeError("origins is a list of URLs, not one URL: origins=[...]")
        self._rules: dict[Origin, _Verdict] | None = None
        if origins is not None:
            rules: dict[Origin, _Verdict] = {}
            for entry in origins:
                origin, prefix = _rule_of(entry)
                known = rules.get(origin, ())
                if not prefix or known is True:
                    rules[origin] = True
                else:
                    assert isinstance(known, tuple)
                    rules[origin] = (*known, prefix)
            self._rules = rules
        self.origins = None if self._rules is None else frozenset(self._rules)
        # Whether any verdict depends on the path: integrations only read it then.
        self.has_paths = any(isinstance(v, tuple) for v in (self._rules or {}).values())
        self.allow_insecure_http = allow_insecure_http
        self._verdicts: dict[tuple[str, str, int | None], _Verdict] = {}
        self._by_prefix: dict[str, _Verdict] = {}
        self._warned: set[Origin] = set()
        self._mutex = threading.Lock()

    def allows_url(self, url: str) -> bool:
        """[`allows()`][allows] for an absolute URL given as text; remembered per
        ``scheme://authority`` prefix, so that a repeated origin costs a match and a lookup, not a
        URL parse."""
        match = _SCHEME_AND_AUTHORITY.match(url)
        prefix = url if match is None else match.group()
        verdict = self._by_prefix.get(prefix)
        if verdict is None:
            parts = urlsplit(url)
            verdict = self._verdict(parts.scheme, parts.hostname or "", parts.port)
            if len(self._by_prefix) >= 1024:
                self._by_prefix.clear()
            self._by_prefix[prefix] = verdict
        if verdict is True:
            return True
        if isinstance(verdict, bool):
            return verdict
        rest = url[len(prefix) :]
        path = rest.split("#", 1)[0].split("?", 1)[0]
        return self._below(verdict, path, lambda: origin_of(url))

    def allows(self, scheme: str, host: str, port: int | None, path: str = "/") -> bool:
        """True if the token goes to this URL (``port`` None: the scheme's default; ``path``
        raw, as sent, without the query); raises InsecureTransportError if it must not but
        would (plain HTTP to a remote host the caller allowed)."""
        # Asked on every request: a remembered verdict costs one lookup, not a call.
        verdict = self._verdicts.get((scheme, host, port))
        if verdict is None:
            verdict = self._verdict(scheme, host, port)
        if verdict is True:
            return True
        if isinstance(verdict, bool):
            return verdict
        scheme = scheme.lower()
        return self._below(
            verdict, path, lambda: Origin(scheme, host.lower(), port or default_port(scheme))
        )

    def _verdict(self, scheme: str, host: str, port: int | None) -> _Verdict:
        key = (scheme, host, port)
        verdict = self._verdicts.get(key)
        if verdict is None:
            scheme = scheme.lower()
            origin = Origin(scheme, host.lower(), port or default_port(scheme))
            verdict = True if self._rules is None else self._rules.get(origin, False)
            if verdict is not False:
                check_transport(
                    origin, allow_insecure_http=self.allow_insecure_http, what="a token"
                )
            else:
                self._warn_once(origin, "that origin is not in origins")
            if len(self._verdicts) >= 1024:  # bounded: a crawler may visit many origins
                self._verdicts.clear()
            self._verdicts[key] = verdict
        return verdict

    def _below(
        self, prefixes: tuple[str, ...], raw_path: str, origin: Callable[[], Origin]
    ) -> bool:
        path = normal_path(raw_path)
        if path is not None and any(
            path == prefix or path.startswith(prefix + "/") for prefix in prefixes
        ):
            return True
        self._warn_once(origin(), "its path is not below the paths origins give for it")
        return False

    def _warn_once(self, origin: Origin, why: str) -> None:
        with self._mutex:  # verdicts race harmlessly; warnings would come twice
            if origin in self._warned:
                return
            if len(self._warned) >= 1024:
                self._warned.clear()
            self._warned.add(origin)
        logger.warning(
            "sending a request to %s without a token: %s (%s); origins match scheme, host "
            "and port exactly, and a path prefix on segment boundaries",
            origin,
            why,
            self,
        )

    def __str__(self) -> str:
        return ", ".join(self._entries())

    def _entries(self) -> list[str]:
        entries = []
        for origin, verdict in (self._rules or {}).items():
            if verdict is True:
                entries.append(str(origin))
            elif isinstance(verdict, tuple):
                entries.extend(f"{origin}{prefix}" for prefix in verdict)
        return sorted(entries)

    def __repr__(self) -> str:
        return repr(None if self._rules is None else self._entries())
