"""The files that guard secrets, and the one rule for them (README.md, Configuration).

The admin token, the admin clients file, the storage encryption key and the TLS private key are
refused (:class:`ConfigError`, exit 2) unless each is a regular file with no permission for others
and no group write (0600, 0640, 0400 and 0440 pass). An admin token shorter than
:data:`MIN_ADMIN_TOKEN` characters is refused too. Every command that loads one of these files
reads it through :func:`read_secret_file`; ``keyrotd run`` and ``keyrotd check-config`` check
them all first (``keyrotd.cli.preflight``), so both refuse the same files with the same line.

A container secret is mounted 0444 by default (podman, docker): the hint says how to mount it
0400 for keyrotd's user instead.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

from keyrotd.errors import ConfigError
from keyrotd.storage.sealing import KEY_SIZE

if TYPE_CHECKING:
    from keyrotd.config import Settings

UNSAFE_MODE: Final = stat.S_IWGRP | stat.S_IRWXO
"""Permission bits a secret file must not have: group write, anything for others."""
MAX_SECRET_FILE_SIZE: Final = 1024 * 1024
_TOKEN_SIZE: Final = 4096
MIN_ADMIN_TOKEN: Final = 32
"""Fewest characters of an admin token (``openssl rand -hex 32`` makes 64)."""
_ADMIN_TOKEN: Final = "server.admin_token_file"  # noqa: S105 - a setting name
_TLS_KEY: Final = "server.tls_key_file"
_ENCRYPTION_KEY: Final = "storage.encryption_key_file"


def check_files(settings: Settings) -> None:
    """Read the admin token and encryption key files as ``run`` does; the first problem is
    raised (the clients file and the TLS pair: ``keyrotd.cli.preflight``)."""
    if settings.server.admin_token_file is not None:
        load_admin_token(settings.server.admin_token_file)
    if settings.storage.type != "aws" and settings.storage.encryption_key_file is not None:
        load_encryption_key(settings.storage.encryption_key_file)


def load_admin_token(path: Path) -> bytes:
    """The admin token in ``path`` (surrounding whitespace stripped)."""
    token = read_secret_file(
        path, _ADMIN_TOKEN, missing_hint="create it with a random token", max_size=_TOKEN_SIZE
    ).strip()
    if not token:
        raise ConfigError(
            f"{_ADMIN_TOKEN} {path} is empty",
            "write a random token into it, e.g. `openssl rand -hex 32`",
        )
    if len(token.decode("utf-8", "replace")) < MIN_ADMIN_TOKEN:
        raise ConfigError(
            f"{_ADMIN_TOKEN} {path} holds a token shorter than {MIN_ADMIN_TOKEN} characters",
            "write a longer random token into it, e.g. `openssl rand -hex 32`",
        )
    return token


def load_tls_key(path: Path) -> bytes:
    """The PEM text of the TLS private key in ``path``, once it passes the file rule."""
    return read_secret_file(
        path, _TLS_KEY, missing_hint="give the private key file of server.tls_cert_file"
    )


def load_encryption_key(path: Path) -> bytes:
    """The 32-byte key held base64-encoded in ``path``."""
    hint = (
        "it must hold 32 random bytes, base64-encoded; make one with: "
        f"head -c32 /dev/urandom | base64 > {path} && chmod 600 {path}"
    )
    text = read_secret_file(path, _ENCRYPTION_KEY, missing_hint=hint, max_size=_TOKEN_SIZE)
    try:
        key = base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"{_ENCRYPTION_KEY} {path} does not hold a 32-byte key (not base64)", hint
        ) from None
    if len(key) != KEY_SIZE:
        raise ConfigError(
            f"{_ENCRYPTION_KEY} {path} does not hold a 32-byte key (it decodes to {len(key)} "
            "bytes)",
            hint,
        )
    return key


def read_secret_file(
    path: Path,
    setting: str,
    *,
    missing_hint: str | None = None,
    max_size: int = MAX_SECRET_FILE_SIZE,
) -> bytes:
    """The bytes of ``path`` once it passes the rule; ``setting`` names it in every error. The
    check is made on the descriptor that is read, so what is checked is what is read; nothing
    read is ever put into an error message."""
    where = f"{setting} {path}"
    missing_hint = missing_hint or f"create it, or unset {setting}"
    try:
        # O_NONBLOCK: a FIFO put there must not hang the start; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist", missing_hint) from None
    except OSError as exc:
        raise ConfigError(
            f"{where} cannot be read ({_reason(exc)})", permission_hint(path)
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{where} is not a regular file", missing_hint)
        if mode & UNSAFE_MODE:
            shown = f"{stat.S_IMODE(mode):03o}"
            raise ConfigError(
                f"{where} is accessible to other users (mode {shown})", permission_hint(path)
            )
        data = _read_at_most(fd, max_size + 1)
    except OSError as exc:
        raise ConfigError(
            f"{where} cannot be read ({_reason(exc)})", permission_hint(path)
        ) from None
    finally:
        os.close(fd)
    if len(data) > max_size:
        raise ConfigError(f"{where} is larger than {max_size} bytes", f"check {setting}")
    return data


def _read_at_most(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0 and (chunk := os.read(fd, min(size, 65536))):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def permission_hint(path: Path) -> str:
    """How to make ``path`` acceptable, for a plain file and for a container secret."""
    uid = os.geteuid()
    return (
        f"chmod 600 {path} (or 640), owned by the user running keyrotd (uid {uid}); a container "
        f"secret must be mounted with mode 0400 for that uid, e.g. podman run "
        f"--secret NAME,mode=0400,uid={uid}"
    )


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
