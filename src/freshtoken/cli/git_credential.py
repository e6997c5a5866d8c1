"""``freshtoken git-credential get | store | erase``: a git credential helper.

Set up once (``~/.gitconfig``):

    [credential]
        helper = freshtoken        # runs git-credential-freshtoken, installed with freshtoken

and say which hosts get which profile's token in ``~/.config/freshtoken/git-credential.ini``
(``$FRESHTOKEN_GIT_CONFIG`` or ``--config`` elsewhere):

    [https://git.example.com]
    profile = work                 # required: the freshtoken profile whose token is sent
    username = oauth2              # what git sends as the user name (default: oauth2)

    [https://git.example.com/team-b/]
    profile = team-b               # a path prefix; needs `git config credential.useHttpPath true`

A token goes only to a host named here, whatever helper line sends git our way: git asks
every helper about every host, and an unmapped host gets no answer (git asks the next
helper). The longest matching URL wins. Plain ``http://`` is accepted for loopback hosts only.

Hosts are compared as a client would connect to them, and whatever two URL parsers could read
differently gets no answer: ``host`` must be a plain host name, IPv4 or bracketed IPv6 address
with an optional port (no user info, ``@``, ``#``, ``%``, ``\\``, spaces, a trailing dot or
an empty port). Names match without ASCII case; ports match by number (the scheme's default
port is the same as none); IPv6 addresses match by value. Other spellings of a name (its
``xn--`` form, Unicode case) are other names: write the mapping as your remotes spell it. A
``url=`` is split as git splits it, and refused where a WHATWG parser (a browser, many
tools) would find another host: a ``\\`` before the path, two ``@``, an encoded host. A path
with ``.`` or ``..`` segments or a ``\\`` gets nothing either (an HTTP client resolves them,
so the request could leave the mapped path).

``get`` answers ``username``, ``password`` (the access token, refreshed first when due) and
``password_expiry_utc`` (Git 2.41+: when a refresh falls due, so that a storage helper such
as credential-cache never hands out a stale token). With ``bearer = true`` in the mapping and
a Git that announces ``capability[]=authtype`` (2.46+), it answers ``authtype=Bearer`` and
``credential`` instead, so the token travels as ``Authorization: Bearer``. An
``oauth_refresh_token`` git may pass in is ignored and never echoed: freshtoken keeps the
refresh token. ``store`` keeps nothing (the profile is the store). ``erase`` means the host
rejected the token git was given: if it is still the profile's current one, it is refreshed,
once, so the next git command gets a working token.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import hmac
import ipaddress
import os
import re
import string
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .._core.policy import check_transport, default_port, origin_of
from ..errors import AuthError, InsecureTransportError
from ..profiles import close_refresher
from ..stores._files import config_dir
from ..stores.file import ENV_STORE, FileStore
from ._profile_common import (
    Failure,
    guarded,
    open_profile,
    profile_tokens,
)

__all__ = [
    "HostMapping",
    "configure_parser",
    "load_mappings",
    "main",
    "match",
    "parse_attributes",
    "run",
]

ENV_CONFIG = "FRESHTOKEN_GIT_CONFIG"
# A host name: letters, digits, hyphens, underscores and dots (any Unicode letter or digit
# too: such a name matches only when spelled exactly as in the mapping).
_NAME = re.compile(r"[^\W]([\w.-]*[^\W])?", re.UNICODE)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
DEFAULT_USERNAME = "oauth2"
MAX_INPUT = 64 * 1024  # git sends a few hundred bytes; anything far larger is not git
_KEYS = frozenset({"profile", "username", "bearer", "store"})


@dataclasses.dataclass(frozen=True)
class HostMapping:
    """One ``[URL]`` section: which profile's token goes to that scheme, host and path."""

    url: str
    scheme: str
    host: str  # lower case, with ":port" unless it is the scheme's default
    path: tuple[str, ...]  # path segments, () for the whole host
    profile: str
    username: str = DEFAULT_USERNAME
    bearer: bool = False
    store: str | None = None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("get", "store", "erase"), help="what git asks")
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help=f"host to profile mapping (default: ${ENV_CONFIG} or "
        "~/.config/freshtoken/git-credential.ini)",
    )
    parser.add_argument(
        "--store",
        metavar="PATH",
        default=None,
        help=f"token file (default: ${ENV_STORE} or ~/.config/freshtoken/tokens.json)",
    )


def run(args: argparse.Namespace) -> int:
    return guarded(_helper, args)


