"""Files that hold secrets: the file rule of CONTRACT 2, and the admin token.

:func:`read_secret_file` is the one check for the admin token, clients and encryption key files:
a regular file (a symbolic link is followed) with no permission for others and no group write,
else a :class:`ConfigError` (exit 2) naming the setting, the file and the fix. The check is made
on the file descriptor that is read, so what is checked is what is read. Nothing read is ever put
into an error message.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from keyrotd.errors import ConfigError

UNSAFE_MODE: Final = stat.S_IWGRP | stat.S_IRWXO
"""Permission bits a secret file must not have: group write, anything for others."""

MAX_SECRET_FILE_SIZE: Final = 1024 * 1024


def permission_hint(path: Path) -> str:
    """How to make ``path`` acceptable, for a plain file and for a container secret."""
    return (
        f"chmod 600 {path} (or 640), owned by the user running keyrotd; for a container "
        "secret, mount it with mode 0400 and that user's uid"
    )


def read_secret_file(path: Path, setting: str, *, max_size: int = MAX_SECRET_FILE_SIZE) -> bytes:
    """The bytes of ``path`` (given by ``setting``) if it passes the file rule."""
    where = f"{setting} {path}"
    try:
        # O_NONBLOCK: opening a FIFO must not hang; it is refused below as not a regular file
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist", f"create it, or unset {setting}") from None
    except OSError as exc:
        raise _unreadable(where, exc, path) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(
                f"{where} is not a regular file", f"give the path of a file in {setting}"
            )
        if mode & UNSAFE_MODE:
            shown = f"{stat.S_IMODE(mode):03o}"
            raise ConfigError(
                f"{where} is accessible to other users (mode {shown})", permission_hint(path)
            )
        data = _read_at_most(fd, max_size + 1)
    except OSError as exc:
        raise _unreadable(where, exc, path) from None
    finally:
        os.close(fd)
    if len(data) > max_size:
        raise ConfigError(
            f"{where} is larger than {max_size} bytes", f"check that {setting} is right"
        )
    return data


def _read_at_most(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0 and (chunk := os.read(fd, min(size, 65536))):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _unreadable(where: str, exc: OSError, path: Path) -> ConfigError:
    reason = exc.strerror or type(exc).__name__
    return ConfigError(f"{where} cannot be read ({reason})", permission_hint(path))


def load_admin_token(path: Path) -> bytes:
    """The admin token in ``path`` (surrounding whitespace stripped), or a :class:`ConfigError`."""
    token = read_secret_file(path, "server.admin_token_file", max_size=4096).strip()
    if not token:
        raise ConfigError(
            f"server.admin_token_file {path} is empty",
            "write a random token into it, e.g. `openssl rand -hex 32`",
        )
    return token
