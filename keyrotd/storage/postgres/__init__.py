"""PostgreSQL storage: one row per keyset in one table (docs/storage.md, "PostgreSQL").

This module holds what the configuration needs -- :class:`PostgresSettings`, the DSN file's
reading and :func:`open_postgres` -- and imports nothing of psycopg: psycopg and psycopg_pool
load only when a postgres storage is opened (:mod:`keyrotd.storage.postgres.backend`, the
``[postgres]`` extra).

- ``dsn_file``: a libpq connection string, keyword=value or URI form, password inside. It
  follows the secret-file rule (:func:`keyrotd.secretfiles.read_secret_file`); surrounding
  whitespace is ignored. It is never logged nor put in a message: they name the host, database
  and table only (:func:`keyrotd.storage.postgres.backend.where`).
- ``ca_file``: verify the server against this CA bundle: ``sslmode=verify-full`` and
  ``sslrootcert`` are added unless the DSN sets them itself.
- ``table``: created if missing (with its schema's ``CREATE`` privilege).
- ``encryption_key_file``: documents sealed with AES-256-GCM (recommended: backups, replicas
  and DBAs read rows).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict

from keyrotd.errors import ConfigError
from keyrotd.secretfiles import load_encryption_key, read_secret_file

if TYPE_CHECKING:
    from keyrotd.storage.interface import Storage

__all__ = [
    "DSN_SETTING",
    "MAX_DOCUMENT_SIZE",
    "PostgresSettings",
    "check_postgres",
    "open_postgres",
    "read_dsn",
]

MAX_DOCUMENT_SIZE: Final = 1024 * 1024
"""Largest document (before sealing) a row takes, as the file store's."""
DSN_SETTING: Final = "storage.dsn_file"
_DSN_SIZE: Final = 8192


class PostgresSettings(BaseModel):
    """The ``[storage]`` settings of ``type = "postgres"``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dsn_file: Path | None = None
    table: str = "keyrotd_keysets"
    ca_file: Path | None = None
    encryption_key_file: Path | None = None

    @classmethod
    def of(cls, storage: object) -> PostgresSettings:
        """Its values in the flat ``[storage]`` model of the configuration."""
        return cls(**{name: getattr(storage, name) for name in cls.model_fields})


def read_dsn(settings: PostgresSettings) -> str:
    """The connection string in ``dsn_file``, once the file passes the secret-file rule."""
    path = settings.dsn_file
    if path is None:
        raise ConfigError(
            f'{DSN_SETTING} is not set, and storage.type = "postgres" needs it',
            "write the libpq connection string (e.g. host=db.example dbname=keyrotd "
            "user=keyrotd password=...) into a file of mode 0600 and set storage.dsn_file to it",
        )
    dsn = read_secret_file(path, DSN_SETTING, max_size=_DSN_SIZE).strip()
    try:
        text = dsn.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if not text:
        raise ConfigError(
            f"{DSN_SETTING} {path} does not hold a connection string (empty or not UTF-8)",
            "write a libpq connection string into it, keyword=value or postgresql:// URI",
        )
    return text


def check_postgres(settings: PostgresSettings) -> None:
    """What ``run`` checks before it connects, for ``check-config`` too: the DSN, CA and
    encryption key files."""
    read_dsn(settings)
    if settings.ca_file is not None and not settings.ca_file.is_file():
        raise ConfigError(
            f"storage.ca_file {settings.ca_file} is not a readable file",
            "point it at the PEM bundle of the CA that signed the server's certificate",
        )
    if settings.encryption_key_file is not None:
        load_encryption_key(settings.encryption_key_file)


def open_postgres(
    settings: PostgresSettings, listen: Callable[[str | None], None] | None = None
) -> Storage:
    """The storage on the configured table; psycopg is imported here. ``listen``, when given,
    is called with a keyset's name as soon as another process changes it (``None``: anything
    may have changed, e.g. after a reconnection); see :meth:`PostgresStorage.watch`."""
    try:
        from keyrotd.storage.postgres.backend import PostgresStorage
    except ImportError as missing:
        raise ConfigError(
            f'storage.type = "postgres" needs psycopg and psycopg_pool ({missing.name} is not '
            "installed)",
            "pip install 'keyrotd[postgres]'",
        ) from None

    check_postgres(settings)
    key_file = settings.encryption_key_file
    storage = PostgresStorage(
        read_dsn(settings),
        table=settings.table,
        ca_file=settings.ca_file,
        encryption_key=None if key_file is None else load_encryption_key(key_file),
    )
    if listen is not None:
        storage.watch(listen)
    return storage
