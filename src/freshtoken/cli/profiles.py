"""``freshtoken login | token | status | logout``: named profiles in a FileStore.

``login`` takes an issuer (discovered) or a bare token endpoint, and a flow: ``browser``
(authorization code + PKCE through a loopback redirect; the default when a browser can be
opened), ``device`` (the default otherwise: no display, an SSH session), ``password`` or
``client-credentials``. The browser is the one ``$BROWSER`` names (a command, ``%s`` standing
for the URL; several separated by ``os.pathsep``; read at each login, so tests can play the
browser with a script), else the system's; the URL is printed too.

A profile holds what a later ``token`` needs to refresh on its own: the issuer, the token
endpoint, the client id and authentication, the grant and the scope (non-secret, readable by
``status``), and the tokens with the client secret of a confidential client (secret:
owner-only file, sealed when an encryption key is set); a private key stays in its file,
which the profile names. Only ``token`` ever prints a token, on stdout; every error is one
line on stderr and a non-zero exit, in terms of the CLI's flags.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import shlex
import subprocess
import sys
import time
import webbrowser
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from .. import providers
from .._arguments import seconds
from .._core.policy import check_transport, oauth_error, origin_of
from .._core.tokens import TokenResponseError, TokenSet
from .._engine.host import flights_in_progress
from .._logins import flows as logins
from .._logins.flows import DevicePrompt, client_for
from .._oauth.discovery import ServerMetadata, discover
from ..errors import AuthError, LoginFailed, RefreshFailed, SessionExpired, StoreError
from ..profiles import close_refresher, open_manager, refresher_of
from ..providers import Provider
from ..refreshers import (
    ClientAuth,
    ClientAuthMethod,
)
from ..stores._files import process_lock
from ..stores.file import _FIX as _CORRUPT_ADVICE
from ..stores.file import ENV_STORE, FileStore, Profile, ProfileInfo
from .formats import FORMATS, render

if TYPE_CHECKING:
    from .._engine.manager import TokenManager

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
AUTH_METHODS: tuple[ClientAuthMethod, ...] = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
)
FLOWS = ("browser", "device", "password", "client-credentials")
GRANTS = {
    "browser": "authorization_code",
    "device": "device_code",
    "password": "password",
    "client-credentials": "client_credentials",
}
LOCK_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0
BROWSER_TIMEOUT = 300.0
# Messages of the library name its keywords; the CLI user knows the flags.
_CLI_WORDS = (
    ("pass allow_insecure_http=True", "pass --allow-insecure-http"),
    ("allow_insecure_http=True", "--allow-insecure-http"),
    ("Pass encryption_key= or set $", "Set $"),
    ("pass encryption_key= or set $", "set $"),
    (
        "or drop_encryption=True to store it unencrypted",
        "or remove the profile first (`freshtoken logout --no-revoke`, with the key)",
    ),
    ("give FileStore another path", "pass another --store"),
    (
        "move it aside and log in again",
        "`freshtoken login --replace-corrupt` moves it aside and logs in again",
    ),
    ("private_key is not", "the --private-key file is not"),
    ("use a device or password login", "use --flow device or --flow password"),
    ("use a browser login", "use --flow browser"),
    ("use a device login", "use --flow device"),
)


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
    server = parser.add_mutually_exclusive_group(required=True)
    server.add_argument(
        "--issuer", metavar="URL", help="the server's issuer; its endpoints are discovered"
    )
    server.add_argument(
        "--token-url", metavar="URL", help="the token endpoint, for servers without discovery"
    )
    server.add_argument(
        "--resource",
        metavar="URL",
        help="an API (an MCP server) that says where to log in (RFC 9728): nothing else needed",
    )
    server.add_argument(
        "--provider",
        choices=providers.NAMES,
        metavar="NAME",
        help=f"a provider preset ({', '.join(providers.NAMES)}): its endpoints and quirks",
    )
    parser.add_argument(
        "--provider-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the --provider preset: tenant=..., base_url=..., realm=...",
    )
    parser.add_argument(
        "--client-id",
        metavar="ID",
        help="the OAuth client to log in as (with --resource: default, register one)",
    )
    parser.add_argument(
        "--flow",
        choices=FLOWS,
        default=None,
        help="default: password with --username; with --issuer, browser when one can be"
        " opened, else device; with --token-url, client-credentials",
    )
    parser.add_argument(
        "--client-secret",
        metavar="SECRET",
        default=None,
        help=f"confidential clients; prefer ${ENV_CLIENT_SECRET} (arguments show in ps)",
    )
    parser.add_argument(
        "--private-key",
        metavar="PATH",
        default=None,
        help="a PEM private key file: the client authenticates with private_key_jwt",
    )
    parser.add_argument("--key-id", metavar="KID", default=None, help="the private key's kid")
    parser.add_argument(
        "--auth-method",
        choices=AUTH_METHODS,
        default=None,
        help="default: from the server's metadata and the credential given",
    )
    parser.add_argument(
        "--username", default=None, help="log in with a password as this user (--flow password)"
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help=f"read the password from stdin (else ${ENV_PASSWORD}, else a hidden prompt)",
    )
    parser.add_argument(
        "--scope",
        default=None,
        help="space-separated scopes to ask for (default: the server's choice; browser and "
        "device logins ask for openid offline_access where offered)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds(positive=True),
        default=BROWSER_TIMEOUT,
        metavar="SECONDS",
        help="how long the browser flow waits for the browser (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow plain http to a host that is not loopback (loopback is always allowed)",
    )
    parser.add_argument(
        "--replace-corrupt",
        action="store_true",
        help="if the token file is corrupt, move it aside (kept as FILE.corrupt) and start a"
        " new one; at a terminal, login asks",
    )
    _add_store_arguments(parser)


def configure_token(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resource",
        metavar="URL",
        default=None,
        help="the token of the API at URL (logged in with `freshtoken login --resource URL`)",
    )
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
    return _guarded(_login, args, prefix="login failed: ")


def run_token(args: argparse.Namespace) -> int:
    return _guarded(_token, args)


def run_status(args: argparse.Namespace) -> int:
    return _guarded(_status, args)


def run_logout(args: argparse.Namespace) -> int:
    return _guarded(_logout, args)


def _guarded(command: Any, args: argparse.Namespace, prefix: str = "") -> int:
    try:
        code: int = command(args)
    except (_Failure, AuthError, ValueError, OSError) as error:
        message = str(error)
        if not message.startswith(prefix):
            message = prefix + message
        _say_error(message)
        return 1
    except KeyboardInterrupt:
        _say_error(prefix + cancelled())
        return 130
    return code


def cancelled() -> str:
    """What Ctrl-C did. A refresh already sent goes on until its answer is saved (its rotated
    refresh token would be lost otherwise): the process ends then, or at a second Ctrl-C."""
    if flights_in_progress():
        return (
            "cancelled; finishing the refresh already sent so that its tokens are kept "
            "(Ctrl-C again abandons it)"
        )
    return "cancelled"


def _say_error(message: str) -> None:
    line = " ".join(message.split())  # one line, whatever the message held
    for words, flag in _CLI_WORDS:
        line = line.replace(words, flag)
    print(f"freshtoken: {line}", file=sys.stderr)


def _store(args: argparse.Namespace, profile: str = "default") -> FileStore:
    return FileStore(args.store, profile=getattr(args, "profile", profile))


def _login(args: argparse.Namespace) -> int:
    if args.resource is not None:
        from .resource import login

        return login(args, _open_browser)
    if args.client_id is None:
        raise _Failure("--client-id is required with --issuer, --token-url and --provider")
    store = _store(args)
    replace = _writable_store(store, replace_corrupt=args.replace_corrupt)
    secret = args.client_secret or os.environ.get(ENV_CLIENT_SECRET) or None
    key_file = None if args.private_key is None else str(Path(args.private_key).resolve())
    private_key = None if key_file is None else _read_private_key(key_file)
    insecure = bool(args.allow_insecure_http)
    _check_client_flags(args.auth_method, secret, key_file)
    metadata: ServerMetadata | None = None
    provider = _provider(args.provider, args.provider_option)
    if provider is not None:
        metadata = provider.metadata(allow_insecure_http=insecure)
        token_url = metadata.token_endpoint
        if token_url is None:
            raise _Failure(f"the {provider.name} preset names no token endpoint")
    elif args.issuer is not None:
        metadata = discover(args.issuer, allow_insecure_http=insecure)
        token_url = metadata.token_endpoint
        if token_url is None:
            raise _Failure(f"{metadata.issuer} names no token endpoint: pass --token-url instead")
    else:
        origin_of(args.token_url)  # a clear error for a URL that is not http(s)
        token_url = args.token_url
    flow = _flow(args, metadata, secret, private_key)
    client = client_for(
        metadata,
        args.client_id,
        secret,
        auth_method=args.auth_method,
        private_key=private_key,
        key_id=args.key_id,
    )
    tokens = _obtain(args, flow, metadata, token_url, client)
    meta: dict[str, Any] = {
        "refresher": "client_credentials" if flow == "client-credentials" else "oauth2",
        "issuer": None if metadata is None else metadata.issuer,
        "provider": None if provider is None else provider.name,
        "provider_settings": None if provider is None else dict(provider.settings),
        "quirks": None if provider is None else provider.quirks.to_settings() or None,
        "token_url": token_url,
        "client_id": args.client_id,
        "auth_method": client.method,
        "grant": GRANTS[flow],
        "scope": args.scope,
        "allow_insecure_http": insecure,
        "logged_in_at": time.time(),
    }
    if key_file is not None:
        meta["private_key_file"] = key_file
        meta["key_id"] = args.key_id
    account = args.username if flow == "password" else _account(tokens)
    if account is not None:
        meta["username"] = account
    if replace:
        _move_aside(store)
    store.save_profile(tokens, meta=meta, client_secret=secret)
    who = account if account is not None else f"client {args.client_id}"
    print(
        f"logged in as {who}: profile {store.profile!r} saved in {store.path} "
        f"(access token {_expiry_text(tokens.expires_at, time.time())}, "
        f"scope {tokens.scope or 'unknown'})"
    )
    return 0


def _provider(name: str | None, options: list[str]) -> Provider | None:
    """The ``--provider`` preset with its ``--provider-option KEY=VALUE`` settings."""
    if name is None:
        if options:
            raise _Failure("--provider-option is for a --provider preset")
        return None
    settings: dict[str, Any] = {}
    for option in options:
        key, equals, value = option.partition("=")
        if not equals or not key:
            raise _Failure(f"--provider-option takes KEY=VALUE, not {option[:40]!r}")
        settings[key] = {"true": True, "false": False}.get(value.lower(), value)
    try:
        return providers.get(name, **settings)
    except ValueError as error:
        raise _Failure(str(error)) from None


def _writable_store(store: FileStore, *, replace_corrupt: bool) -> bool:
    """Whether the token file is corrupt and to be replaced once the login has its tokens.

    A file that cannot be written fails the login before a session starts. A corrupt one (not
    JSON, truncated, torn) is replaced with --replace-corrupt or when the user says yes at
    the terminal, else the one line says how. A file that is not ours, or of a newer
    freshtoken, is never replaced."""
    try:
        store.profiles()
        return False
    except StoreError as error:
        problem = _corruption(error)
        if problem is None:
            raise
    if replace_corrupt:
        return True
    aside = _aside(store.path)
    if _interactive() and _confirm(f"{problem}. Move it to {aside} and start a new one? [y/N] "):
        return True
    raise _Failure(f"{problem}: pass --replace-corrupt to move it to {aside} and start a new one")


def _move_aside(store: FileStore) -> None:
    """Move the corrupt token file aside (kept, owner-only as it was), unless another login
    replaced it meanwhile."""
    with process_lock(store.write_lock_path).hold(LOCK_TIMEOUT, "write"):
        try:
            store.profiles()
            return
        except StoreError as error:
            if _corruption(error) is None:
                raise
        aside = _aside(store.path)
        os.rename(store.path, aside)
    print(f"moved the corrupt token file to {aside}", file=sys.stderr, flush=True)


def _corruption(error: StoreError) -> str | None:
    """What is wrong with a corrupt token file, if that is what ``error`` says: the store ends
    those messages with its advice to move the file aside, which the login can do."""
    message = str(error)
    if not message.endswith(_CORRUPT_ADVICE):
        return None
    return message.removesuffix(_CORRUPT_ADVICE).rstrip("; ")


def _aside(path: Path) -> Path:
    """``path.corrupt``, or ``path.corrupt-2``... if taken: an earlier one is kept."""
    candidate = Path(f"{path}.corrupt")
    number = 1
    while candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = Path(f"{path}.corrupt-{number}")
    return candidate


def _confirm(question: str) -> bool:
    """Ask on the terminal; yes only for y or yes."""
    with _prompt_line():  # from before the question: a Ctrl-C may come as soon as it shows
        print(question, end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
    if not answer.endswith("\n"):  # Ctrl-D: the cursor is still after the question
        print(file=sys.stderr, flush=True)
    return answer.strip().lower() in ("y", "yes")


@contextlib.contextmanager
def _prompt_line(*, on_terminal: bool = False) -> Iterator[None]:
    """Ctrl-C at a prompt leaves the cursor after it (the terminal echoes no newline, and
    getpass writes its own only after a line is entered): end that line, where the prompt
    went (``on_terminal``: the terminal itself if it can be opened, as getpass does; else
    stderr), so that the message that follows starts on a line of its own."""
    try:
        yield
    except (KeyboardInterrupt, EOFError):
        _end_line(on_terminal)
        raise


def _end_line(on_terminal: bool) -> None:
    if on_terminal:
        try:
            with open("/dev/tty", "w") as terminal:
                terminal.write("\n")
            return
        except OSError:
            pass  # no terminal to open: getpass prompted on stderr
    print(file=sys.stderr, flush=True)


def _check_client_flags(method: str | None, secret: str | None, key_file: str | None) -> None:
    """Refuse contradicting client flags before anything is asked or sent."""
    if method in ("client_secret_basic", "client_secret_post") and not secret:
        raise _Failure(
            f"--auth-method {method} needs the client secret: pass --client-secret or set "
            f"${ENV_CLIENT_SECRET}"
        )
    if method == "private_key_jwt" and key_file is None:
        raise _Failure("--auth-method private_key_jwt needs --private-key PEM-FILE")
    if key_file is not None and method not in (None, "private_key_jwt"):
        raise _Failure(f"--private-key is for --auth-method private_key_jwt, not {method}")


def _flow(
    args: argparse.Namespace,
    metadata: ServerMetadata | None,
    secret: str | None,
    private_key: str | None,
) -> str:
    flow: str | None = args.flow
    if flow is None:
        if args.username is not None:
            flow = "password"
        elif metadata is None:
            flow = "client-credentials"
        else:
            flow = "browser" if _browser_available() else "device"
    if flow in ("browser", "device") and metadata is None:
        raise _Failure(f"--flow {flow} needs --issuer (its endpoints come from discovery)")
    if flow == "password" and args.username is None:
        raise _Failure("--flow password needs --username")
    if flow == "client-credentials" and not secret and private_key is None:
        raise _Failure(
            "a client credentials login needs --client-secret (or "
            f"${ENV_CLIENT_SECRET}) or --private-key (or pass --username for a password login)"
        )
    return flow


def _obtain(
    args: argparse.Namespace,
    flow: str,
    metadata: ServerMetadata | None,
    token_url: str,
    client: ClientAuth,
) -> TokenSet:
    """The flow's tokens, with the client authentication built once from the flags."""
    insecure = bool(args.allow_insecure_http)
    if flow == "browser":
        assert metadata is not None
        return logins.browser_with(
            metadata,
            client,
            scope=args.scope,
            open_browser=_open_browser,
            timeout=args.timeout,
            allow_insecure_http=insecure,
        )
    if flow == "device":
        assert metadata is not None
        return logins.device_with(
            metadata,
            client,
            scope=args.scope,
            on_prompt=_show_device_prompt,
            allow_insecure_http=insecure,
        )
    if flow == "password":
        password = _password(args)
        return logins.password_with(
            metadata,
            token_url,
            client,
            username=args.username,
            password=password,
            scope=args.scope,
            allow_insecure_http=insecure,
        )
    return logins.client_credentials_with(
        metadata, token_url, client, scope=args.scope, allow_insecure_http=insecure
    )


