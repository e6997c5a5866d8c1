"""``freshtoken exec [--profile P] [--env NAME] [--refresh-file PATH] -- CMD ARGS...``.

Runs CMD with a fresh access token in ``$NAME`` (default ``FRESHTOKEN_ACCESS_TOKEN``). The
refresh token never reaches the child, and neither do freshtoken's own secrets: the variables
in ``SECRET_VARIABLES`` (the key that opens the token file, the client secret, the
password) are removed from CMD's environment unless ``--keep-secret-env`` says otherwise.

Without ``--refresh-file`` freshtoken *becomes* CMD (``execvp``): same pid, the child's
exit status and signals are its own. With it, freshtoken stays as CMD's parent for as long
as CMD runs, and keeps the file holding the current access token (no newline), replaced
atomically (mode 0600) whenever the token is refreshed, by this process or by any other
sharing the profile; ``--signal-on-refresh HUP`` also tells CMD. A regular file already at
PATH is replaced (one left by an exec that was killed, say); a symbolic link, a directory or
anything else is refused and left alone. When CMD ends the file is removed if it is still
the one exec wrote, and left alone if something else took its place meanwhile. The parent
passes CMD's exit status on (death by a signal: it dies by the same signal) and forwards
the signals it receives: SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH. A
signal the terminal sent to the whole foreground process group (Ctrl-C) already reached
CMD, so it is not sent twice.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import stat
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._core.tokens import TokenSet
from ..errors import AuthError, StoreError
from ..profiles import close_refresher
from ..stores._files import write_atomically
from ..stores._sealing import ENV_KEY
from ..stores.file import FileStore
from ._profile_common import (
    ENV_CLIENT_SECRET,
    ENV_PASSWORD,
    Failure,
    add_store_arguments,
    guarded,
    open_profile,
    profile_store,
    profile_tokens,
)

if TYPE_CHECKING:
    from .._engine.manager import TokenManager

__all__ = ["configure_parser", "run"]

DEFAULT_ENV = "FRESHTOKEN_ACCESS_TOKEN"
# Every secret freshtoken reads from the environment. The key opens the refresh token in any
# copy of the token file; a child that needs one of them gets it with --keep-secret-env.
SECRET_VARIABLES = (ENV_KEY, ENV_CLIENT_SECRET, ENV_PASSWORD)
ENV_TOKEN_FILE = "FRESHTOKEN_TOKEN_FILE"
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RECHECK = 60.0  # seconds: look at the store at least this often, whatever the expiry says
# Seconds between looks at the token file for another process's save: the file follows a
# refresh made elsewhere within this (plus a read), well inside a second.
_WATCH_INTERVAL = 0.2
_MIN_WAIT = 1.0  # seconds between looks while a due refresh has not happened yet
_FAILED_WAIT = 5.0  # seconds between attempts after a failure (the manager throttles too)
_KEEPER_JOIN = 60.0  # a refresh under way when the command ends is finished and saved
# si_code of a signal the kernel generated (the terminal's Ctrl-C), not another process.
_SI_KERNEL = 0x80


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env",
        metavar="NAME",
        default=DEFAULT_ENV,
        help="the environment variable that carries the token (default: %(default)s)",
    )
    parser.add_argument(
        "--refresh-file",
        metavar="PATH",
        default=None,
        help="keep PATH holding the current access token (0600, replaced atomically) while "
        f"the command runs; its path is also in ${ENV_TOKEN_FILE}",
    )
    parser.add_argument(
        "--signal-on-refresh",
        metavar="SIGNAL",
        default=None,
        help="with --refresh-file: send this signal (HUP, USR1...) to the command after each "
        "refresh",
    )
    parser.add_argument(
        "--keep-secret-env",
        action="store_true",
        help=f"pass {', '.join('$' + name for name in SECRET_VARIABLES)} on to the command "
        "(by default they are removed from its environment)",
    )
    add_store_arguments(parser)
    # Not dest="command": the top-level parser keeps the subcommand's name there.
    parser.add_argument(
        "argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]", help="what to run"
    )


def run(args: argparse.Namespace) -> int:
    return guarded(_exec, args)


def _exec(args: argparse.Namespace) -> int:
    command = list(args.argv)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise Failure("exec needs a command: freshtoken exec [options] -- COMMAND [ARGS...]")
    if not _NAME.fullmatch(args.env):
        raise Failure(f"--env {args.env!r} is not a valid environment variable name")
    notify = _signal_number(args.signal_on_refresh)
    if notify is not None and args.refresh_file is None:
        raise Failure("--signal-on-refresh needs --refresh-file")
    token_file = None
    if args.refresh_file is not None:
        token_file = _TokenFile(Path(args.refresh_file).expanduser().absolute())
        token_file.check()
    if args.refresh_file is not None and hasattr(signal, "sigtimedwait"):
        # Before any thread starts (the store's watcher), so that every thread inherits it:
        # these signals are then taken only by the loop below.
        signal.pthread_sigmask(signal.SIG_BLOCK, {*FORWARDED, signal.SIGCHLD})
    if token_file is None:
        store = profile_store(args)
    else:
        store = FileStore(args.store, profile=args.profile, watch_interval=_WATCH_INTERVAL)
    manager = open_profile(store)
    try:
        tokens = profile_tokens(manager, store)
    except BaseException:
        close_refresher(manager.refresher)
        raise
    environment = dict(os.environ)
    if not args.keep_secret_env:
        for name in SECRET_VARIABLES:
            environment.pop(name, None)
    environment[args.env] = tokens.access_token
    if token_file is None:
        close_refresher(manager.refresher)
        return _become(command, environment)
    environment[ENV_TOKEN_FILE] = str(token_file.path)
    try:
        token_file.write(tokens)
        status = _supervise(
            command, environment, manager=manager, token_file=token_file, tokens=tokens,
            notify=notify,
        )  # fmt: skip
    except _SpawnFailed as failure:
        return failure.code
    finally:
        close_refresher(manager.refresher)
        token_file.remove()
    return _pass_on(status)


class _SpawnFailed(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _signal_number(name: str | None) -> int | None:
    if name is None:
        return None
    text = name.upper()
    text = text if text.startswith("SIG") else f"SIG{text}"
    number = getattr(signal.Signals, text, None) if text.isidentifier() else None
    if number is None:
        raise Failure(f"--signal-on-refresh {name!r} is not a signal name (HUP, USR1...)")
    return int(number)


def _become(command: Sequence[str], environment: dict[str, str]) -> int:
    try:
        os.execvpe(command[0], list(command), environment)
    except FileNotFoundError:
        _failure_line(f"command not found: {command[0]}")
        return 127
    except PermissionError:
        _failure_line(f"permission denied: {command[0]}")
        return 126


def _failure_line(text: str) -> None:
    print(f"freshtoken: {text}", file=sys.stderr)


class _TokenFile:
    """The ``--refresh-file``: exec removes only the file it wrote, never what stood there
    before it (a link, a directory) or what took its place meanwhile."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._written: tuple[int, int] | None = None  # (device, inode) of our last write
        self._removed = False
        # The keeper writes from its thread; removal must not race a write still under way.
        self._mutex = threading.Lock()

    def check(self) -> None:
        """Refuse a path that holds something exec must not replace."""
        try:
            status = os.lstat(self.path)
        except FileNotFoundError:
            return
        except OSError as error:
            raise Failure(f"--refresh-file {self.path}: {error.strerror}") from None
        if stat.S_ISREG(status.st_mode):
            return
        if stat.S_ISLNK(status.st_mode):
            kind = "a symbolic link (exec never writes a token through one)"
        elif stat.S_ISDIR(status.st_mode):
            kind = "a directory"
        else:
            kind = "not a regular file"
        raise Failure(
            f"--refresh-file {self.path} is {kind}: give the path of a file for exec to write"
        )

    def write(self, tokens: TokenSet) -> None:
        with self._mutex:
            if self._removed:
                return  # the command has ended: a late refresh must not leave a token behind
            try:
                written = write_atomically(self.path, tokens.access_token.encode())
            except StoreError as error:
                raise Failure(f"--refresh-file: {error}") from None
            self._written = (written.st_dev, written.st_ino)

    def remove(self) -> None:
        with self._mutex:
            self._removed = True
            if self._written is None:
                return
            try:
                status = os.lstat(self.path)
                if (status.st_dev, status.st_ino) == self._written and stat.S_ISREG(status.st_mode):
                    os.unlink(self.path)
            except FileNotFoundError:
                return
            except OSError as error:  # the command's status still goes out; the leftover is said
                _failure_line(f"exec: could not remove {self.path}: {error.strerror}")


