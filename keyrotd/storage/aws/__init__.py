"""AWS Secrets Manager storage (``storage.type = "aws"``): one secret per keyset.

The pieces: :mod:`~keyrotd.storage.aws.settings` (its keys, no boto3),
:mod:`~keyrotd.storage.aws.storage` (the backend), :mod:`~keyrotd.storage.aws.swap` (the
compare-and-swap), :mod:`~keyrotd.storage.aws.batch` (the refresh's batched read) and
:mod:`~keyrotd.storage.aws.errors` (which failures are temporary). Importing this package loads
no boto3: :data:`BACKEND` imports it when the store opens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from keyrotd.storage.aws.settings import MAX_DOCUMENT_SIZE, AwsSettings
from keyrotd.storage.registry import Backend

if TYPE_CHECKING:
    from keyrotd.storage.interface import Storage

__all__ = ["BACKEND", "MAX_DOCUMENT_SIZE", "AwsSettings"]


def open_aws(settings: AwsSettings) -> Storage:
    """The store; refuses without a region (settings, environment or AWS config files)."""
    from keyrotd.storage.aws.storage import AwsStorage

    return AwsStorage.from_settings(settings)


def check_aws(settings: AwsSettings) -> None:
    """Opening reads nothing: it finds the region and refuses without one, as ``run`` would."""
    open_aws(settings).close()


BACKEND: Final = Backend(
    settings=AwsSettings,
    open=open_aws,
    max_document_size=MAX_DOCUMENT_SIZE,
    check=check_aws,
)
"""``storage.type = "aws"`` (:mod:`keyrotd.storage.registry`)."""