def _read_private_key(path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise _Failure(f"cannot read the private key file {path}: {error}") from None


def _account(tokens: TokenSet) -> str | None:
    """Who logged in, from the ID token (unverified: it only labels the profile)."""
    try:
        claims = tokens.id_claims()
    except TokenResponseError:
        return None
    for name in ("preferred_username", "email", "sub"):
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value[:200]
    return None


def _browser_available() -> bool:
    """Whether the browser flow can open a browser here (else the device flow is used)."""
    if os.environ.get("BROWSER"):
        return True
    if os.environ.get("SSH_CONNECTION") or os.environ.get("SSH_TTY"):
        return False  # a browser would open on the remote machine, or not at all
    if os.name == "posix" and sys.platform != "darwin":
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return False
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def _open_browser(url: str) -> bool:
    """Open ``url`` with ``$BROWSER`` or the system's browser, and print it for copying."""
    print(
        f"Opening a browser to sign in. If none opens, visit:\n  {url}",
        file=sys.stderr,
        flush=True,
    )
    commands = [c for c in os.environ.get("BROWSER", "").split(os.pathsep) if c.strip()]
    for command in commands:
        argv = shlex.split(command)
        argv = [part.replace("%s", url) for part in argv] if "%s" in command else [*argv, url]
        try:
            completed = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False
            )
        except OSError:
            continue
        if completed.returncode == 0:
            return True
    if not commands:
        webbrowser.open(url)
    return True  # the URL is printed: a person can still open it


