"""The ``freshtoken`` command: login, token, exec, git-credential, agent, status, logout, serve...

Each subcommand lives beside what it drives, as a pair of functions: one adds its arguments to
an ``argparse`` parser, one runs it and returns the exit code. This module only dispatches, and
imports a subcommand's module (and its optional dependencies) only when that subcommand runs.

It also keeps the promise every subcommand makes: a failure is one line on stderr
(``freshtoken: ...``) and an exit status from [`EXIT_CODES`][], never a traceback; usage
errors too. The library's log lines are shown only with ``-v`` (``-vv``: debug).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from .._version import __version__

__all__ = ["EXIT_CODES", "main"]

DESCRIPTION = (
    "Keeps OAuth2 access tokens fresh: log in once, then hand fresh tokens to scripts, "
    "programs, git and kubectl, or try it all against the reference OAuth2 server."
)
EXIT_CODES = {
    0: "success",
    1: "failure (one line on stderr says why)",
    2: "bad usage: an unknown flag, a missing or invalid argument",
    3: "agent status: no agent is running",
    126: "exec: the command cannot be run",
    127: "exec: the command was not found",
    130: "interrupted (Ctrl-C)",
    141: "the output was closed early (a broken pipe: `freshtoken status | head -1`)",
}
EPILOG = (
    "'freshtoken COMMAND --help' describes a command and its flags.\n\nexit status:\n"
    + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())
    + "\n  exec passes on the command's own status; serve and agent run stop cleanly on "
    "Ctrl-C (0)."
)

# name -> (module, configure function, run function, one-line help)
SUBCOMMANDS = {
    "serve": (
        "freshtoken.server._command",
        "configure_parser",
        "run",
        "run the reference OAuth2 server",
    ),
    "demo": (
        "freshtoken.cli.demo",
        "configure_parser",
        "run",
        "run the refresh demo against an embedded reference server",
    ),
    "login": ("freshtoken.cli.profiles", "configure_login", "run_login", "log in, save a profile"),
    "token": (
        "freshtoken.cli.profiles",
        "configure_token",
        "run_token",
        "print a fresh access token, refreshing if needed",
    ),
    "status": (
        "freshtoken.cli.profiles",
        "configure_status",
        "run_status",
        "show each profile's expiry and scope (no secrets)",
    ),
    "logout": (
        "freshtoken.cli.profiles",
        "configure_logout",
        "run_logout",
        "revoke the refresh token at the server and remove the profile",
    ),
    "exec": (
        "freshtoken.cli.exec",
        "configure_parser",
        "run",
        "run a command with a fresh access token in its environment",
    ),
    "git-credential": (
        "freshtoken.cli.git_credential",
        "configure_parser",
        "run",
        "a git credential helper serving OAuth tokens to mapped hosts",
    ),
    "bff": (
        "freshtoken.bff._command",
        "configure_parser",
        "run",
        "a backend for frontend: browser apps keep a session cookie, no token",
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
    "multipart": "server",
    "rich": "cli",
    "keyring": "keyring",
    "cryptography": "encryption",
    "redis": "redis",
}


_NEGATIVE_NUMBER = re.compile(r"-\d+$|-\d*\.\d+$")  # a value, as argparse reads it


class _UsageError(Exception):
    """A command line argparse refused; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (its own print the usage first, two lines or
    more); subcommand parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``freshtoken ARGV`` (default: ``sys.argv[1:]``) and return its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None:
        _second_interrupt_exits()
    logger = logging.getLogger("freshtoken")
    level, handlers = logger.level, list(logger.handlers)
    logger.addHandler(logging.NullHandler())  # see _show_library_logs
    try:
        return _run(args)
    except KeyboardInterrupt:
        from ._profile_common import cancelled

        _say(cancelled())
        return 130
    except _UsageError as error:
        _say(str(error))
        return 2
    except BrokenPipeError:
        # The reader left (`| head`): nothing more to say, and nowhere to say it on stdout.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:
        # A bug of ours: still one line, and the traceback with -v.
        logging.getLogger("freshtoken").debug("unexpected error", exc_info=True)
        _say(f"unexpected {type(error).__name__}: {' '.join(str(error).split())[:300]}")
        return 1
    finally:
        # As the command (argv None), the process ends now, after any refresh still in
        # flight, whose log lines follow the same rule as the command's.
        if argv is not None:  # main() may run again in this process (tests do)
            logger.handlers[:] = handlers
            logger.setLevel(level)


def _run(args: list[str]) -> int:
    # The command is the first word that is not an option (`freshtoken -v token` too): the
    # top-level options take no value.
    position = next((i for i, arg in enumerate(args) if not arg.startswith("-")), None)
    word = None if position is None else args[position]
    chosen = word if word in SUBCOMMANDS else None
    parser = _build_parser(chosen)
    if not args:
        parser.print_help()  # like pip and docker: the help, and success
        return 0
    if word is not None and chosen is None:
        raise _UsageError(_unknown_command(word))
    # Before argparse, which would blame a required flag that a misspelt one was meant to be
    # (`login --isuer URL`: "one of --issuer --token-url is required") or a value after it.
    _check_options(parser, args[:position], "freshtoken")
    if chosen is not None and position is not None:
        _check_options(_subparser(parser, chosen), args[position + 1 :], f"freshtoken {chosen}")
    namespace, unknown = parser.parse_known_args(args)
    if unknown:  # argparse would blame the top-level parser; name the command's help
        where = f"freshtoken {namespace.command}"
        raise _UsageError(f"unrecognized arguments: {' '.join(unknown)} (see '{where} --help')")
    _show_library_logs(namespace.verbose)
    module_name, _, run, _ = SUBCOMMANDS[namespace.command]
    code: int = getattr(_load(module_name), run)(namespace)
    return code


