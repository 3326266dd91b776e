"""AWS Secrets Manager storage (``storage.type = "aws"``): one secret per keyset.

The pieces: :mod:`~keyrotd.storage.aws.backend` (its settings and its ``Backend``, no boto3),
:mod:`~keyrotd.storage.aws.storage` (the store), :mod:`~keyrotd.storage.aws.swap` (the
compare-and-swap), :mod:`~keyrotd.storage.aws.batch` (the refresh's batched read) and
:mod:`~keyrotd.storage.aws.errors` (which failures are temporary). This module imports nothing:
the store's pieces load boto3, and only when an ``aws`` store opens.
"""

from typing import Final

MAX_DOCUMENT_SIZE: Final = 65536
"""Secrets Manager's limit on a secret value, in bytes."""