def _show_device_prompt(prompt: DevicePrompt) -> None:
    print(prompt, file=sys.stderr, flush=True)
    print("Waiting for the approval (Ctrl-C cancels)...", file=sys.stderr, flush=True)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get(ENV_PASSWORD):
        password = os.environ[ENV_PASSWORD]
    elif not _interactive():
        raise _Failure(
            f"no password for --username {args.username}: stdin is not a terminal to ask on; "
            f"pass --password-stdin or set ${ENV_PASSWORD}"
        )
    else:
        try:
            with _prompt_line(on_terminal=True):
                password = getpass.getpass(f"Password for {args.username}: ")
        except EOFError:  # Ctrl-D
            password = ""
    if not password:
        raise _Failure("no password given")
    return password


def _interactive() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # stdin closed
        return False


def _token(args: argparse.Namespace) -> int:
    if args.resource is not None:
        from .resource import token

        return token(args)
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
    profile = store.load_profile()
    if profile is None:
        raise _Failure(f"no profile {store.profile!r} in {store.path}: run `freshtoken login`")
    manager = open_manager(store, lock_timeout=LOCK_TIMEOUT)
    if profile.tokens is None and not manager.refresher.can_acquire:
        raise _Failure(
            f"profile {store.profile!r} has no tokens (the session ended): "
            "run `freshtoken login` again"
        )
    return manager


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