def _build_parser(chosen: str | None) -> _Parser:
    parser = _Parser(
        prog="freshtoken",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"freshtoken {__version__}", help="show the version"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="show the library's log lines too"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, configure, _, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=argparse.SUPPRESS,  # given before the command, it stays counted
            help="show the library's log lines too (-vv: debug)",
        )
        if name == chosen:
            getattr(_load(module_name), configure)(sub)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    chooser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub: argparse.ArgumentParser = chooser.choices[name]
    return sub


def _unknown_command(word: str) -> str:
    close = difflib.get_close_matches(word, SUBCOMMANDS, n=1)
    hint = f", did you mean {close[0]!r}?" if close else f": one of {', '.join(SUBCOMMANDS)}"
    return f"unknown command {word!r}{hint} (see 'freshtoken --help')"


def _check_options(parser: argparse.ArgumentParser, args: Sequence[str], where: str) -> None:
    """Refuse the first of ``args`` that is an option ``parser`` does not know, naming the
    closest one it does; what argparse would take as a value or a positional is skipped."""
    known = parser._option_string_actions
    # After the first positional, the rest is the command to run (exec) or the subcommand's.
    stops = any(not a.option_strings and a.nargs in (argparse.REMAINDER, argparse.PARSER)
                for a in parser._actions)  # fmt: skip
    index = 0
    while index < len(args):
        token = args[index]
        index += 1
        if token == "--":
            return
        if token == "-" or not token.startswith("-") or _NEGATIVE_NUMBER.fullmatch(token):
            if stops:
                return
            continue
        name = token.partition("=")[0]
        action = known.get(name)
        if action is None and not name.startswith("--") and name[:2] in known:
            continue  # -vv, -ofile: short options run together, argparse splits them
        if action is None and name.startswith("--") and parser.allow_abbrev:
            matches = [option for option in known if option.startswith(name)]
            if matches:  # an abbreviation (argparse says so if it is ambiguous)
                action = known[matches[0]] if len(matches) == 1 else None
                if action is None:
                    continue
        if action is None:
            raise _UsageError(_unknown_option(parser, name, where))
        if "=" not in token:
            index = _skip_values(action, args, index)


def _skip_values(action: argparse.Action, args: Sequence[str], index: int) -> int:
    """Where the option's values, from ``index``, end."""
    nargs = action.nargs
    if nargs is None:
        return index + 1
    if isinstance(nargs, int):
        return index + nargs
    if nargs == argparse.OPTIONAL:
        takes = index < len(args) and not args[index].startswith("-")
        return index + 1 if takes else index
    if nargs in (argparse.ZERO_OR_MORE, argparse.ONE_OR_MORE):
        while index < len(args) and not args[index].startswith("-"):
            index += 1
    return index


def _unknown_option(parser: argparse.ArgumentParser, name: str, where: str) -> str:
    shown = [
        option
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
        if option.startswith("--")
    ]
    close = difflib.get_close_matches(name, shown, n=1, cutoff=0.6)
    hint = f", did you mean {close[0]}?" if close else ""
    return f"unknown option {name}{hint} (see '{where} --help')"


def _load(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        extra = EXTRA_FOR_MODULE.get((error.name or "").split(".")[0])
        if extra is None:
            raise
        _say(f"this command needs an extra: pip install 'freshtoken[{extra}]'")
        raise SystemExit(1) from None


def _say(message: str) -> None:
    print(f"freshtoken: {message}", file=sys.stderr, flush=True)


def _show_library_logs(verbosity: int) -> None:
    """Without -v the library's warnings (a failed refresh...) stay out of the way of the one
    line that says what failed: main's handler that drops them keeps logging's last resort,
    which prints to stderr, from being used. With -v they go to stderr."""
    if not verbosity:
        return
    logger = logging.getLogger("freshtoken")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("freshtoken [%(levelname)s] %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)


def _second_interrupt_exits() -> None:
    """Ctrl-C raises KeyboardInterrupt once: the command says so in one line and ends, after a
    refresh already sent has been saved (the interpreter waits for it: a rotated refresh token
    must not be lost). A second Ctrl-C ends the process at once, without the traceback Python
    prints for an interrupted exit. Installed before anything runs, so no moment is left
    between the two where the second would find Python's own handler."""
    if threading.current_thread() is not threading.main_thread():
        return
    interrupts = 0

    def interrupted(signum: int, frame: object) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            raise KeyboardInterrupt
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()  # os._exit drops what is still buffered
        os._exit(130)

    signal.signal(signal.SIGINT, interrupted)


if __name__ == "__main__":
    sys.exit(main())
