"""The decisions, with no I/O: values and a clock in, verdicts out.

Rules (the manager and every integration follow them; nothing else decides):

* Freshness. A token is FRESH until its refresh is due, STALE from then until it expires (a
  refresh is due but the token still works), EXPIRED after. The refresh falls due at the
  server's ``refresh_in`` hint when given, else ``window`` seconds before expiry, where the
  window is the smaller of ``leeway`` and ``window_fraction`` of the lifetime (so short-lived
  tokens are not refreshed on every request), widened to at least ``REFRESH_HEADROOM`` times
  the observed refresh duration (at most half the lifetime) so that the refresh lands in time.
  A token of unknown expiry is always FRESH: only a 401 can tell. ``RefreshPolicy.schedule``
  computes the two instants once per token set.
* Floor. One credential refreshes at most once per ``min_interval`` seconds (monotonic), so
  that ``expires_in: 0``, ``refresh_in: 0`` or a server whose fresh tokens an API rejects
  cannot turn every request into a token request (see ``_credential``).
* Rejection. A response asks for a refresh when its status is in the configured set (401) and
  its Bearer challenges (RFC 6750 section 3, every ``WWW-Authenticate`` line) name no error
  code but ``invalid_token``. ``insufficient_scope`` and every other code are answers for the
  caller, not for us; other schemes' challenges (Basic; DPoP unless DPoP is configured) do not
  count. A 401 with no such challenge at all asks for a refresh.
* Token endpoint answers. 2xx with a JSON object is a token response, unless the object has an
  ``error`` (GitHub-style endpoints answer errors with 200): that is judged as the same error
  with a 400. A form-encoded answer is read like a JSON one. The OAuth2 error codes in
  ``PERMANENT_ERRORS``, their synonyms (GitHub's ``bad_refresh_token``...), the codes that need
  the user (``interaction_required``...), Entra's session-ending ``AADSTS`` codes and a bare
  401 end the session; ``invalid_request`` about concurrent requests is a lost refresh race
  (``refresh_conflict``: read the store again). Everything else (5xx, 429, 408, other 4xx,
  malformed bodies, network errors) is transient: back off, keep the tokens. Whatever a body
  holds (no JSON, deep nesting, huge numbers, other encodings), reading it raises nothing but
  these errors. Every form of every secret that was
  sent is cut out of the server's error text before it goes into one of ours.
* Backoff. Exponential with jitter, capped, never shorter than the server's Retry-After; a
  Retry-After beyond the cap is not slept through: the attempt fails at once and the
  credential is not retried before it. A refresh whose answer was lost is retried at once:
  the server may have rotated the refresh token, and servers with a reuse grace interval accept
  the same one again for a short while. Each attempt has an overall deadline (``timeout``).
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import json
import logging
import math
import random
import re
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

from ..errors import InsecureTransportError, RefreshFailed, SessionExpired
from .challenges import HeaderValues, parse_challenges
from .tokens import TokenSet

logger = logging.getLogger("freshtoken")

__all__ = [
    "PERMANENT_ERRORS",
    "Freshness",
    "Origin",
    "RefreshPolicy",
    "RetryPolicy",
    "check_transport",
    "freshness_at",
    "interpret_token_response",
    "normal_path",
    "oauth_error",
    "origin_of",
    "parse_retry_after",
    "error_verdict",
    "read_json",
    "read_token_answer",
    "wants_refresh",
]

REFRESH_HEADROOM = 3.0  # a refresh falls due at least this many refresh durations early

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
    token's lifetime at most, and never more often than once per ``min_interval`` seconds.

    ``refresh_duration`` is how long refreshes of this credential have been taking (the
    manager observes it): the refresh falls due at least ``REFRESH_HEADROOM`` times that
    before expiry, at most half the lifetime before, so that it lands before the token
    expires."""

    leeway: float = 30.0
    window_fraction: float = 0.25
    min_interval: float = 1.0
    refresh_duration: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.leeway) and self.leeway >= 0):
            raise ValueError("leeway must be a finite number of seconds >= 0")
        if not 0 <= self.window_fraction < 1:
            raise ValueError("window_fraction must be in [0, 1)")
        if not (math.isfinite(self.min_interval) and self.min_interval >= 0):
            raise ValueError("min_interval must be a finite number of seconds >= 0")
        if not (math.isfinite(self.refresh_duration) and self.refresh_duration >= 0):
            raise ValueError("refresh_duration must be a finite number of seconds >= 0")

    def refresh_due_at(self, tokens: TokenSet) -> float | None:
        if tokens.expires_at is None:
            return tokens.refresh_at
        window = self.leeway
        lifetime = tokens.lifetime
        if lifetime is not None:
            window = min(window, self.window_fraction * lifetime)
            if self.refresh_duration > 0:
                headroom = min(REFRESH_HEADROOM * self.refresh_duration, lifetime / 2)
                window = max(window, headroom)
        due = tokens.expires_at - window
        if tokens.refresh_at is not None:
            due = min(due, tokens.refresh_at)
        return due

    def schedule(self, tokens: TokenSet) -> tuple[float, float]:
        """``(due_at, expires_at)`` on the wall clock, ``inf`` where unknown."""
        due = self.refresh_due_at(tokens)
        expires = math.inf if tokens.expires_at is None else tokens.expires_at
        return (math.inf if due is None else min(due, expires)), expires

    def freshness(self, tokens: TokenSet, now: float) -> Freshness:
        due_at, expires_at = self.schedule(tokens)
        return freshness_at(due_at, expires_at, now)


