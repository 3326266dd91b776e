"""The file store's locks and leftovers: the per-keyset ``flock``, sweeping stale temp files, and
the check every file of the store passes before keyrotd reads, writes, chowns or chmods it.

A write holds ``fcntl.flock(LOCK_EX)`` on ``<path>/<keyset>.lock`` and writes its document to
``.<keyset>.json.tmp`` before the rename. A temp file left by a crashed writer holds a
whole document, private keys included: the next write of that keyset removes it under the lock
(no writer is then in flight), and so does the first read of it in a process that finds the
keyset's lock free; both know them from one directory listing per process (:class:`Leftovers`).

A file keyrotd did not create is never used (docs/storage.md, "Files keyrotd did not create";
tests/storage/test_file_hostile.py): :func:`check_ours` refuses, naming it, anything but a regular
file with at most one link owned by the store directory's owner (or by the user running keyrotd,
when that is not root). A FIFO, a device or a symlink is refused from ``lstat`` before it is
opened, and every open is ``O_NOFOLLOW | O_NONBLOCK`` and checked again with ``fstat`` before any
read, ``fchown`` or ``fchmod``: no open waits on a FIFO, and a root CLI never gives the store's
owner a file hard-linked into the store (``/etc/shadow`` with ``fs.protected_hardlinks=0``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

from keyrotd.atomic import Owner, own
from keyrotd.storage.interface import StorageError, TemporaryStorageError

__all__ = [
    "FILE_MODE",
    "SUFFIX",
    "Leftovers",
    "Owners",
    "check_ours",
    "exclusive_lock",
    "lock_path",
    "open_ours",
    "store_owners",
    "temp_name",
]

SUFFIX: Final = ".json"
"""The suffix of a keyset's document, ``<keyset>.json``; its temp files are named after it."""
FILE_MODE: Final = 0o600
"""The mode of every file of the store: documents, temp files and lock files."""
_TEMP_FILE: Final = r"\.(?P<keyset>.+)" + re.escape(SUFFIX) + r"(?:\.[0-9a-f]{32})?\.tmp"
"""``.<keyset>.json.tmp``, and ``.<keyset>.json.<random>.tmp`` as keyrotd 0.x named them (a
pattern: ``re`` compiles it when a directory is swept, and keeps it)."""
_KINDS: Final = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}
OPEN_FLAGS: Final = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""Added to every open of a file of the store: no symlink followed, no wait on a FIFO."""

Owners = frozenset[int]
"""The uids whose files in the store keyrotd uses (see :func:`store_owners`)."""


def store_owners(directory: Path) -> Owners:
    """The store directory's owner, and the user running keyrotd unless that is root (a daemon
    writing into a directory another user owns): root uses only the owner's files."""
    uid = os.stat(directory).st_uid
    euid = os.geteuid()
    return frozenset({uid} if euid == 0 else {uid, euid})


def check_ours(path: Path, info: os.stat_result, owners: Owners) -> None:
    """Refuse ``path`` (its ``lstat`` or ``fstat``) unless keyrotd may have created it: a regular
    file with at most one link (none: a writer renamed a new one over it since it was opened),
    owned by one of ``owners``."""
    kind = stat.S_IFMT(info.st_mode)
    if kind != stat.S_IFREG:
        problem = f"is {_KINDS.get(kind, 'not a regular file')}"
    elif info.st_nlink > 1:
        problem = f"has {info.st_nlink} links (a hard link to it exists elsewhere)"
    elif info.st_uid not in owners:
        problem = f"is owned by uid {info.st_uid}, not by the store's owner"
    else:
        return
    raise StorageError(
        f"{path} {problem}, not a file keyrotd wrote; it was left untouched",
        "keyrotd uses only regular files with one link owned by the storage directory's owner: "
        "find out who put it there, then move it aside",
    )


def open_ours(path: Path, flags: int, owners: Owners) -> int:
    """``os.open(path, flags | OPEN_FLAGS)`` of a file :func:`check_ours` accepts, checked from
    ``lstat`` before the open (a device is never opened) and from ``fstat`` after it (what was
    opened); ``FileNotFoundError`` if there is none."""
    check_ours(path, os.lstat(path), owners)
    try:
        fd = os.open(path, flags | OPEN_FLAGS)
    except OSError as error:
        if error.errno == errno.ELOOP:  # a symlink put there since the lstat
            check_ours(path, os.lstat(path), owners)
        raise
    try:
        check_ours(path, os.fstat(fd), owners)
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_path(directory: Path, keyset: str) -> Path:
    return directory / f"{keyset}.lock"


