"""PostgreSQL storage: one row per keyset in one table (docs/storage.md, "PostgreSQL").

Its ``settings`` module holds what the configuration needs (:class:`PostgresSettings`, the
DSN file's reading); neither it nor this module imports psycopg: psycopg and psycopg_pool
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
from typing import TYPE_CHECKING, Final

from keyrotd.errors import ConfigError
from keyrotd.secretfiles import load_encryption_key
from keyrotd.storage.postgres.settings import (
    DSN_SETTING,
    MAX_DOCUMENT_SIZE,
    PostgresSettings,
    check_postgres,
    read_dsn,
)
from keyrotd.storage.registry import Backend

if TYPE_CHECKING:
    from keyrotd.storage.interface import Storage

__all__ = [
    "BACKEND",
    "DSN_SETTING",
    "MAX_DOCUMENT_SIZE",
    "PostgresSettings",
    "check_postgres",
    "open_postgres",
    "read_dsn",
]


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


BACKEND: Final = Backend(
    settings=PostgresSettings,
    open=open_postgres,
    max_document_size=MAX_DOCUMENT_SIZE,
    check=check_postgres,
)
"""``storage.type = "postgres"`` (:mod:`keyrotd.storage.registry`)."""