def _profile_client(store: FileStore, profile: Profile) -> ClientAuth:
    return refresher_of(store, profile).client


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
    headers = ("PROFILE", "ACCOUNT", "ACCESS TOKEN", "SCOPE", "LOGGED IN", "REFRESHED", "STORE")
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
        "issuer": meta.get("issuer"),
        "provider": meta.get("provider"),
        "token_url": meta.get("token_url"),
        "client_id": meta.get("client_id"),
        "username": meta.get("username"),
        "grant": meta.get("grant"),
        "logged_in": info.has_tokens,
        "expires_at": info.expires_at,
        "expires_in": None if info.expires_at is None else round(info.expires_at - now, 3),
        "scope": info.scope,
        "logged_in_at": info.logged_in_at,
        "refreshed_at": info.refreshed_at,
        "has_refresh_token": info.has_refresh_token,
        "encrypted": info.encrypted,
    }


def _status_row(info: ProfileInfo, now: float) -> tuple[str, ...]:
    meta = info.meta
    client = str(meta.get("client_id", "?"))
    username = meta.get("username")
    account = f"{username} ({client})" if username else f"client {client}"
    access = _expiry_text(info.expires_at, now) if info.has_tokens else "none: log in again"
    notes = "encrypted" if info.encrypted else "plain"
    if info.has_tokens and not info.has_refresh_token and meta.get("grant") != "client_credentials":
        notes += ", no refresh token"
    return (
        info.name,
        account,
        access,
        info.scope or "-",
        _ago(info.logged_in_at, now, unknown="-"),
        _ago(info.refreshed_at, now, unknown="never"),
        notes,
    )