@contextmanager
def exclusive_lock(
    lock: Path, timeout: float, owner: Owner | None, owners: Owners
) -> Iterator[None]:
    """Hold ``flock(LOCK_EX)`` on ``lock``; give up after ``timeout`` seconds. A lock file that
    exists must pass :func:`check_ours` before it is opened for use, let alone chowned."""
    fd = _open_lock(lock, owners)
    try:
        own(fd, FILE_MODE, owner)
        _acquire(fd, lock, timeout)
        yield
    finally:
        os.close(fd)  # releases the lock


def _open_lock(lock: Path, owners: Owners) -> int:
    """The lock file, created (O_EXCL: then surely keyrotd's) or found and checked."""
    while True:
        try:
            return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | OPEN_FLAGS, FILE_MODE)
        except FileExistsError:
            pass
        try:
            return open_ours(lock, os.O_RDWR, owners)
        except FileNotFoundError:
            continue  # removed between the two opens: create it


def _acquire(fd: int, lock: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pause = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TemporaryStorageError(
                    f"timed out after {timeout:g}s waiting for the lock {lock}",
                    "another keyrotd process holds it; retry, or look for a stuck process",
                ) from None
        time.sleep(pause)
        pause = min(pause * 2, 0.01)


def temp_name(keyset: str) -> str:
    """The one temp file of a keyset's writes: only the holder of its lock writes it, so one
    that exists before the write is a crashed writer's, removed with one ``unlink``."""
    return f".{keyset}{SUFFIX}.tmp"


class Leftovers:
    """Temp files per keyset, found by one directory listing (the first read or write of this
    process), and removed before that keyset's first read returns or under its next write's lock
    (a clean writer with nothing to write would otherwise leave them for as long as nothing is
    due). One listing per process, not one per write: a store of 10,000 keysets holds 20,000
    files, and listing them at every write made a bootstrap quadratic. A writer of another
    process that crashes later leaves a temp file that process's next run removes (its first
    listing), as does any later keyrotd process."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._found: dict[str, list[str]] | None = None
        self._lock = threading.Lock()

    def _take(self, keyset: str) -> list[str]:
        with self._lock:
            if self._found is None:
                self._found = _temp_files_by_keyset(self._directory)
            return self._found.pop(keyset, [])

    def _keep(self, keyset: str, names: list[str]) -> None:
        with self._lock:
            assert self._found is not None
            self._found.setdefault(keyset, []).extend(names)

    def sweep(self, keyset: str) -> None:
        """Remove the temp files of ``keyset`` found at the first listing, if no writer holds
        its lock (a writer in flight owns its temp file). Best effort: a reader that may not
        delete files still reads, and what it could not remove its next write removes."""
        names = self._take(keyset)
        if not names:
            return
        try:
            lock = lock_path(self._directory, keyset)
            fd = open_ours(lock, os.O_RDWR, store_owners(self._directory))
        except (OSError, StorageError):
            self._keep(keyset, names)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._keep(keyset, names)  # a writer holds the lock: its write sweeps them
        else:
            _unlink(self._directory, names)
        finally:
            os.close(fd)  # releases the lock

    def remove_locked(self, keyset: str) -> None:
        """Under the keyset's lock (no writer in flight): remove its temp files, the one a
        crashed writer of any process left included (no listing needed: its name is fixed)."""
        _unlink(self._directory, [temp_name(keyset), *self._take(keyset)])


def _unlink(directory: Path, names: list[str]) -> None:
    for name in names:
        with suppress(FileNotFoundError):
            os.unlink(directory / name)


def _temp_files_by_keyset(directory: Path) -> dict[str, list[str]]:
    """The temp files in ``directory`` (one listing), by the keyset they were written for."""
    found: dict[str, list[str]] = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for name in names:
        match = re.fullmatch(_TEMP_FILE, name)
        if match:
            found.setdefault(match["keyset"], []).append(name)
    return found