def main(argv: Sequence[str] | None = None) -> int:
    """``git-credential-freshtoken ACTION``: what git runs for ``helper = freshtoken``."""
    from . import main as cli_main

    return cli_main(["git-credential", *(sys.argv[1:] if argv is None else argv)])


def _helper(args: argparse.Namespace) -> int:
    attributes = parse_attributes(sys.stdin.buffer.read(MAX_INPUT + 1))
    if args.action == "store":
        return 0  # the profile is the store; a password typed at git's prompt is not kept
    config = Path(args.config or os.environ.get(ENV_CONFIG) or config_dir() / "git-credential.ini")
    mapping = match(load_mappings(config), attributes)
    if mapping is None:
        return 0  # not ours: git asks the next helper
    store = FileStore(mapping.store or args.store, profile=mapping.profile)
    if args.action == "erase":
        return _erase(store, attributes)
    manager = open_profile(store)
    try:
        tokens = profile_tokens(manager, store)
    finally:
        close_refresher(manager.refresher)
    due = manager.policy.refresh_due_at(tokens)
    expiry = due if due is not None else tokens.expires_at
    lines = []
    if mapping.bearer and "authtype" in attributes.get("capability[]", []):
        lines += ["capability[]=authtype", "authtype=Bearer", f"credential={tokens.access_token}"]
    else:
        username = _single(attributes, "username") or mapping.username
        lines += [f"username={username}", f"password={tokens.access_token}"]
    if expiry is not None:
        lines.append(f"password_expiry_utc={max(int(expiry), int(time.time()))}")
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


def _erase(store: FileStore, attributes: Mapping[str, list[str]]) -> int:
    """The host rejected ``password``: refresh if it is still the profile's token."""
    rejected = _single(attributes, "password") or _single(attributes, "credential")
    if rejected is None:
        return 0
    stored = store.load()
    if stored is None or not hmac.compare_digest(
        stored.tokens.access_token.encode(), rejected.encode()
    ):
        return 0  # not our token, or already replaced: nothing to do
    manager = open_profile(store)
    try:
        current = manager.get_tokens()  # loads the profile (and refreshes if due anyway)
        if current.access_token == stored.tokens.access_token:
            manager.handle_rejection(current)
    except AuthError as error:
        raise Failure(
            f"git rejected profile {store.profile!r}'s token and the refresh failed: {error}"
        ) from None
    finally:
        close_refresher(manager.refresher)
    return 0


# -- the protocol ---------------------------------------------------------------------------


def parse_attributes(data: bytes) -> dict[str, list[str]]:
    """``key=value`` lines up to a blank line or the end; ``key[]`` keys may repeat.

    Raises ValueError for input that is not git's credential format.
    """
    if len(data) > MAX_INPUT:
        raise ValueError(f"git-credential: more than {MAX_INPUT} bytes of input; not from git")
    if b"\0" in data:
        raise ValueError("git-credential: the input holds a NUL byte; not from git")
    attributes: dict[str, list[str]] = {}
    for raw in data.decode("utf-8", "surrogateescape").split("\n"):
        line = raw.removesuffix("\r")
        if not line:
            break
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise ValueError(
                "git-credential: a line without key=value; input must be git's "
                "credential format (see `git help credential`)"
            )
        if key == "url":  # as git does: the URL replaces what came before, later lines win
            for name in _URL_PARTS:
                attributes.pop(name, None)
            attributes.update({name: [value] for name, value in _split_url(value).items()})
        elif key.endswith("[]"):
            if value:
                attributes.setdefault(key, []).append(value)
            else:
                attributes[key] = []  # an empty value clears the list
        else:
            attributes[key] = [value]
    return attributes


_URL_PARTS = ("protocol", "host", "path", "username", "password")
# A host that never matches: what a URL that parsers would read differently amounts to.
_NO_HOST = {"host": ""}


