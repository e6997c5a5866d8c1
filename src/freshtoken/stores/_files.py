"""File-system plumbing shared by the durable stores: private directories, owner-only files
written atomically, and a lock that is exclusive between processes and between threads.

Rules the stores rely on:

* A file is replaced, never rewritten in place: a temporary file in the same directory is
  written, fsynced and renamed over the old one, then the directory is fsynced. A reader sees
  the old document or the new one, never a torn one, whatever moment a writer dies at.
* Temporary files are only created by a writer holding the write lock, so any that exist when
  the lock is taken were left by a writer that died: they are removed then.
* Locks are OS file locks (``flock``; filelock where there is no ``flock``): a process that
  dies releases them. Inside a process a plain ``threading.Lock`` is taken first, so that
  threads queue in memory rather than on the file, and so that the lock may be released by
  another thread than the one that took it (the async side enters and leaves locks from worker
  threads).
* A lock file may be removed, but only by a process holding its lock, just before it lets go
  ([`ProcessLock.remove_file()`][ProcessLock.remove_file]). Every taker checks, once its ``flock``
  succeeded, that the path still names the file it locked, and starts again if not: otherwise a
  waiter that opened the file before the removal would lock the removed file while the next process
  locks a new one, and both would hold "the" lock.
* Token files are never reached through a symbolic link: a link where the file should be is
  refused, on reading and on writing, and never written through or replaced.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import filelock

from ..errors import LockTimeout, StoreError
from ._forks import renew_after_fork

if sys.platform != "win32":
    import fcntl

__all__ = [
    "ProcessLock",
    "canonical_path",
    "config_dir",
    "ensure_private_dir",
    "process_lock",
    "read_private_file",
    "remove_stale_temporaries",
    "watch_file",
    "write_atomically",
]

_POSIX = os.name == "posix"
_TEMP_SUFFIX = ".tmp"
_OPEN_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def canonical_path(path: Path) -> Path:
    """``path`` with its directory's symbolic links resolved, and not its last component's:
    one name for a file reached through linked directories, without following a link that
    stands where the file should be."""
    absolute = Path(os.path.abspath(path))
    return Path(os.path.normcase(os.path.join(os.path.realpath(absolute.parent), absolute.name)))


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/freshtoken``, or ``~/.config/freshtoken``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "freshtoken"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/freshtoken``, or ``~/.cache/freshtoken`` (lock files live here)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "freshtoken"


def ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` and any missing parents, each readable by its owner only.

    Existing directories are left as they are: they may be shared ones the user chose.
    """
    if directory.is_dir():
        return
    missing = []
    current = directory
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for component in reversed(missing):
        try:
            component.mkdir(mode=0o700)
            if _POSIX:
                os.chmod(component, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            continue  # another process made it meanwhile
        except OSError as error:
            raise StoreError(f"cannot create directory {component}: {error.strerror}") from None


def check_private(path: Path, status: os.stat_result) -> None:
    """Refuse a file that another user owns or that others may read or write."""
    if not _POSIX:
        return  # Windows: ACLs, not mode bits; the user profile directory is private
    if not stat.S_ISREG(status.st_mode):
        raise StoreError(f"token store {path} is not a regular file")
    if status.st_uid != os.geteuid():
        raise StoreError(
            f"token store {path} belongs to another user (uid {status.st_uid}); refusing to read it"
        )
    if status.st_mode & 0o077:
        raise StoreError(
            f"token store {path} is accessible to other users "
            f"(mode {stat.S_IMODE(status.st_mode):04o}); fix it with: chmod 600 {path}"
        )


def read_private_file(path: Path) -> bytes | None:
    """The file's bytes, or None if it does not exist; refuses files others can access, and
    symbolic links."""
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_NOFOLLOW)
    except FileNotFoundError:
        if os.path.islink(path):  # a dangling link, where O_NOFOLLOW does not exist
            raise _symlink_refused(path) from None
        return None
    except OSError as error:
        if os.path.islink(path):  # O_NOFOLLOW's ELOOP (EMLINK on FreeBSD)
            raise _symlink_refused(path) from None
        raise StoreError(f"cannot open token store {path}: {error.strerror}") from None
    try:
        check_private(path, os.fstat(fd))  # the file we opened, not whatever the path is now
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as error:
        raise StoreError(f"cannot read token store {path}: {error.strerror}") from None
    finally:
        os.close(fd)


def _symlink_refused(path: Path) -> StoreError:
    try:
        target = f" to {os.readlink(path)}"
    except OSError:
        target = ""
    return StoreError(
        f"token store {path} is a symbolic link{target}; freshtoken does not follow links to "
        "token files: give it the real file's path, or replace the link with the file"
    )