def freshness_at(due_at: float, expires_at: float, now: float) -> Freshness:
    """The one place that turns a token's schedule and the time into its freshness."""
    if now >= expires_at:
        return Freshness.EXPIRED
    if now >= due_at:
        return Freshness.STALE
    return Freshness.FRESH


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try a failing refresh: ``attempts`` in all while callers wait, with delays
    ``initial * multiplier**n`` capped at ``maximum`` and spread by ``jitter`` (0..1). Each
    attempt must end within ``timeout`` seconds, however slowly the server answers."""

    attempts: int = 3
    initial: float = 0.5
    multiplier: float = 2.0
    maximum: float = 10.0
    jitter: float = 0.5
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if not (0 <= self.initial <= self.maximum and self.multiplier >= 1):
            raise ValueError("need 0 <= initial <= maximum and multiplier >= 1")
        if not math.isfinite(self.maximum):
            raise ValueError("maximum must be a finite number of seconds")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be in [0, 1]")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError("timeout must be a finite number of seconds > 0")

    def delay(
        self, failures: int, error: RefreshFailed | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based).

        Never shorter than the server's Retry-After, which may exceed ``maximum``: the caller
        decides whether to wait that long (see [`honours()`][honours]).
        """
        if error is not None and error.answer_lost and failures == 1:
            return 0.0
        base = min(self.maximum, self.initial * self.multiplier ** max(0, failures - 1))
        spread = (rng or random).uniform(1.0 - self.jitter, 1.0)
        delay = base * spread
        if error is not None and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay

    def honours(self, delay: float) -> bool:
        """Whether a flight may sleep ``delay`` seconds before its next attempt."""
        return delay <= self.maximum

    def bound(self) -> float:
        """An upper bound on one refresh flight's attempts, backoff included (seconds)."""
        return self.attempts * self.timeout + (self.attempts - 1) * self.maximum


def wants_refresh(
    status: int,
    www_authenticate: HeaderValues,
    statuses: Iterable[int] = (401,),
    schemes: Collection[str] = ("bearer",),
) -> bool:
    """Does this API response say the access token was rejected (RFC 6750 section 3.1)?

    ``www_authenticate`` is the header's value, or the list of its lines when it was repeated.
    ``schemes`` are the (lower-case) schemes whose challenges count: ``bearer``, and ``dpop``
    for a manager that sends DPoP tokens (RFC 9449 section 7.1: the same error codes, plus
    ``use_dpop_nonce`` and ``invalid_dpop_proof``, which a refresh cannot cure).
    """
    if status not in statuses:
        return False
    errors = {
        challenge.param("error")
        for challenge in parse_challenges(www_authenticate)
        if challenge.scheme in schemes
    }
    return errors <= {None, "invalid_token"}


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to isdigit, not to float
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
    secrets = tuple(secrets)
    success = 200 <= status < 300
    document, problem = read_token_answer(body)
    if success and problem is not None:
        raise RefreshFailed(
            "malformed_response", f"the token endpoint's answer {problem}", status=status
        )
    if success and not isinstance(document, dict):
        raise RefreshFailed(
            "malformed_response",
            f"the token endpoint answered a JSON {_json_kind(document)}, not an object",
            status=status,
        )
    if success and not document.get("error"):
        answer: dict[str, Any] = document
        return answer
    judged = 400 if success else status  # an error is the same error whatever the status
    code = _error_code(document)
    shown_code, description = _oauth_error(document, secrets)
    verdict = error_verdict(code, description, document)
    if code in _ALIASES:
        shown_code = _ALIASES[code]
        description = f"{code}: {description}" if description else code
    if verdict == "permanent" or (verdict is None and judged == 401 and code is None):
        raise SessionExpired(shown_code or "unauthorized", description, status=status)
    if verdict in ("refresh_conflict", "scope_required"):
        shown_code = verdict
    raise RefreshFailed(
        shown_code or ("server_error" if judged >= 500 else "http_error"),
        description,
        status=status,
        retry_after=retry_after,
    )