def _supervise(
    command: Sequence[str],
    environment: dict[str, str],
    *,
    manager: TokenManager,
    token_file: _TokenFile,
    tokens: TokenSet,
    notify: int | None,
) -> int:
    """Run the command as our child, keeping the token file current; its wait status."""
    try:
        pid = os.posix_spawnp(
            command[0],
            list(command),
            environment,
            setsigmask=(),  # the child starts with no signal blocked, whatever ours are
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # ignored by Python, not by CMD
        )
    except FileNotFoundError:
        _failure_line(f"command not found: {command[0]}")
        raise _SpawnFailed(127) from None
    except PermissionError:
        _failure_line(f"permission denied: {command[0]}")
        raise _SpawnFailed(126) from None
    keeper = _Keeper(manager, token_file, tokens, pid, notify)
    keeper.start()
    try:
        return _wait_forwarding(pid)
    finally:
        keeper.stop()


def _wait_forwarding(pid: int) -> int:
    """Wait for the child, forwarding signals meanwhile; its wait status."""
    if not hasattr(signal, "sigtimedwait"):
        return _wait_with_handlers(pid)
    watched = {*FORWARDED, signal.SIGCHLD}
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        info = signal.sigtimedwait(watched, 1.0)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if info.si_code == _SI_KERNEL:
            continue  # the terminal signalled the process group: the child has it already
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, info.si_signo)


