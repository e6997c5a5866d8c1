"""``freshtoken login | token | status | logout``: named profiles in a FileStore.

A profile holds what a later ``token`` needs to refresh on its own: the token endpoint, the
client id, the grant and the scope (non-secret, readable by ``status``), and the tokens with
the client secret of a confidential client (secret: owner-only file, sealed when an
encryption key is set). Only ``token`` ever prints a token, on stdout; every error is one line
on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from ._formats import FORMATS, render
from ._policy import check_transport, oauth_error, origin_of, read_json
from ._tokens import TokenSet
from .errors import AuthError, RefreshFailed, SessionExpired, StoreError
from .refreshers import (
    ClientAuth,
    ClientAuthMethod,
    ClientCredentials,
    OAuth2Refresher,
    Refresher,
    client_credentials_login,
    password_login,
)
from .stores.file import ENV_STORE, FileStore, ProfileInfo

if TYPE_CHECKING:
    from ._manager import TokenManager

__all__ = [
    "configure_login",
    "configure_logout",
    "configure_status",
    "configure_token",
    "run_login",
    "run_logout",
    "run_status",
    "run_token",
]

ENV_PROFILE = "FRESHTOKEN_PROFILE"
ENV_CLIENT_SECRET = "FRESHTOKEN_CLIENT_SECRET"
ENV_PASSWORD = "FRESHTOKEN_PASSWORD"
AUTH_METHODS: tuple[ClientAuthMethod, ...] = ("client_secret_basic", "client_secret_post", "none")
LOCK_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0


class _Failure(Exception):
    """A one-line reason to stop, printed as ``freshtoken: <reason>``."""


# -- arguments --------------------------------------------------------------------------------


def _add_store_arguments(parser: argparse.ArgumentParser, *, profile: bool = True) -> None:
    if profile:
        parser.add_argument(
            "--profile",
            default=os.environ.get(ENV_PROFILE) or "default",
            help=f"profile name (default: ${ENV_PROFILE} or 'default')",
        )
    parser.add_argument(
        "--store",
        metavar="PATH",
        default=None,
        help=f"token file (default: ${ENV_STORE} or ~/.config/freshtoken/tokens.json); "
        "set $FRESHTOKEN_ENCRYPTION_KEY to encrypt it",
    )


def configure_login(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-url", required=True, metavar="URL", help="the token endpoint")
    parser.add_argument("--client-id", required=True, metavar="ID")
    parser.add_argument(
        "--client-secret",
        metavar="SECRET",
        default=None,
        help=f"confidential clients; prefer ${ENV_CLIENT_SECRET} (arguments show in ps)",
    )
    parser.add_argument("--auth-method", choices=AUTH_METHODS, default=None)
    parser.add_argument(
        "--username", default=None, help="password grant; without it: client credentials"
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help=f"read the password from stdin (else ${ENV_PASSWORD}, else a hidden prompt)",
    )
    parser.add_argument("--scope", default=None)
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow plain http to a host that is not loopback (loopback is always allowed)",
    )
    _add_store_arguments(parser)


def configure_token(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="plain",
        help="plain: the token; header: 'Authorization: Bearer ...'; json: token, expiry, "
        "scope; env: shell export lines; k8s-exec: a kubectl ExecCredential",
    )
    _add_store_arguments(parser)


def configure_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_store_arguments(parser, profile=False)


def configure_logout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-revoke",
        action="store_true",
        help="only delete the profile here, without telling the server",
    )
    _add_store_arguments(parser)


# -- commands ---------------------------------------------------------------------------------


def run_login(args: argparse.Namespace) -> int:
    return _guarded(_login, args)


def run_token(args: argparse.Namespace) -> int:
    return _guarded(_token, args)


def run_status(args: argparse.Namespace) -> int:
    return _guarded(_status, args)


def run_logout(args: argparse.Namespace) -> int:
    return _guarded(_logout, args)


def _guarded(command: Any, args: argparse.Namespace) -> int:
    try:
        code: int = command(args)
    except (_Failure, AuthError, ValueError) as error:
        _say_error(str(error))
        return 1
    return code


def _say_error(message: str) -> None:
    line = " ".join(message.split())  # one line, whatever the message held
    print(f"freshtoken: {line}", file=sys.stderr)


def _store(args: argparse.Namespace, profile: str = "default") -> FileStore:
    return FileStore(args.store, profile=getattr(args, "profile", profile))


def _login(args: argparse.Namespace) -> int:
    store = _store(args)
    origin_of(args.token_url)  # a clear error for a URL that is not http(s)
    secret = args.client_secret or os.environ.get(ENV_CLIENT_SECRET) or None
    method: ClientAuthMethod = args.auth_method or ("client_secret_basic" if secret else "none")
    if args.username is not None:
        password = _password(args)
        tokens = password_login(
            args.token_url,
            username=args.username,
            password=password,
            client_id=args.client_id,
            client_secret=secret,
            auth_method=method,
            scope=args.scope,
            allow_insecure_http=args.allow_insecure_http,
        )
        grant = "password"
    else:
        if not secret:
            raise _Failure(
                "a client credentials login needs --client-secret or "
                f"${ENV_CLIENT_SECRET} (or pass --username for a password login)"
            )
        tokens = client_credentials_login(
            args.token_url,
            client_id=args.client_id,
            client_secret=secret,
            auth_method=method,
            scope=args.scope,
            allow_insecure_http=args.allow_insecure_http,
        )
        grant = "client_credentials"
    meta: dict[str, Any] = {
        "token_url": args.token_url,
        "client_id": args.client_id,
        "auth_method": method,
        "grant": grant,
        "scope": args.scope,
        "allow_insecure_http": bool(args.allow_insecure_http),
        "logged_in_at": time.time(),
    }
    if args.username is not None:
        meta["username"] = args.username
    store.save_profile(tokens, meta=meta, client_secret=secret)
    who = args.username if args.username is not None else f"client {args.client_id}"
    print(
        f"logged in as {who}: profile {store.profile!r} saved in {store.path} "
        f"(access token {_expiry_text(tokens.expires_at, time.time())}, "
        f"scope {tokens.scope or 'unknown'})"
    )
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = os.environ.get(ENV_PASSWORD) or getpass.getpass(
            f"Password for {args.username}: "
        )
    if not password:
        raise _Failure("no password given")
    return password


def _token(args: argparse.Namespace) -> int:
    store = _store(args)
    manager = open_profile(store)
    try:
        tokens = profile_tokens(manager, store)
    finally:
        close_refresher(manager.refresher)
    text = render(
        args.format,
        tokens,
        now=time.time(),
        refresh_due_at=manager.policy.refresh_due_at(tokens),
        exec_info=os.environ.get("KUBERNETES_EXEC_INFO"),
    )
    sys.stdout.write(text)
    return 0


def open_profile(store: FileStore) -> TokenManager:
    """A manager over ``store``'s profile and the refresher its settings describe."""
    from ._manager import TokenManager

    profile = store.load_profile()
    if profile is None:
        raise _Failure(f"no profile {store.profile!r} in {store.path}: run `freshtoken login`")
    refresher = _refresher(store, profile.meta, profile.client_secret)
    if profile.tokens is None and not refresher.can_acquire:
        raise _Failure(
            f"profile {store.profile!r} has no tokens (the session ended): "
            "run `freshtoken login` again"
        )
    return TokenManager(refresher, store, lock_timeout=LOCK_TIMEOUT)


