"""The settings of the PostgreSQL storage and the reading of its DSN file (no psycopg here)."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict

from keyrotd.config.fields import OptionalPath, PostgresTable
from keyrotd.errors import ConfigError
from keyrotd.secretfiles import load_encryption_key, read_secret_file

__all__ = [
    "DSN_SETTING",
    "MAX_DOCUMENT_SIZE",
    "PostgresSettings",
    "check_postgres",
    "read_dsn",
]

MAX_DOCUMENT_SIZE: Final = 1024 * 1024
"""Largest document (before sealing) a row takes, as the file store's."""
DSN_SETTING: Final = "storage.dsn_file"
_DSN_SIZE: Final = 8192


class PostgresSettings(BaseModel):
    """The ``[storage]`` settings of ``type = "postgres"``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dsn_file: OptionalPath = None
    table: PostgresTable = "keyrotd_keysets"
    ca_file: OptionalPath = None
    encryption_key_file: OptionalPath = None


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