def _wait_with_handlers(pid: int) -> int:  # pragma: no cover - platforms without sigtimedwait
    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue


def _pass_on(status: int) -> int:
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        # Die the same way, so that our parent (a shell, a supervisor) sees what happened.
        if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those cannot be handled anyway
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        os.kill(os.getpid(), signum)
        return 128 + signum  # the signal was not fatal after all
    return os.waitstatus_to_exitcode(status)


class _Keeper:
    """Rewrites the token file whenever the profile's access token changes."""

    def __init__(
        self,
        manager: TokenManager,
        token_file: _TokenFile,
        tokens: TokenSet,
        child: int,
        notify: int | None,
    ) -> None:
        self.manager = manager
        self.token_file = token_file
        self.current = tokens
        self.child = child
        self.notify = notify
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="freshtoken-exec-refresh", daemon=True
        )

    def start(self) -> None:
        self.manager.store.watch(self._wake.set)  # another process's refresh, seen promptly
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=_KEEPER_JOIN)

    def _run(self) -> None:
        failing = False
        while True:
            changed = self._wake.wait(_FAILED_WAIT if failing else self._delay())
            if self._stopping.is_set():
                return
            self._wake.clear()
            try:
                fresh = self._stored() if changed else None
                if fresh is None:
                    fresh = self.manager.get_tokens()  # refreshes when due
                if fresh.access_token != self.current.access_token:
                    self._replace(fresh)
            except (AuthError, Failure) as error:
                if not failing:
                    _failure_line(f"exec: the token file could not be refreshed: {error}")
                failing = True
                continue
            if failing:
                _failure_line("exec: the token file is current again")
            failing = False

    def _stored(self) -> TokenSet | None:
        """What the store holds now. Another process saved: the manager learns of it from a
        watcher of its own, maybe after this one, and meanwhile still answers from its view."""
        stored = self.manager.store.load()
        return None if stored is None else stored.tokens

    def _delay(self) -> float:
        due = self.manager.policy.refresh_due_at(self.current)
        if due is None:
            return _RECHECK
        return min(_RECHECK, max(_MIN_WAIT, due - time.time()))

    def _replace(self, fresh: TokenSet) -> None:
        self.token_file.write(fresh)
        self.current = fresh
        if self.notify is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, self.notify)