def write_atomically(path: Path, data: bytes) -> os.stat_result:
    """Replace ``path`` with ``data``: temp file (0600), fsync, rename, fsync the directory.
    Returns the status of the file written (its inode tells it from one put there later)."""
    directory = path.parent
    ensure_private_dir(directory)
    if os.path.islink(path):  # os.replace would replace the link itself
        raise _symlink_refused(path)
    fd, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{path.name}.", suffix=_TEMP_SUFFIX
    )  # mkstemp creates the file 0600
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            written = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise StoreError(f"cannot write token store {path}: {error.strerror}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)
    return written


def remove_stale_temporaries(path: Path) -> None:
    """Delete temp files a killed writer left behind. Call only while holding the write lock."""
    prefix = f".{path.name}."
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            if entry.name.startswith(prefix) and entry.name.endswith(_TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _fsync_directory(directory: Path) -> None:
    if not _POSIX:
        return  # Windows cannot open a directory; its rename is already journaled
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as error:
        raise StoreError(f"cannot fsync directory {directory}: {error.strerror}") from None
    finally:
        os.close(fd)


class ProcessLock:
    """An exclusive lock between the processes (a file lock) and the threads of this one.

    Not reentrant. It may be released by another thread than the one that acquired it. Use
    [`process_lock()`][process_lock] to get the single instance for a path in this process. A fork
    made inside a critical section, by the thread holding the lock, is not supported: parent and
    child would both be inside it.
    """

    # Polling starts fast so that a hand-off between processes costs about a millisecond,
    # and backs off so that many waiters do not spin.
    _FIRST_POLL = 0.0005
    _MAX_POLL = 0.005

    def __init__(self, path: Path) -> None:
        self.path = path
        self._threads = threading.Lock()
        self._fd: int | None = None  # with flock: the descriptor that holds it
        self._fallback = (
            None
            if _POSIX
            # No soft fallback: a soft lock outlives a killed holder, and that must never happen.
            else filelock.FileLock(path, mode=0o600, thread_local=False, fallback_to_soft=False)
        )
        renew_after_fork(self)

    @contextlib.contextmanager
    def hold(self, timeout: float, purpose: str) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        if not self._threads.acquire(timeout=max(timeout, 0.0)):
            raise self._timeout(timeout, purpose)
        try:
            self._acquire_file(deadline, timeout, purpose)
        except BaseException:
            self._threads.release()
            raise
        try:
            yield
        finally:
            try:
                self._release_file()
            finally:
                self._threads.release()

    def remove_file(self) -> None:
        """Delete the lock file. Call only while holding the lock, as the last thing before
        letting go (see the module docstring for why that is safe); elsewhere than POSIX, the
        file stays."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _acquire_file(self, deadline: float, timeout: float, purpose: str) -> None:
        ensure_private_dir(self.path.parent)
        poll = self._FIRST_POLL
        while True:
            try:
                if self._try_acquire_file():
                    return
            except OSError as error:
                raise StoreError(f"cannot lock {self.path}: {error.strerror}") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(timeout, purpose)
            # A poll, not synchronisation: flock has no wait-with-timeout.
            time.sleep(min(poll, remaining))
            poll = min(poll * 2, self._MAX_POLL)

    def _try_acquire_file(self) -> bool:
        if self._fallback is not None:
            try:
                self._fallback.acquire(blocking=False)
            except filelock.Timeout:
                return False
            return True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _OPEN_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            if self._names(fd):
                self._fd = fd
                return True
            os.close(fd)  # its holder removed it before letting go: lock the new one

    def _names(self, fd: int) -> bool:
        """Whether the lock file's path still names the file ``fd`` has open."""
        try:
            return os.path.samestat(os.fstat(fd), os.lstat(self.path))
        except FileNotFoundError:
            return False

    def _release_file(self) -> None:
        if self._fallback is not None:
            self._fallback.release()
            return
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                # Unlock explicitly: a copy of the descriptor that a fork leaked must not keep
                # the lock alive.
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def _after_fork_in_child(self) -> None:
        # The thread that held the lock is not in the child. Close the inherited copy of its
        # descriptor without unlocking: the lock belongs to the parent's holder, and stays
        # with it.
        self._threads = threading.Lock()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _timeout(self, timeout: float, purpose: str) -> LockTimeout:
        return LockTimeout(
            f"timed out after {timeout:g} s waiting for the {purpose} lock {self.path}: "
            "another process holds it (a process that dies releases it)"
        )

    def __repr__(self) -> str:
        return f"ProcessLock({str(self.path)!r})"


_locks: weakref.WeakValueDictionary[Path, ProcessLock] = weakref.WeakValueDictionary()
_locks_mutex = threading.Lock()


def process_lock(path: Path) -> ProcessLock:
    """The one [`ProcessLock`][] of ``path`` in this process."""
    key = canonical_path(path)
    with _locks_mutex:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = ProcessLock(key)
        return lock


def _renew_locks_mutex() -> None:
    global _locks_mutex
    _locks_mutex = threading.Lock()  # a thread of the parent may have held it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_locks_mutex)


def watch_file(
    store: weakref.ref[Any],
    path: Path,
    interval: float,
    on_change: Callable[[], None],
    stop: threading.Event,
) -> None:
    """Call ``on_change`` whenever the file is replaced (every save renames a new file in),
    until the store is closed or gone."""
    last = _identity(path)
    while not stop.wait(interval) and store() is not None:
        current = _identity(path)
        if current != last:
            last = current
            on_change()


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None  # missing or unreadable: the next load says why
    return (status.st_ino, status.st_size, status.st_mtime_ns)
