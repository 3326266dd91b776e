"""Storage backends. ``open_storage`` picks one from the configuration; boto3 loads only for AWS,
psycopg only for PostgreSQL.

Every backend it opens is wrapped in a :class:`~keyrotd.storage.revisions.RevisionGuard`: its
readers refuse a document that goes back (G8), whatever the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from keyrotd.storage.interface import Storage, Versioned

if TYPE_CHECKING:
    from keyrotd.config import StorageSettings

__all__ = ["Storage", "Versioned", "open_storage"]


def open_storage(
    settings: StorageSettings, on_rollback: Callable[[str], None] | None = None
) -> Storage:
    """The configured backend behind the G8 guard; ``on_rollback(keyset)`` counts refusals."""
    from keyrotd.storage.revision_file import RevisionFile
    from keyrotd.storage.revisions import RevisionGuard

    backend = _open_backend(settings)
    marks = None
    if settings.revision_file is not None:
        owner_of = settings.path if settings.type == "file" else None
        marks = RevisionFile(settings.revision_file, owner_of)
    if on_rollback is None:
        return RevisionGuard(backend, marks)
    return RevisionGuard(backend, marks, on_rollback)


def _open_backend(settings: StorageSettings) -> Storage:
    if settings.type == "postgres":
        from keyrotd.storage.postgres import PostgresSettings, open_postgres

        return open_postgres(PostgresSettings.of(settings))
    if settings.type == "aws":
        from keyrotd.storage.aws import AwsStorage

        return AwsStorage.from_settings(settings)
    from keyrotd.storage.file import FileStorage

    return FileStorage.from_settings(settings)
