"""Storage backends. ``open_storage`` picks one from the configuration; boto3 loads only for AWS."""

from __future__ import annotations

from typing import TYPE_CHECKING

from keyrotd.storage.interface import Storage, Versioned

if TYPE_CHECKING:
    from keyrotd.config import StorageSettings

__all__ = ["Storage", "Versioned", "open_storage"]


def open_storage(settings: StorageSettings) -> Storage:
    if settings.type == "aws":
        from keyrotd.storage.aws import AwsStorage

        return AwsStorage.from_settings(settings)
    from keyrotd.storage.file import FileStorage

    return FileStorage.from_settings(settings)