def _ago(moment: float | None, now: float, *, unknown: str) -> str:
    return unknown if moment is None else f"{_duration(now - moment)} ago"


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
            outcome = _revoke(store, profile, profile.tokens)
        store.remove_profile()
    print(f"logged out: profile {store.profile!r} removed from {store.path}; {outcome}")
    return 0


def _revoke(store: FileStore, profile: Profile, tokens: TokenSet) -> str:
    """RFC 7009 revocation of the refresh token (or of the access token when there is none)."""
    meta = profile.meta
    token_url = meta.get("token_url")
    client_id = meta.get("client_id")
    if not isinstance(token_url, str) or not isinstance(client_id, str):
        return "the profile names no server: tokens deleted here only"
    insecure = meta.get("allow_insecure_http") is True
    client = _profile_client(store, profile)
    try:
        endpoint = _revocation_endpoint(meta, token_url, insecure)
    except LoginFailed as error:
        raise _Failure(
            f"cannot find the revocation endpoint: {error.description or error.error};"
            " the profile was kept: retry, or pass --no-revoke"
        ) from None
    if endpoint is None:
        return "the server advertises no revocation endpoint: tokens deleted here only"
    check_transport(origin_of(endpoint), allow_insecure_http=insecure, what="a token")
    if tokens.refresh_token is not None:
        form = {"token": tokens.refresh_token, "token_type_hint": "refresh_token"}
        what = "refresh token"
    else:
        form = {"token": tokens.access_token, "token_type_hint": "access_token"}
        what = "access token"
    with httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False) as http:
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