# Error codes of token endpoints that say in their own words what RFC 6749 5.2 says: the
# refresh token is dead (invalid_grant) or the client is unknown (invalid_client).
# bad_refresh_token, incorrect_client_credentials: GitHub
# (https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens,
# https://docs.github.com/en/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-oauth-app-access-token-request-errors);
# invalid_refresh_token, bad_client_secret, invalid_client_id: Slack's Web API
# (https://api.slack.com/methods/oauth.v2.access).
_ALIASES = {
    "bad_refresh_token": "invalid_grant",
    "invalid_refresh_token": "invalid_grant",
    "incorrect_client_credentials": "invalid_client",
    "bad_client_secret": "invalid_client",
    "invalid_client_id": "invalid_client",
}
# OpenID Connect Core 3.1.2.6: only the user can answer these; a refresh never will.
_NEEDS_THE_USER = frozenset(
    {"interaction_required", "login_required", "consent_required", "account_selection_required"}
)
# Microsoft Entra puts its own code in error_description ("AADSTS70008: ...") and in
# error_codes (https://learn.microsoft.com/entra/identity-platform/reference-error-codes).
# 70008 expired grant, 700082 expired by inactivity, 700084 SPA refresh token past 24 h,
# 50173 grant revoked (password change), 50076/50079 multi-factor authentication required:
# the session is over. 50196 is a loop the server broke off: back off, the grant is alive.
_AADSTS = re.compile(r"AADSTS(\d{4,7})")
_AADSTS_ENDED = frozenset({70008, 700082, 700084, 50173, 50076, 50079})
_AADSTS_PASSING = frozenset({50196})
_AADSTS_MISSING_PARAMETER = 900144


def error_verdict(code: str | None, description: str | None, document: Any) -> str | None:
    """What a token endpoint's error means beyond its RFC 6749 code, or None to judge it by
    status alone: ``permanent`` (the session is over), ``transient`` (try again later),
    ``refresh_conflict`` (another client refreshed with the same refresh token at the same
    moment: read the store again, Ory Hydra https://github.com/ory/hydra/issues/3604) or
    ``scope_required`` (the server wants ``scope`` on every refresh: Entra's AADSTS900144)."""
    text = description or ""
    numbers = {int(n) for n in _AADSTS.findall(text)}
    listed = document.get("error_codes") if isinstance(document, dict) else None
    if isinstance(listed, list):
        numbers.update(n for n in listed[:10] if isinstance(n, int) and not isinstance(n, bool))
    if numbers & _AADSTS_PASSING or "throttl" in text.lower():
        return "transient"
    if numbers & _AADSTS_ENDED:
        return "permanent"
    if _AADSTS_MISSING_PARAMETER in numbers and "scope" in text:
        return "scope_required"
    if code is None:
        return None
    code = _ALIASES.get(code, code)
    if code in PERMANENT_ERRORS or code in _NEEDS_THE_USER:
        return "permanent"
    if code == "invalid_request" and "concurrent" in text.lower():
        return "refresh_conflict"
    return None


def read_token_answer(body: bytes) -> tuple[Any, str | None]:
    """A token endpoint's answer: JSON, or ``application/x-www-form-urlencoded`` (GitHub
    answers so unless asked for JSON, Salesforce when asked ``format=urlencoded``), whatever
    its Content-Type says (GitHub has sent form bodies labelled JSON). Like
    [`read_json()`][read_json]: the document, or None and what is wrong with it."""
    document, problem = read_json(body)
    if problem is None or not body or len(body) > LARGEST_ANSWER:
        return document, problem
    form = _form_document(body)
    return (form, None) if form is not None else (document, problem)


def _form_document(body: bytes) -> dict[str, str] | None:
    try:
        text = body.decode("ascii").strip()
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        return None
    document = dict(pairs)
    if len(document) != len(pairs) or not {"access_token", "error"} & document.keys():
        return None  # a repeated field is no answer anyone meant; nor one with neither
    return document


LARGEST_ANSWER = 1 << 20
"""Bytes: a token answer is a few kilobytes; more is a broken or hostile server."""

_MOST_DIGITS = 100  # in a JSON integer: lifetimes have a handful, nothing legitimate has 100


class _TooManyDigits(ValueError):
    pass


