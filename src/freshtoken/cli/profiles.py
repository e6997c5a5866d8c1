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

This module holds the four commands' flags and ``token``; the others are beside it:
`freshtoken.cli._login`, `freshtoken.cli._status`, `freshtoken.cli._logout`, and what they
share with ``exec`` and ``git-credential`` in `freshtoken.cli._profile_common`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .. import providers
from .._arguments import seconds
from ..profiles import close_refresher
from ._login import AUTH_METHODS, BROWSER_TIMEOUT, FLOWS, login
from ._logout import logout
from ._profile_common import (
    ENV_CLIENT_SECRET,
    ENV_PASSWORD,
    add_store_arguments,
    guarded,
    open_profile,
    profile_store,
    profile_tokens,
)
from ._status import status
from .formats import FORMATS, render

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
    add_store_arguments(parser)


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
    add_store_arguments(parser)


def configure_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_store_arguments(parser, profile=False)


def configure_logout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-revoke",
        action="store_true",
        help="only delete the profile here, without telling the server",
    )
    add_store_arguments(parser)


# -- commands ---------------------------------------------------------------------------------


def run_login(args: argparse.Namespace) -> int:
    return guarded(login, args, prefix="login failed: ")


def run_token(args: argparse.Namespace) -> int:
    return guarded(_token, args)


def run_status(args: argparse.Namespace) -> int:
    return guarded(status, args)


def run_logout(args: argparse.Namespace) -> int:
    return guarded(logout, args)


def _token(args: argparse.Namespace) -> int:
    if args.resource is not None:
        from .resource import token

        return token(args)
    store = profile_store(args)
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
