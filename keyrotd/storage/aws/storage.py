"""AWS Secrets Manager storage: one secret per keyset, swapped by moving ``AWSCURRENT``.

The secret of keyset ``K`` is named ``secret_prefix + K``; keyrotd creates it on first write
(tagged ``managed-by=keyrotd`` and ``keyrotd:keyset=K``, encrypted with ``kms_key_id`` when set)
and never deletes it. A secret created empty beforehand (say by Terraform) is filled on first
write. The version of a document is the secret's ``VersionId``.

- Read: ``GetSecretValue(VersionStage="AWSCURRENT")``, asked explicitly (moto answers a read
  without a stage from a stale default after ``UpdateSecretVersionStage``). The periodic
  refresh (``read_many``) reads 20 secrets a ``BatchGetSecretValue`` request instead
  (:mod:`keyrotd.storage.aws.batch`, docs/storage.md).
- ``request_counts``: HTTP requests sent per operation, retries included (the billed ones).
- Write (compare-and-swap, :mod:`keyrotd.storage.aws.swap`): a new version labelled
  ``KEYROTD_PENDING``, then ``AWSCURRENT`` moved onto it from the version that was read; the
  loser of a race gets :class:`ConflictError`.

Old versions: Secrets Manager keeps superseded versions (``AWSPREVIOUS``, and unlabelled ones for
at least 24 hours) with the private keys they held, and has no call to delete one. keyrotd reads
only ``AWSCURRENT``; the README's IAM policy grants ``GetSecretValue`` only on that stage.

Documents: non-empty UTF-8 text (what keyrotd writes) is the ``SecretString`` as is, readable in
the console; anything else is a ``SecretBinary`` of a zero byte followed by the document.
Secrets Manager holds at most 65536 bytes, so a larger document is refused before it is sent.

Errors (:mod:`keyrotd.storage.aws.errors`): what botocore still fails after its own retries is a
:class:`TemporaryStorageError`; everything else is a :class:`StorageError` naming the secret and
the fix. boto3 is imported only here and in those two pieces.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.exceptions import ClientError, NoRegionError

from keyrotd.errors import ConfigError
from keyrotd.model import KEYSET_NAME
from keyrotd.storage.aws import MAX_DOCUMENT_SIZE
from keyrotd.storage.aws.batch import BatchReads
from keyrotd.storage.aws.errors import NOT_FOUND, RetryPolicy, SecretErrors, code
from keyrotd.storage.aws.swap import CURRENT, SecretValue, SecretWrites
from keyrotd.storage.interface import (
    ConflictError,
    CorruptDocumentError,
    DocumentTooLargeError,
    ReadResult,
    Versioned,
    checked_name,
)

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager.client import SecretsManagerClient

__all__ = ["MAX_DOCUMENT_SIZE", "AwsStorage", "RetryPolicy"]

_BINARY_MARK: Final = b"\x00"
_VERSION_ID: Final = re.compile(r"[A-Za-z0-9-]{32,64}")
DEFAULT_RETRY_POLICY: Final = RetryPolicy()


class AwsStorage:
    """Keyset documents as AWS Secrets Manager secrets (see the module docstring)."""

    max_document_size: int = MAX_DOCUMENT_SIZE

    def __init__(
        self,
        *,
        secret_prefix: str = "keyrotd/",  # noqa: S107 - a name prefix, not a secret
        region: str = "",
        endpoint_url: str = "",
        kms_key_id: str = "",
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
    ) -> None:
        _silence_request_logging()
        self._prefix = secret_prefix
        try:
            self._client: SecretsManagerClient = boto3.session.Session().client(
                "secretsmanager",
                region_name=region or None,
                endpoint_url=endpoint_url or None,
                config=retry.botocore_config(),
            )
        except NoRegionError:
            raise ConfigError(
                "no AWS region is set for the Secrets Manager storage",
                "set storage.region (KEYROTD_STORAGE__REGION) or AWS_REGION",
            ) from None
        self.region: str = self._client.meta.region_name
        self._requests = RequestCounter()
        self._client.meta.events.register("before-send.secrets-manager", self._requests.count)
        self._errors = SecretErrors(self.region, retry.max_attempts, kms_key_id)
        self._writes = SecretWrites(self._client, self._errors, kms_key_id)
        self._batch = BatchReads(self, self._client, self._errors)

    @property
    def client(self) -> SecretsManagerClient:
        """The boto3 client, for observers such as ``client.meta.events`` hooks."""
        return self._client

    def request_counts(self) -> dict[str, int]:
        """HTTP requests sent to Secrets Manager so far, per operation, each retry included
        (every attempt is billed)."""
        return self._requests.snapshot()

    def secret_name(self, keyset: str) -> str:
        return self._prefix + checked_name(keyset)

    def location(self, keyset: str) -> str:
        return f"AWS secret {self.secret_name(keyset)} ({self.region})"

    def read(self, keyset: str) -> Versioned | None:
        name = self.secret_name(keyset)
        with self._errors.translated("GetSecretValue", name):
            try:
                found = self._client.get_secret_value(SecretId=name, VersionStage=CURRENT)
            except ClientError as error:
                if code(error) == NOT_FOUND:
                    return None
                raise
        data = self.decode(name, found.get("SecretString"), found.get("SecretBinary"))
        return Versioned(data=data, version=found["VersionId"], location=self.location(keyset))

    def read_many(self, keysets: Sequence[str]) -> dict[str, ReadResult]:
        """``BatchGetSecretValue``, 20 secrets a request (:mod:`keyrotd.storage.aws.batch`)."""
        return self._batch.read_many(keysets)

    def write(self, keyset: str, data: bytes, expected_version: str | None) -> str:
        name = self.secret_name(keyset)
        value = self._encode(name, data)
        token = str(uuid.uuid4())  # one per write: botocore's retries of a call are idempotent
        if expected_version is None:
            return self._writes.create(keyset, name, value, token)
        if not _VERSION_ID.fullmatch(expected_version):
            raise ConflictError(
                f"AWS secret {name} ({self.region}) cannot be at version {expected_version!r}: "
                f"that is not a Secrets Manager version id",
                "re-read the keyset and try again",
            )
        return self._writes.swap(name, value, token, expected_version)

    def list_keysets(self) -> list[str]:
        """Keysets whose secret (named with the prefix) has a current value."""
        paginator = self._client.get_paginator("list_secrets")
        names: set[str] = set()
        with self._errors.translated("ListSecrets", self._prefix + "*"):
            pages = (
                paginator.paginate(Filters=[{"Key": "name", "Values": [self._prefix]}])
                if self._prefix
                else paginator.paginate()
            )
            for page in pages:
                for entry in page["SecretList"]:
                    keyset = entry.get("Name", "").removeprefix(self._prefix)
                    stages = entry.get("SecretVersionsToStages", {}).values()
                    if (
                        entry.get("Name", "").startswith(self._prefix)
                        and KEYSET_NAME.fullmatch(keyset)
                        and any(CURRENT in labels for labels in stages)
                    ):
                        names.add(keyset)
        return sorted(names)

    def close(self) -> None:
        self._client.close()

    # Documents

    def _encode(self, name: str, data: bytes) -> SecretValue:
        self._check_size(name, len(data), "")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if text:
            return {"SecretString": text}
        self._check_size(name, len(data) + len(_BINARY_MARK), " (binary documents: 65535)")
        return {"SecretBinary": _BINARY_MARK + data}

    def _check_size(self, name: str, size: int, detail: str) -> None:
        if size > MAX_DOCUMENT_SIZE:
            raise DocumentTooLargeError(
                f"the document for {name} is {size} bytes, above the AWS Secrets Manager limit "
                f"of {MAX_DOCUMENT_SIZE} bytes per secret value{detail}; nothing was written",
                "keep fewer keys in the keyset (a shorter rotation_period or token_lifetime "
                "retires keys sooner) or use a smaller algorithm; the README lists how many "
                "keys fit",
            )

    def decode(self, name: str, text: str | None, binary: bytes | None) -> bytes:
        """The document in a secret value (``read``'s and ``read_many``'s decoding)."""
        if text is not None:
            return text.encode("utf-8")
        if binary is not None and binary.startswith(_BINARY_MARK):
            return binary[len(_BINARY_MARK) :]
        raise CorruptDocumentError(
            f"AWS secret {name} ({self.region}) does not hold a document keyrotd wrote "
            f"(a binary value without keyrotd's marker, or no value); it was left untouched",
            "look at its versions in the AWS console, then put back a good version: "
            "aws secretsmanager update-secret-version-stage --version-stage AWSCURRENT ...",
        )


class RequestCounter:
    """Counts HTTP attempts per operation: botocore emits ``before-send`` once per attempt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def count(self, event_name: str, **_: Any) -> None:
        """The ``before-send.secrets-manager.<Operation>`` hook; returns None, so it sends."""
        operation = event_name.rpartition(".")[2]
        with self._lock:
            self._counts[operation] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def _silence_request_logging() -> None:
    """botocore logs request parameters, secret values included, at DEBUG: never let it."""
    for name in ("botocore", "boto3", "urllib3"):
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