def _revocation_endpoint(meta: Mapping[str, Any], token_url: str, insecure: bool) -> str | None:
    """The revocation endpoint from the issuer's metadata, if it advertises one.

    Profiles from ``--token-url`` logins name no issuer: the issuers the token URL can belong
    to (its origin and parent paths) are discovered in turn, and metadata counts only if its
    ``token_endpoint`` is this profile's, so a token never goes to another issuer's endpoint.
    """
    issuer = meta.get("issuer")
    name, settings = meta.get("provider"), meta.get("provider_settings")
    if isinstance(name, str) and isinstance(settings, dict):
        try:
            preset = providers.get(name, **settings)
        except ValueError:
            return None  # a preset this version does not know: no revocation, as without one
        metadata = preset.metadata(allow_insecure_http=insecure)
        return metadata.revocation_endpoint if metadata.token_endpoint == token_url else None
    if isinstance(issuer, str):
        metadata = discover(issuer, allow_insecure_http=insecure)
        return metadata.revocation_endpoint if metadata.token_endpoint == token_url else None
    for candidate in _issuer_candidates(token_url):
        try:
            metadata = discover(candidate, allow_insecure_http=insecure)
        except LoginFailed as error:
            if error.error == "network_error":
                raise
            continue
        if metadata.token_endpoint == token_url:
            return metadata.revocation_endpoint
    return None


def _issuer_candidates(token_url: str) -> list[str]:
    """Issuers that may own ``token_url``: its parent paths, longest first, then its origin."""
    parts = urlsplit(token_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    segments = [segment for segment in parts.path.split("/") if segment][:-1]
    candidates = [origin + "/" + "/".join(segments[:end]) for end in range(len(segments), 0, -1)]
    return [*candidates[:3], origin]