def _json_integer(digits: str) -> int:
    if len(digits.lstrip("-")) > _MOST_DIGITS:
        raise _TooManyDigits
    return int(digits)


def read_json(body: bytes) -> tuple[Any, str | None]:
    """The JSON document in ``body``, or None and what is wrong with it (quoting none of it)."""
    if not body:
        return None, "is empty"
    if len(body) > LARGEST_ANSWER:
        return None, f"is {len(body)} bytes long, more than any token answer"
    try:
        return json.loads(body, parse_int=_json_integer), None
    except RecursionError:
        return None, "is JSON nested too deeply to read"
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except _TooManyDigits:
        return None, f"holds an integer of more than {_MOST_DIGITS} digits"
    except json.JSONDecodeError as error:
        return None, f"is not JSON ({error.msg} at character {error.pos})"
    except ValueError:
        return None, "is not JSON"


def _json_kind(document: Any) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if document is None else kinds.get(type(document), type(document).__name__)


# RFC 6749 5.2 and 4.1.2.1, RFC 6750 3.1, RFC 7009 2.2.1, RFC 8628 3.5, RFC 9449 7.1: codes
# that are shown as they are; any other code is server text like a description.
_KNOWN_CODES = PERMANENT_ERRORS | {
    "invalid_request",
    "invalid_scope",
    "access_denied",
    "unsupported_response_type",
    "server_error",
    "temporarily_unavailable",
    "invalid_token",
    "insufficient_scope",
    "unsupported_token_type",
    "authorization_pending",
    "slow_down",
    "expired_token",
    "invalid_dpop_proof",
    "use_dpop_nonce",
}
_LONGEST_CODE = 100
_LONGEST_DESCRIPTION = 200
_WITHHELD = "[withheld: it quotes something freshtoken sent]"


def _error_code(document: Any) -> str | None:
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, str) or not error or len(error) > _LONGEST_CODE:
        return None
    return error


def oauth_error(body: bytes, secrets: Iterable[str]) -> tuple[str | None, str | None]:
    """The error code and description of an RFC 6749 section 5.2 error answer, fit to show
    (secrets cut out, bounded, printable), or None for what it lacks."""
    return _oauth_error(read_token_answer(body)[0], tuple(secrets))


def _oauth_error(document: Any, secrets: tuple[str, ...]) -> tuple[str | None, str | None]:
    code = _error_code(document)
    if code is not None and code not in _KNOWN_CODES:
        code = _redact(_printable(code), secrets) or "[redacted]"
    description = document.get("error_description") if isinstance(document, dict) else None
    if not isinstance(description, str):
        return code, None
    description = _redact(_printable(description), secrets)
    if description is None:
        description = _WITHHELD
    if len(description) > _LONGEST_DESCRIPTION:
        description = description[:_LONGEST_DESCRIPTION] + "..."
    return code, description


_SHORTEST_CUT = 4  # a shorter secret ("a") would cut through ordinary words: withhold instead


def _redact(text: str, secrets: Iterable[str]) -> str | None:
    """``text`` with every form a server may echo of every secret replaced by [redacted]: as
    sent, URL-encoded (as in a form body), JSON-escaped, and as ``_printable`` shows it. None
    when a secret too short to cut out cleanly occurs in it: the caller withholds the text."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            escaped = (
                secret,
                quote(secret, safe=""),
                quote_plus(secret),
                json.dumps(secret)[1:-1],
                json.dumps(secret, ensure_ascii=False)[1:-1],
            )
            forms.update(escaped)
            forms.update(_printable(form) for form in escaped)
    if any(form in text for form in forms if len(form) < _SHORTEST_CUT):
        return None
    if not forms:
        return text
    longest_first = sorted(forms, key=len, reverse=True)  # a form may hold another
    return re.sub("|".join(map(re.escape, longest_first)), "[redacted]", text)


def _printable(text: str) -> str:
    # Server text ends up on terminals and in logs: no escape sequences, no line breaks.
    return "".join(ch if ch.isprintable() else "?" for ch in text)


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
        if isinstance(verdict, bool):
            return verdict
        rest = url[len(prefix) :]
        path = rest.split("#", 1)[0].split("?", 1)[0]
        return self._below(verdict, path, lambda: origin_of(url))

    def allows(self, scheme: str, host: str, port: int | None, path: str = "/") -> bool:
        """True if the token goes to this URL (``port`` None: the scheme's default; ``path``
        raw, as sent, without the query); raises InsecureTransportError if it must not but
        would (plain HTTP to a remote host the caller allowed)."""
        verdict = self._verdict(scheme, host, port)
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