def profile_tokens(manager: TokenManager, store: FileStore) -> TokenSet:
    """Fresh tokens from ``manager``, its failures said the way the commands say them."""
    try:
        return manager.get_tokens()
    except SessionExpired as error:
        raise _Failure(
            f"profile {store.profile!r}: {error}; run `freshtoken login` again"
        ) from None
    except RefreshFailed as error:
        raise _Failure(f"profile {store.profile!r}: {error}") from None


def close_refresher(refresher: Refresher) -> None:
    close = getattr(refresher, "close", None)
    if close is not None:
        close()


def _refresher(store: FileStore, meta: Mapping[str, Any], secret: str | None) -> Refresher:
    token_url = meta.get("token_url")
    client_id = meta.get("client_id")
    if not isinstance(token_url, str) or not isinstance(client_id, str):
        raise StoreError(
            f"profile {store.profile!r} in {store.path} lacks token_url or client_id: "
            "run `freshtoken login` again"
        )
    method = meta.get("auth_method")
    auth_method: ClientAuthMethod | None = method if method in AUTH_METHODS else None
    scope = meta.get("scope") if isinstance(meta.get("scope"), str) else None
    insecure = meta.get("allow_insecure_http") is True
    if meta.get("grant") == "client_credentials":
        if secret is None:
            raise StoreError(f"profile {store.profile!r} has no client secret: log in again")
        return ClientCredentials(
            token_url,
            client_id=client_id,
            client_secret=secret,
            auth_method=auth_method,
            scope=scope,
            allow_insecure_http=insecure,
        )
    return OAuth2Refresher(
        token_url,
        client_id=client_id,
        client_secret=secret,
        auth_method=auth_method,
        allow_insecure_http=insecure,
    )


