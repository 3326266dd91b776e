"""Rewriting the clients file safely: under a lock, atomically, with the right owner and mode.

:func:`rewrite` holds ``flock(LOCK_EX)`` on ``FILE.lock`` beside the file for the whole
read-change-write, so two concurrent ``keyrotd client add`` never lose a client. The new content
goes to a temp file (O_EXCL, mode 0600 or the existing file's own safe mode), is fsynced, renamed
over the file, and the directory is fsynced. Run by root, the temp and lock files get the owner
and group of the existing file, else of its directory, so the daemon's user can still read them.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from keyrotd import atomic
from keyrotd.atomic import own, replace_atomically
from keyrotd.errors import ConfigError, KeyrotdError
from keyrotd.secretfiles import UNSAFE_MODE, permission_hint, read_secret_file

NEW_FILE_MODE: Final = 0o600
LOCK_TIMEOUT: Final = 10.0
_KEPT_BITS: Final = 0o750 & ~UNSAFE_MODE

Owner = atomic.Owner | None
"""The uid and gid to give new files (root only), or None to leave them to the process."""


def rewrite(path: Path, setting: str, change: Callable[[bytes | None], bytes]) -> None:
    """Replace ``path`` by ``change(current bytes, or None if there is no file)``, locked."""
    if path.is_symlink():
        raise ConfigError(
            f"{setting} {path} is a symbolic link, which keyrotd would replace by a file",
            "point the setting at the file itself",
        )
    try:
        owner = _owner_to_keep(path)
        with _locked(path.with_name(path.name + ".lock"), owner):
            current = read_secret_file(path, setting) if path.exists() else None
            mode = NEW_FILE_MODE if current is None else _safe_mode(path)
            _replace(path, change(current), mode, owner)
    except FileNotFoundError:
        raise ConfigError(
            f"{setting} {path}: the directory {path.parent} does not exist",
            f"create it (mkdir -m 700 {path.parent}) or fix the setting",
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"{setting} {path} cannot be written ({reason} on {exc.filename or path})",
            f"run as the user that owns {path.parent}; {permission_hint(path)}",
        ) from None


def _owner_to_keep(path: Path) -> Owner:
    if os.geteuid() != 0:
        return None
    found = os.stat(path if path.exists() else path.parent)
    return found.st_uid, found.st_gid


def _safe_mode(path: Path) -> int:
    """The existing file's mode (it passed the file rule), so a 0640 file stays group-readable."""
    return stat.S_IMODE(os.stat(path).st_mode) & _KEPT_BITS | NEW_FILE_MODE


@contextmanager
def _locked(lock_path: Path, owner: Owner) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, NEW_FILE_MODE)
    try:
        own(fd, NEW_FILE_MODE, owner)
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise KeyrotdError(
                        f"another keyrotd client command holds {lock_path} for over "
                        f"{LOCK_TIMEOUT:g}s",
                        "retry, or look for a stuck `keyrotd client` process",
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the lock


def _replace(path: Path, content: bytes, mode: int, owner: Owner) -> None:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    replace_atomically(path, temp, content, mode, owner)
