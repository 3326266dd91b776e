"""Crash-safe file replacement shared by the file store and the clients file.

:func:`replace_atomically` writes a new file beside the target (O_EXCL, no symlink followed, the
mode and owner set before any byte is written), fsyncs it, renames it over the target and fsyncs
the directory: a reader sees the old file or the new one, never a part, and a crash leaves at
most a temp file that the caller knows how to recognise and remove.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import suppress
from pathlib import Path

Owner = tuple[int, int]
"""A uid and a gid."""


def own(fd: int, mode: int, owner: Owner | None) -> None:
    """Give the open file ``fd`` to ``owner`` (``None``: leave it) and the permission ``mode``,
    whatever the umask. Never a file that is not regular or has another link: a hard link put
    where keyrotd expected its own file (``/etc/shadow``) keeps its owner and mode."""
    info = os.fstat(fd)
    chown = owner is not None and (info.st_uid, info.st_gid) != owner
    chmod = stat.S_IMODE(info.st_mode) != mode
    if (chown or chmod) and (not stat.S_ISREG(info.st_mode) or info.st_nlink > 1):
        raise OSError(
            errno.EPERM, "not a regular file with one link: its owner and mode were left alone"
        )
    if chown:
        assert owner is not None
        os.fchown(fd, *owner)
    if chmod:
        os.fchmod(fd, mode)


def replace_atomically(
    target: Path, temp: Path, content: bytes, mode: int, owner: Owner | None
) -> None:
    """Write ``content`` to ``temp`` (``mode``, ``owner``), fsync, rename over ``target``, fsync
    the directory; on any failure ``temp`` is removed and ``target`` is untouched."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            own(file.fileno(), mode, owner)
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_directory(target.parent)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
