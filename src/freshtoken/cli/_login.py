"""``freshtoken login``: a flow's tokens saved as a profile (`freshtoken.cli.profiles` says what
a profile holds). A corrupt token file is moved aside, when the user agrees, once the login has
its tokens; a browser is opened only where one can be.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import shlex
import subprocess
import sys
import time
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import providers
from .._core.policy import origin_of
from .._core.tokens import TokenResponseError, TokenSet
from .._logins import flows as logins
from .._logins.flows import DevicePrompt, client_for
from .._oauth.discovery import ServerMetadata, discover
from ..errors import StoreError
from ..providers import Provider
from ..refreshers import (
    ClientAuth,
    ClientAuthMethod,
)
from ..stores._file_document import FIX as _CORRUPT_ADVICE
from ..stores._files import process_lock
from ..stores.file import FileStore
from ._profile_common import (
    ENV_CLIENT_SECRET,
    ENV_PASSWORD,
    LOCK_TIMEOUT,
    Failure,
    expiry_text,
    profile_store,
)

__all__ = ["AUTH_METHODS", "BROWSER_TIMEOUT", "FLOWS", "browser_available", "login"]

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
BROWSER_TIMEOUT = 300.0


def login(args: argparse.Namespace) -> int:
    if args.resource is not None:
        from .resource import login as resource_login

        return resource_login(args, _open_browser)
    if args.client_id is None:
        raise Failure("--client-id is required with --issuer, --token-url and --provider")
    store = profile_store(args)
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
            raise Failure(f"the {provider.name} preset names no token endpoint")
    elif args.issuer is not None:
        metadata = discover(args.issuer, allow_insecure_http=insecure)
        token_url = metadata.token_endpoint
        if token_url is None:
            raise Failure(f"{metadata.issuer} names no token endpoint: pass --token-url instead")
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
        f"(access token {expiry_text(tokens.expires_at, time.time())}, "
        f"scope {tokens.scope or 'unknown'})"
    )
    return 0


def _provider(name: str | None, options: list[str]) -> Provider | None:
    """The ``--provider`` preset with its ``--provider-option KEY=VALUE`` settings."""
    if name is None:
        if options:
            raise Failure("--provider-option is for a --provider preset")
        return None
    settings: dict[str, Any] = {}
    for option in options:
        key, equals, value = option.partition("=")
        if not equals or not key:
            raise Failure(f"--provider-option takes KEY=VALUE, not {option[:40]!r}")
        settings[key] = {"true": True, "false": False}.get(value.lower(), value)
    try:
        return providers.get(name, **settings)
    except ValueError as error:
        raise Failure(str(error)) from None


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
    raise Failure(f"{problem}: pass --replace-corrupt to move it to {aside} and start a new one")


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
        raise Failure(
            f"--auth-method {method} needs the client secret: pass --client-secret or set "
            f"${ENV_CLIENT_SECRET}"
        )
    if method == "private_key_jwt" and key_file is None:
        raise Failure("--auth-method private_key_jwt needs --private-key PEM-FILE")
    if key_file is not None and method not in (None, "private_key_jwt"):
        raise Failure(f"--private-key is for --auth-method private_key_jwt, not {method}")


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
            flow = "browser" if browser_available() else "device"
    if flow in ("browser", "device") and metadata is None:
        raise Failure(f"--flow {flow} needs --issuer (its endpoints come from discovery)")
    if flow == "password" and args.username is None:
        raise Failure("--flow password needs --username")
    if flow == "client-credentials" and not secret and private_key is None:
        raise Failure(
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
        raise Failure(f"cannot read the private key file {path}: {error}") from None


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


def browser_available() -> bool:
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
        raise Failure(
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
        raise Failure("no password given")
    return password


def _interactive() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # stdin closed
        return False