def _split_url(url: str) -> dict[str, str]:
    """``protocol``, ``host``, ``path`` (and ``username``) of ``url``, split as git's
    ``credential_from_url`` splits it: the host ends at the first ``/``, ``?`` or ``#``, user
    info ends at the first ``@``, host and path are percent-decoded. Where a WHATWG parser
    would read another host, the host is empty (nothing matches it)."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return _NO_HOST
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if found != -1:
            end = min(end, found)
    authority, tail = rest[:end], rest[end:]
    if "\\" in authority:
        return _NO_HOST  # WHATWG ends the host at a backslash in http(s); git does not
    if authority.count("@") > 1:
        return _NO_HOST  # git takes the first @, WHATWG the last
    userinfo, at, host = authority.rpartition("@")
    if "%" in host:
        return _NO_HOST  # git decodes it to a host that is no plain name (%40 is an @)
    parts = {"protocol": scheme, "host": host, "path": unquote(tail.lstrip("/")).rstrip("/")}
    if at:
        parts["username"] = unquote(userinfo.partition(":")[0])
    return parts


def _single(attributes: Mapping[str, list[str]], key: str) -> str | None:
    values = attributes.get(key)
    return values[-1] if values else None


def load_mappings(path: Path) -> list[HostMapping]:
    """The ``[URL]`` sections of ``path``; none when it does not exist."""
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=("#", ";"), default_section="\0defaults"
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file)
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise Failure(f"cannot read {path}: {error}") from None
    except configparser.Error as error:
        raise Failure(f"{path} is not valid: {' '.join(str(error).split())}") from None
    return [_section(path, name, parser[name]) for name in parser.sections()]


def _section(path: Path, name: str, section: Mapping[str, str]) -> HostMapping:
    where = f"{path} [{name}]"
    unknown = set(section) - _KEYS
    if unknown:
        raise Failure(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    parts = urlsplit(name)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Failure(f"{where}: a section names a URL such as [https://git.example.com]")
    if parts.username or parts.password or parts.query or parts.fragment or "@" in name:
        raise Failure(f"{where}: the URL may hold a scheme, a host, a port and a path only")
    host = _host(parts.scheme, parts.netloc)
    if host is None or "\\" in name:
        raise Failure(f"{where}: {parts.netloc!r} is not a plain host name or address with a port")
    segments = _segments(unquote(parts.path))
    if segments is None:
        raise Failure(f"{where}: the path may not hold . or .. segments")
    try:
        check_transport(origin_of(name), allow_insecure_http=False, what="a git token")
    except InsecureTransportError as error:
        raise Failure(f"{where}: {error}") from None
    profile = section.get("profile", "").strip()
    if not profile:
        raise Failure(f"{where}: `profile = NAME` is required")
    username = section.get("username", DEFAULT_USERNAME).strip()
    if not username or "\n" in username:
        raise Failure(f"{where}: username must be one non-empty line")
    bearer_text = section.get("bearer", "false").strip().lower()
    if bearer_text not in ("true", "false", "yes", "no", "1", "0"):
        raise Failure(f"{where}: bearer is true or false")
    store = section.get("store")
    return HostMapping(
        url=name,
        scheme=parts.scheme,
        host=host,
        path=segments,
        profile=profile,
        username=username,
        bearer=bearer_text in ("true", "yes", "1"),
        store=None if store is None else os.path.expanduser(store.strip()),
    )


def match(
    mappings: Sequence[HostMapping], attributes: Mapping[str, list[str]]
) -> HostMapping | None:
    """The mapping for git's protocol, host and path: the longest path prefix wins."""
    protocol = _single(attributes, "protocol")
    host = _single(attributes, "host")
    if protocol not in ("http", "https") or not host:
        return None
    host = _host(protocol, host)
    path = _segments(_single(attributes, "path") or "")
    if host is None or path is None:
        return None  # not what git sends for a URL a client would connect to as mapped
    best: HostMapping | None = None
    for mapping in mappings:
        if mapping.scheme != protocol or mapping.host != host:
            continue
        if path[: len(mapping.path)] != mapping.path:
            continue
        if best is None or len(mapping.path) > len(best.path):
            best = mapping
    return best


def _host(scheme: str, host: str) -> str | None:
    """``host`` (``name[:port]``, ``[IPv6][:port]``) as compared: ASCII letters in lower
    case, the port as a number and left out when it is the scheme's default, an IPv6 address
    in its compressed form; None for anything else (see the module docstring)."""
    port: str | None
    if host.startswith("["):
        literal, bracket, after = host[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            return None
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            return None
        if address.scope_id is not None:
            return None  # a zone names an interface of the client, not a server
        name, port = f"[{address.compressed}]", after[1:] if after else None
    else:
        name, colon, after = host.partition(":")
        port = after if colon else None
        # No trailing dot either: the same host to DNS, but another name to TLS and cookies.
        if not _NAME.fullmatch(name) or len(name) > 253 or ".." in name:
            return None
        name = name.translate(_ASCII_LOWER)
    if port is None:
        return name
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) <= 65535):
        return None
    return name if int(port) == default_port(scheme) else f"{name}:{int(port)}"


def _segments(path: str) -> tuple[str, ...] | None:
    """The path's segments, or None when a client would resolve it elsewhere (``.``,
    ``..``, ``\\``)."""
    segments = tuple(segment for segment in path.split("/") if segment)
    if "\\" in path or any(segment in (".", "..") for segment in segments):
        return None
    return segments