def _status(args: argparse.Namespace) -> int:
    store = FileStore(args.store)
    profiles = store.profiles()
    now = time.time()
    if args.json:
        print(json.dumps([_status_record(info, now) for info in profiles.values()], indent=2))
        return 0
    if not profiles:
        print(f"no profiles in {store.path}: run `freshtoken login`")
        return 0
    headers = ("PROFILE", "ACCOUNT", "ACCESS TOKEN", "SCOPE", "LAST REFRESH", "STORE")
    rows = [_status_row(info, now) for info in profiles.values()]
    if sys.stdout.isatty():
        _print_rich_table(headers, rows, title=str(store.path))
    else:
        print(f"token store: {store.path}")
        _print_plain_table(headers, rows)
    return 0


def _status_record(info: ProfileInfo, now: float) -> dict[str, Any]:
    meta = info.meta
    return {
        "profile": info.name,
        "token_url": meta.get("token_url"),
        "client_id": meta.get("client_id"),
        "username": meta.get("username"),
        "grant": meta.get("grant"),
        "logged_in": info.has_tokens,
        "expires_at": info.expires_at,
        "expires_in": None if info.expires_at is None else round(info.expires_at - now, 3),
        "scope": info.scope,
        "last_refresh": info.updated_at,
        "has_refresh_token": info.has_refresh_token,
        "encrypted": info.encrypted,
    }


def _status_row(info: ProfileInfo, now: float) -> tuple[str, ...]:
    meta = info.meta
    client = str(meta.get("client_id", "?"))
    username = meta.get("username")
    account = f"{username} ({client})" if username else f"client {client}"
    access = _expiry_text(info.expires_at, now) if info.has_tokens else "none: log in again"
    last = "never" if info.updated_at is None else f"{_duration(now - info.updated_at)} ago"
    notes = "encrypted" if info.encrypted else "plain"
    if info.has_tokens and not info.has_refresh_token and meta.get("grant") != "client_credentials":
        notes += ", no refresh token"
    return (info.name, account, access, info.scope or "-", last, notes)


def _print_plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _print_rich_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, title: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ModuleNotFoundError:
        print(f"token store: {title}")
        _print_plain_table(headers, rows)
        return
    table = Table(title=title)
    for header in headers:
        table.add_column(header, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _expiry_text(expires_at: float | None, now: float) -> str:
    if expires_at is None:
        return "expiry unknown"
    left = expires_at - now
    if left <= 0:
        return f"expired {_duration(-left)} ago"
    return f"expires in {_duration(left)}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size, sub_unit, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} {(seconds % size) // sub_size}{sub_unit}"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds}s"


# -- logout -----------------------------------------------------------------------------------


