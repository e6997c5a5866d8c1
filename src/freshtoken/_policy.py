"""The decisions, with no I/O: values and a clock in, verdicts out.

Rules (the manager and every integration follow them; nothing else decides):

* Freshness. A token is FRESH until its refresh is due, STALE from then until it expires (a
  refresh is due but the token still works), EXPIRED after. The refresh falls due at the
  server's ``refresh_in`` hint when given, else ``window`` seconds before expiry, where the
  window is the smaller of ``leeway`` and ``window_fraction`` of the lifetime (so short-lived
  tokens are not refreshed on every request). A token of unknown expiry is always FRESH: only a
  401 can tell.
* Rejection. A response asks for a refresh when its status is in the configured set (401) and
  its Bearer challenges (RFC 6750 section 3, every ``WWW-Authenticate`` line) name no error
  code but ``invalid_token``. ``insufficient_scope`` and every other code are answers for the
  caller, not for us; other schemes' challenges (DPoP, Basic) do not count. A 401 with no
  Bearer challenge at all asks for a refresh.
* Token endpoint answers. 2xx with a JSON object is a token response. The OAuth2 error codes in
  ``PERMANENT_ERRORS`` and a bare 401 end the session. Everything else (5xx, 429, 408, other
  4xx, malformed bodies, network errors) is transient: back off, keep the tokens.
* Backoff. Exponential with jitter, capped, never shorter than the server's Retry-After. A
  refresh whose answer was lost is retried at once: the server may have rotated the refresh
  token, and servers with a reuse grace interval accept the same one again for a short while.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import json
import math
import random
import re
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from ._challenges import HeaderValues, parse_challenges
from ._tokens import TokenSet
from .errors import InsecureTransportError, RefreshFailed, SessionExpired

__all__ = [
    "PERMANENT_ERRORS",
    "Freshness",
    "Origin",
    "RefreshPolicy",
    "RetryPolicy",
    "check_transport",
    "interpret_token_response",
    "origin_of",
    "parse_retry_after",
    "wants_refresh",
]

PERMANENT_ERRORS = frozenset(
    {"invalid_grant", "invalid_client", "unauthorized_client", "unsupported_grant_type"}
)


class Freshness(enum.Enum):
    FRESH = "fresh"
    STALE = "stale"
    EXPIRED = "expired"


@dataclasses.dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """When to refresh: ``leeway`` seconds before expiry at most, ``window_fraction`` of the
    token's lifetime at most."""

    leeway: float = 30.0
    window_fraction: float = 0.25

    def __post_init__(self) -> None:
        if not (math.isfinite(self.leeway) and self.leeway >= 0):
            raise ValueError("leeway must be a finite number of seconds >= 0")
        if not 0 <= self.window_fraction < 1:
            raise ValueError("window_fraction must be in [0, 1)")

    def refresh_due_at(self, tokens: TokenSet) -> float | None:
        if tokens.expires_at is None:
            return tokens.refresh_at
        window = self.leeway
        lifetime = tokens.lifetime
        if lifetime is not None:
            window = min(window, self.window_fraction * lifetime)
        due = tokens.expires_at - window
        if tokens.refresh_at is not None:
            due = min(due, tokens.refresh_at)
        return due

    def freshness(self, tokens: TokenSet, now: float) -> Freshness:
        if tokens.expires_at is not None and now >= tokens.expires_at:
            return Freshness.EXPIRED
        due = self.refresh_due_at(tokens)
        if due is not None and now >= due:
            return Freshness.STALE
        return Freshness.FRESH


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try a failing refresh: ``attempts`` in all while callers wait, with delays
    ``initial * multiplier**n`` capped at ``maximum`` and spread by ``jitter`` (0..1)."""

    attempts: int = 3
    initial: float = 0.5
    multiplier: float = 2.0
    maximum: float = 10.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if not (0 <= self.initial <= self.maximum and self.multiplier >= 1):
            raise ValueError("need 0 <= initial <= maximum and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be in [0, 1]")

    def delay(
        self, failures: int, error: RefreshFailed | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        if error is not None and error.answer_lost and failures == 1:
            return 0.0
        base = min(self.maximum, self.initial * self.multiplier ** max(0, failures - 1))
        spread = (rng or random).uniform(1.0 - self.jitter, 1.0)
        delay = base * spread
        if error is not None and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay


def wants_refresh(
    status: int, www_authenticate: HeaderValues, statuses: Iterable[int] = (401,)
) -> bool:
    """Does this API response say the access token was rejected (RFC 6750 section 3.1)?

    ``www_authenticate`` is the header's value, or the list of its lines when it was repeated.
    """
    if status not in statuses:
        return False
    errors = {
        challenge.param("error")
        for challenge in parse_challenges(www_authenticate)
        if challenge.scheme == "bearer"
    }
    return errors <= {None, "invalid_token"}


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - now)


def interpret_token_response(
    status: int, body: bytes, *, retry_after: float | None = None, secrets: Iterable[str] = ()
) -> Mapping[str, Any]:
    """The JSON object of a successful token response, or the error it amounts to.

    ``secrets`` (the refresh token sent, a password) are cut out of the server's error
    description: a careless or hostile server may echo them, and errors get logged.
    """
    document: Any = None
    try:
        document = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        document = None
    if 200 <= status < 300:
        if not isinstance(document, dict):
            raise RefreshFailed(
                "malformed_response", "token endpoint did not answer JSON", status=status
            )
        return document
    error, description = _oauth_error(document, tuple(secrets))
    if error in PERMANENT_ERRORS or (status == 401 and error is None):
        raise SessionExpired(error or "unauthorized", description, status=status)
    raise RefreshFailed(
        error or ("server_error" if status >= 500 else "http_error"),
        description,
        status=status,
        retry_after=retry_after,
    )


def _oauth_error(document: Any, secrets: tuple[str, ...]) -> tuple[str | None, str | None]:
    if not isinstance(document, dict):
        return None, None
    error = document.get("error")
    description = document.get("error_description")
    if not isinstance(error, str) or not error or len(error) > 100:
        error = None
    else:
        error = _redact(error, secrets)
    if not isinstance(description, str):
        description = None
    else:
        description = _redact(description, secrets)
        if len(description) > 200:
            description = description[:200] + "..."
    return error, description


def _redact(text: str, secrets: Iterable[str]) -> str:
    # Real secrets are long; a short one (a test's "a") would match inside ordinary words.
    quoted = sorted({re.escape(s) for s in secrets if len(s) >= 6}, key=len, reverse=True)
    return re.sub("|".join(quoted), "[redacted]", text) if quoted else text


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


class Destinations:
    """Where an integration may send the token: the ``origins`` allow-list (None: anywhere),
    and never plain HTTP off loopback unless ``allow_insecure_http``.

    Verdicts are remembered per origin: integrations ask on every request.
    """

    __slots__ = ("_verdicts", "allow_insecure_http", "origins")

    def __init__(self, origins: Iterable[str] | None, *, allow_insecure_http: bool) -> None:
        self.origins = None if origins is None else frozenset(origin_of(url) for url in origins)
        self.allow_insecure_http = allow_insecure_http
        self._verdicts: dict[Origin, bool] = {}

    def allow(self, origin: Origin) -> bool:
        """True if the token goes to ``origin``; raises InsecureTransportError if it must not
        but would (plain HTTP to a remote host the caller allowed)."""
        verdict = self._verdicts.get(origin)
        if verdict is None:
            verdict = self.origins is None or origin in self.origins
            if verdict:
                check_transport(
                    origin, allow_insecure_http=self.allow_insecure_http, what="a token"
                )
            if len(self._verdicts) >= 1024:  # bounded: a crawler may visit many origins
                self._verdicts.clear()
            self._verdicts[origin] = verdict
        return verdict

    def __repr__(self) -> str:
        return repr(None if self.origins is None else sorted(map(str, self.origins)))
