"""Token endpoint answers, read and judged with no I/O: a token response, or the error it
amounts to (permanent: the session ended; transient: back off, keep the tokens).

The rule (`freshtoken._core.policy` states the others):

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
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus

from ..errors import RefreshFailed, SessionExpired

__all__ = [
    "LARGEST_ANSWER",
    "PERMANENT_ERRORS",
    "error_verdict",
    "interpret_token_response",
    "oauth_error",
    "read_json",
    "read_token_answer",
]

PERMANENT_ERRORS = frozenset(
    {"invalid_grant", "invalid_client", "unauthorized_client", "unsupported_grant_type"}
)


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