def _logout(args: argparse.Namespace) -> int:
    store = _store(args)
    with store.lock(LOCK_TIMEOUT):  # no `token` may rotate what we are about to revoke
        profile = store.load_profile()
        if profile is None:
            raise _Failure(f"no profile {store.profile!r} in {store.path}")
        outcome = "no tokens were stored"
        if profile.tokens is not None and args.no_revoke:
            outcome = "tokens deleted here only (--no-revoke)"
        elif profile.tokens is not None:
            outcome = _revoke(store, profile.meta, profile.client_secret, profile.tokens)
        store.remove_profile()
    print(f"logged out: profile {store.profile!r} removed from {store.path}; {outcome}")
    return 0


def _revoke(store: FileStore, meta: Mapping[str, Any], secret: str | None, tokens: TokenSet) -> str:
    """RFC 7009 revocation of the refresh token (or of the access token when there is none)."""
    token_url = meta.get("token_url")
    client_id = meta.get("client_id")
    if not isinstance(token_url, str) or not isinstance(client_id, str):
        return "the profile names no server: tokens deleted here only"
    insecure = meta.get("allow_insecure_http") is True
    method = meta.get("auth_method")
    client = ClientAuth(client_id, secret, method if method in AUTH_METHODS else None)
    with httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False) as http:
        endpoint = _revocation_endpoint(http, token_url, insecure)
        if endpoint is None:
            return "the server advertises no revocation endpoint: tokens deleted here only"
        check_transport(origin_of(endpoint), allow_insecure_http=insecure, what="a token")
        if tokens.refresh_token is not None:
            form = {"token": tokens.refresh_token, "token_type_hint": "refresh_token"}
            what = "refresh token"
        else:
            form = {"token": tokens.access_token, "token_type_hint": "access_token"}
            what = "access token"
        try:
            response = http.send(client.request(endpoint, form, {}))
        except httpx.TransportError as error:
            raise _Failure(
                f"cannot reach the revocation endpoint {endpoint} ({type(error).__name__}); "
                "the profile was kept: retry, or pass --no-revoke"
            ) from None
    if response.status_code != 200:
        code, description = oauth_error(response.content, (form["token"], *client.secrets()))
        said = f" {code}" if code else ""
        if description:
            said += f" ({description})"
        raise _Failure(
            f"the server refused the revocation: HTTP {response.status_code}{said}; "
            "the profile was kept: retry, or pass --no-revoke"
        )
    return f"{what} revoked at {endpoint}"


def _revocation_endpoint(http: httpx.Client, token_url: str, insecure: bool) -> str | None:
    """The revocation endpoint from the server's metadata, if it advertises one.

    Tried in order: RFC 8414 at the origin, then for issuers with a path (the token
    endpoint's parent paths) RFC 8414's path insertion and OpenID Connect discovery. Metadata
    counts only if its ``token_endpoint`` is this profile's: a token never goes to another
    issuer's endpoint.
    """
    check_transport(origin_of(token_url), allow_insecure_http=insecure, what="a request")
    for url in _metadata_urls(token_url):
        try:
            response = http.get(url)
        except httpx.TransportError as error:
            raise _Failure(
                f"cannot reach {url} to find the revocation endpoint ({type(error).__name__});"
                " the profile was kept: retry, or pass --no-revoke"
            ) from None
        if response.status_code != 200:
            continue
        metadata = read_json(response.content)[0]
        if not isinstance(metadata, dict) or metadata.get("token_endpoint") != token_url:
            continue
        endpoint = metadata.get("revocation_endpoint")
        return endpoint if isinstance(endpoint, str) and endpoint else None
    return None


def _metadata_urls(token_url: str) -> list[str]:
    parts = urlsplit(token_url)
    base = f"{parts.scheme}://{parts.netloc}"
    urls = [f"{base}/.well-known/oauth-authorization-server"]
    segments = [segment for segment in parts.path.split("/") if segment][:-1]
    for end in range(len(segments), 0, -1):
        issuer_path = "/" + "/".join(segments[:end])
        urls.append(f"{base}/.well-known/oauth-authorization-server{issuer_path}")
        urls.append(f"{base}{issuer_path}/.well-known/openid-configuration")
    urls.append(f"{base}/.well-known/openid-configuration")
    return urls[:8]
