"""The ``freshtoken`` command: login, token, exec, git-credential, agent, status, logout, serve...

Each subcommand lives beside what it drives, as a pair of functions: one adds its arguments to
an ``argparse`` parser, one runs it and returns the exit code. This module only dispatches, and
imports a subcommand's module (and its optional dependencies) only when that subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# name -> (module, configure function, run function, one-line help)
SUBCOMMANDS = {
    "serve": (
        "freshtoken.server._command",
        "configure_parser",
        "run",
        "run the reference OAuth2 server",
    ),
    "demo": (
        "freshtoken._demo",
        "configure_parser",
        "run",
        "run the refresh demo against an embedded reference server",
    ),
    "login": ("freshtoken._profiles_cli", "configure_login", "run_login", "log in, save a profile"),
    "token": (
        "freshtoken._profiles_cli",
        "configure_token",
        "run_token",
        "print a fresh access token, refreshing if needed",
    ),
    "status": (
        "freshtoken._profiles_cli",
        "configure_status",
        "run_status",
        "show each profile's expiry and scope (no secrets)",
    ),
    "logout": (
        "freshtoken._profiles_cli",
        "configure_logout",
        "run_logout",
        "revoke the refresh token at the server and remove the profile",
    ),
    "exec": (
        "freshtoken._exec",
        "configure_parser",
        "run",
        "run a command with a fresh access token in its environment",
    ),
    "git-credential": (
        "freshtoken._git_credential",
        "configure_parser",
        "run",
        "a git credential helper serving OAuth tokens to mapped hosts",
    ),
    "agent": (
        "freshtoken.agent._command",
        "configure_parser",
        "run",
        "a local token agent on a unix socket: run | start | status | stop",
    ),
}

EXTRA_FOR_MODULE = {
    "starlette": "server",
    "uvicorn": "server",
    "rich": "cli",
    "keyring": "keyring",
    "cryptography": "encryption",
    "redis": "redis",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="freshtoken", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = args[0] if args and args[0] in SUBCOMMANDS else None
    for name, (module_name, configure, _, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            getattr(_load(module_name), configure)(sub)
    namespace = parser.parse_args(args)
    module_name, _, run, _ = SUBCOMMANDS[namespace.command]
    try:
        code: int = getattr(_load(module_name), run)(namespace)
    except KeyboardInterrupt:
        return 130
    return code


def _load(module_name: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        extra = EXTRA_FOR_MODULE.get((error.name or "").split(".")[0])
        if extra is None:
            raise
        sys.exit(f"freshtoken: this command needs an extra: pip install 'freshtoken[{extra}]'")


if __name__ == "__main__":
    sys.exit(main())
