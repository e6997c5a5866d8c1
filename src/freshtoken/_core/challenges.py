"""``WWW-Authenticate`` challenges (RFC 9110 section 11.6.1, formerly RFC 7235 section 4.1).

    WWW-Authenticate = #challenge                     (one header line or several)
    challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
    auth-param       = token BWS "=" BWS ( token / quoted-string )

A comma separates both challenges and the parameters of one challenge: an element that is
``name=value`` belongs to the challenge before it, anything else starts a new challenge.
Inside a quoted string a comma, an ``=`` or ``error=`` is data, and ``\\x`` stands for ``x``.

The parser never raises: an element it cannot read is skipped up to the next comma outside
quotes (parameters after it are dropped: which challenge they belong to is unknown), and each
header line is read on its own, so a broken line (an unterminated quote) cannot swallow the
challenges of the next. Schemes and parameter names are compared without
case and returned lower-cased; a parameter given twice in one challenge keeps its first value.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Iterable, Mapping
from typing import TypeAlias

__all__ = ["Challenge", "HeaderValues", "is_token", "parse_challenges"]

HeaderValues: TypeAlias = str | Iterable[str] | None
"""One header value, every line of a repeated header, or no header at all."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_QUOTED = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_SPACES = re.compile(r"[ \t]*")
_SEPARATORS = re.compile(r"[ \t,]*")
# Up to the next comma outside a quoted string (an unterminated quote runs to the end).
_REST_OF_ELEMENT = re.compile(r'(?:[^",]+|"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?$))*', re.DOTALL)


@dataclasses.dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge: its ``scheme`` (lower-cased) and either ``params`` (names lower-cased,
    values unquoted) or a ``token68``."""

    scheme: str
    params: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    token68: str | None = None

    def param(self, name: str) -> str | None:
        return self.params.get(name.lower())


def parse_challenges(header: HeaderValues) -> tuple[Challenge, ...]:
    """Every challenge in ``header``, in order; garbage yields fewer challenges, never an error."""
    if header is None:
        return ()
    lines = [header] if isinstance(header, str) else header
    challenges: list[Challenge] = []
    for line in lines:
        if isinstance(line, str):
            challenges.extend(_parse_line(line))
    return tuple(challenges)


def is_token(text: str) -> bool:
    """Is ``text`` an RFC 9110 token, as an auth scheme's name must be?"""
    return _TOKEN.fullmatch(text) is not None


class _Builder:
    __slots__ = ("params", "scheme", "token68")

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.params: dict[str, str] = {}
        self.token68: str | None = None

    def add(self, name: str, value: str) -> None:
        self.params.setdefault(name.lower(), value)

    def build(self) -> Challenge:
        return Challenge(self.scheme, types.MappingProxyType(self.params), self.token68)


def _parse_line(line: str) -> list[Challenge]:
    built: list[_Builder] = []
    current: _Builder | None = None
    pos = _skip(_SEPARATORS, line, 0)
    while pos < len(line):
        name = _TOKEN.match(line, pos)
        if name is not None and _is_param(line, name.end()):
            value, pos = _param_value(line, name.end())
            if current is not None and value is not None:
                current.add(name.group(), value)
            pos = _finish_element(line, pos)
        elif name is None or (name.end() < len(line) and line[name.end()] not in " \t,"):
            # Not a parameter, not a scheme ("Bearer/x", 'Bearer"x"'): whose parameters follow
            # is unknown, so they go nowhere rather than to the challenge before.
            current = None
            pos = _skip_element(line, pos)
        else:
            current = _Builder(name.group().lower())
            built.append(current)
            pos = _challenge_body(line, name.end(), current)
            if current.token68 is not None:
                current = None  # a token68 challenge has no parameters to collect
        pos = _skip(_SEPARATORS, line, pos)
    return [builder.build() for builder in built]


def _challenge_body(line: str, pos: int, challenge: _Builder) -> int:
    """What follows a scheme up to the end of its element: a token68 or a first parameter."""
    start = _skip(_SPACES, line, pos)
    if start >= len(line) or line[start] == ",":
        return start
    first = _TOKEN.match(line, start)
    if first is not None and _is_param(line, first.end()):
        value, end = _param_value(line, first.end())
        if value is not None:
            challenge.add(first.group(), value)
    else:
        token68 = _TOKEN68.match(line, start)
        end = start if token68 is None else token68.end()
        if token68 is not None:
            challenge.token68 = token68.group()
    return _finish_element(line, end)


def _is_param(line: str, pos: int) -> bool:
    """After a token: ``BWS "=" BWS value``, where the value is not a token68's padding."""
    pos = _skip(_SPACES, line, pos)
    if pos >= len(line) or line[pos] != "=":
        return False
    pos = _skip(_SPACES, line, pos + 1)
    return pos < len(line) and line[pos] not in ",="


def _param_value(line: str, pos: int) -> tuple[str | None, int]:
    """The value after ``name`` ending at ``pos`` (``_is_param`` said there is one)."""
    pos = _skip(_SPACES, line, pos)
    pos = _skip(_SPACES, line, pos + 1)
    quoted = _QUOTED.match(line, pos)
    if quoted is not None:
        return _QUOTED_PAIR.sub(r"\1", quoted.group(1)), quoted.end()
    token = _TOKEN.match(line, pos)
    if token is not None:
        return token.group(), token.end()
    return None, pos


def _finish_element(line: str, pos: int) -> int:
    """Past optional spaces to the comma that must end an element; garbage is skipped."""
    pos = _skip(_SPACES, line, pos)
    if pos < len(line) and line[pos] != ",":
        pos = _skip_element(line, pos)
    return pos


def _skip_element(line: str, pos: int) -> int:
    return max(_skip(_REST_OF_ELEMENT, line, pos), pos + 1)


def _skip(pattern: re.Pattern[str], line: str, pos: int) -> int:
    """Past what ``pattern`` (which may match nothing) matches at ``pos``."""
    match = pattern.match(line, pos)
    return pos if match is None else match.end()
