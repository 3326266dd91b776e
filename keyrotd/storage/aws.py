"""AWS Secrets Manager storage: one secret per keyset, swapped by moving ``AWSCURRENT``.

The secret of keyset ``K`` is named ``secret_prefix + K``; keyrotd creates it on first write
(tagged ``managed-by=keyrotd`` and ``keyrotd:keyset=K``, encrypted with ``kms_key_id`` when set)
and never deletes it. A secret created empty beforehand (say by Terraform) is filled on first
write. The version of a document is the secret's ``VersionId``.

- Read: ``GetSecretValue(VersionStage="AWSCURRENT")``, asked explicitly (moto answers a read
  without a stage from a stale default after ``UpdateSecretVersionStage``).
- Write (compare-and-swap): ``PutSecretValue`` stores the document as a new version carrying only
  the staging label ``KEYROTD_PENDING``, then ``UpdateSecretVersionStage`` moves ``AWSCURRENT``
  onto it with ``RemoveFromVersionId`` set to the version that was read. Secrets Manager refuses
  the move when ``AWSCURRENT`` is no longer there: the loser gets :class:`ConflictError`. A
  refused move is checked with one ``DescribeSecret``, so that a move retried after a lost
  response (it had succeeded) is not taken for a conflict.
- Create: ``CreateSecret``; if the secret exists, a ``PutSecretValue`` wins only if it is the
  secret's first version (Secrets Manager then makes it current), otherwise it is a conflict.

Labels do not pile up: ``KEYROTD_PENDING`` is one label, which Secrets Manager moves to each new
version, so at most three versions are labelled (current, previous, pending); versions left
without a label are deprecated and removed by Secrets Manager itself.

Old versions: Secrets Manager keeps superseded versions (``AWSPREVIOUS``, and unlabelled ones for
at least 24 hours) with the private keys they held, and has no call to delete one. keyrotd reads
only ``AWSCURRENT``; the README's IAM policy grants ``GetSecretValue`` only on that stage.

Documents: non-empty UTF-8 text (what keyrotd writes) is the ``SecretString`` as is, readable in
the console; anything else is a ``SecretBinary`` of a zero byte followed by the document.
Secrets Manager holds at most 65536 bytes, so a larger document is refused before it is sent.

Errors: throttling, 5xx answers, timeouts and connection failures are retried by botocore
(standard mode, :class:`RetryPolicy`) and then raise :class:`TemporaryStorageError`; everything
else is a :class:`StorageError` naming the secret and the fix (``LimitExceededException``, which
botocore retries as throttling, is a quota such as versions per secret: permanent). boto3 is
imported only here.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, TypedDict

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from keyrotd.errors import ConfigError
from keyrotd.model import KEYSET_NAME
from keyrotd.storage.interface import (
    ConflictError,
    CorruptDocumentError,
    DocumentTooLargeError,
    StorageError,
    TemporaryStorageError,
    Versioned,
)

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager.client import SecretsManagerClient
    from mypy_boto3_secretsmanager.type_defs import TagTypeDef

    from keyrotd.config import StorageSettings

__all__ = ["MAX_DOCUMENT_SIZE", "STAGING_LABEL", "AwsStorage", "RetryPolicy"]

MAX_DOCUMENT_SIZE: Final = 65536
"""Secrets Manager's limit on a secret value, in bytes."""
STAGING_LABEL: Final = "KEYROTD_PENDING"
CURRENT: Final = "AWSCURRENT"
PREVIOUS: Final = "AWSPREVIOUS"
_BINARY_MARK: Final = b"\x00"
_VERSION_ID: Final = re.compile(r"[A-Za-z0-9-]{32,64}")
_NOT_FOUND: Final = "ResourceNotFoundException"
_EXISTS: Final = "ResourceExistsException"
_REFUSED: Final = frozenset({"InvalidParameterException", "InvalidRequestException", _NOT_FOUND})
_THROTTLED: Final = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
_UNAVAILABLE: Final = frozenset(
    {"InternalServiceError", "InternalFailure", "ServiceUnavailable", "RequestTimeout"}
)
_ACCESS_DENIED: Final = frozenset({"AccessDeniedException", "AccessDenied"})
_BAD_CREDENTIALS: Final = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "ExpiredToken",
    }
)
_KMS_FAILURES: Final = frozenset({"DecryptionFailure", "EncryptionFailure"})
_NO_CREDENTIALS: Final = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)
_IAM_HINT: Final = "see the IAM policy in the README"


@dataclass(frozen=True)
class RetryPolicy:
    """How botocore retries throttled, failing (5xx) and unreachable calls, and its timeouts.

    Standard mode backs off exponentially with jitter (from 50 ms for 5xx and connection errors,
    from 1 s for throttling). The worst case for one call is about
    ``max_attempts * (connect_timeout + read_timeout)`` plus the back-off.
    """

    max_attempts: int = 4
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    mode: Literal["standard", "adaptive"] = "standard"

    def botocore_config(self) -> Config:
        return Config(
            retries={"mode": self.mode, "total_max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            user_agent_extra="keyrotd",
        )


DEFAULT_RETRY_POLICY: Final = RetryPolicy()


class _SecretValue(TypedDict, total=False):
    """The value of a secret version: exactly one of the two."""

    SecretString: str
    SecretBinary: bytes


class _Encryption(TypedDict, total=False):
    KmsKeyId: str


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
        self._kms_key_id = kms_key_id
        self._retry = retry
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

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> AwsStorage:
        return cls(
            secret_prefix=settings.secret_prefix,
            region=settings.region,
            endpoint_url=settings.endpoint_url,
            kms_key_id=settings.kms_key_id,
        )

    @property
    def client(self) -> SecretsManagerClient:
        """The boto3 client, for observers such as ``client.meta.events`` hooks."""
        return self._client

    def secret_name(self, keyset: str) -> str:
        if not KEYSET_NAME.fullmatch(keyset):
            raise ConfigError(
                f"invalid keyset name {keyset!r}",
                "use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        return self._prefix + keyset

    def location(self, keyset: str) -> str:
        return f"AWS secret {self.secret_name(keyset)} ({self.region})"

    def read(self, keyset: str) -> Versioned | None:
        name = self.secret_name(keyset)
        with self._errors("GetSecretValue", name):
            try:
                found = self._client.get_secret_value(SecretId=name, VersionStage=CURRENT)
            except ClientError as error:
                if _code(error) == _NOT_FOUND:
                    return None
                raise
        data = self._decode(name, found.get("SecretString"), found.get("SecretBinary"))
        return Versioned(data=data, version=found["VersionId"], location=self.location(keyset))

    def write(self, keyset: str, data: bytes, expected_version: str | None) -> str:
        name = self.secret_name(keyset)
        value = self._encode(name, data)
        token = str(uuid.uuid4())  # one per write: botocore's retries of a call are idempotent
        if expected_version is None:
            return self._create(keyset, name, value, token)
        if not _VERSION_ID.fullmatch(expected_version):
            raise ConflictError(
                f"AWS secret {name} ({self.region}) cannot be at version {expected_version!r}: "
                f"that is not a Secrets Manager version id",
                "re-read the keyset and try again",
            )
        return self._swap(name, value, token, expected_version)

    def list_keysets(self) -> list[str]:
        """Keysets whose secret (named with the prefix) has a current value."""
        paginator = self._client.get_paginator("list_secrets")
        names: set[str] = set()
        with self._errors("ListSecrets", self._prefix + "*"):
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

    # The two writes

    def _create(self, keyset: str, name: str, value: _SecretValue, token: str) -> str:
        with self._errors("CreateSecret", name):
            try:
                created = self._client.create_secret(
                    Name=name,
                    ClientRequestToken=token,
                    Description=f"keyrotd keyset {keyset}: signing keys managed by keyrotd",
                    Tags=_tags(keyset),
                    **self._kms(),
                    **value,
                )
                return created["VersionId"]
            except ClientError as error:
                if _code(error) != _EXISTS:
                    raise
        # The secret exists. Fill it only if it has no value yet (created beforehand):
        # Secrets Manager makes the first version of a secret current, and only the first.
        with self._errors("PutSecretValue", name):
            put = self._client.put_secret_value(
                SecretId=name,
                ClientRequestToken=token,
                VersionStages=[STAGING_LABEL],
                **value,
            )
        if CURRENT in put.get("VersionStages", []):
            return put["VersionId"]
        raise self._conflict(name, None, "a stored document")

    def _swap(self, name: str, value: _SecretValue, token: str, expected: str) -> str:
        with self._errors("PutSecretValue", name):
            try:
                put = self._client.put_secret_value(
                    SecretId=name,
                    ClientRequestToken=token,
                    VersionStages=[STAGING_LABEL],
                    **value,
                )
            except ClientError as error:
                if _code(error) == _NOT_FOUND:
                    raise self._conflict(name, expected, None) from None
                raise
        new = put["VersionId"]
        refused: ClientError | None = None
        with self._errors("UpdateSecretVersionStage", name):
            try:
                self._client.update_secret_version_stage(
                    SecretId=name,
                    VersionStage=CURRENT,
                    MoveToVersionId=new,
                    RemoveFromVersionId=expected,
                )
            except ClientError as error:
                if _code(error) not in _REFUSED:
                    raise
                refused = error
        if refused is not None:
            self._settle_refused_move(name, expected, new, refused)
        return new

    def _settle_refused_move(self, name: str, expected: str, new: str, error: ClientError) -> None:
        """Secrets Manager refused to move AWSCURRENT from ``expected`` to ``new``: why?

        Returns if ``new`` is or was current (the refused call was botocore's retry of a move
        that had succeeded), else raises :class:`ConflictError` if another version is current.
        """
        with self._errors("DescribeSecret", name):
            try:
                stages = self._client.describe_secret(SecretId=name).get("VersionIdsToStages", {})
            except ClientError as describe_error:
                if _code(describe_error) == _NOT_FOUND:
                    raise self._conflict(name, expected, None) from None
                raise
        if {CURRENT, PREVIOUS} & set(stages.get(new, [])):
            return
        current = next((v for v, labels in stages.items() if CURRENT in labels), None)
        if current != expected:
            raise self._conflict(name, expected, current)
        raise self._client_failure("UpdateSecretVersionStage", name, error)

    # Documents

    def _encode(self, name: str, data: bytes) -> _SecretValue:
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

    def _decode(self, name: str, text: str | None, binary: bytes | None) -> bytes:
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

    # Errors

    def _conflict(self, name: str, expected: str | None, found: str | None) -> ConflictError:
        return ConflictError(
            f"AWS secret {name} ({self.region}) changed since it was read (expected version "
            f"{expected or 'none'}, found {found or 'none'})",
            "re-read the keyset and try again",
        )

    @contextmanager
    def _errors(self, operation: str, name: str) -> Iterator[None]:
        """Translate botocore errors of one call into keyrotd errors naming the secret."""
        try:
            yield
        except ClientError as error:
            raise self._client_failure(operation, name, error) from None
        except BotoCoreError as error:
            raise self._botocore_failure(operation, name, error) from None

    def _client_failure(self, operation: str, name: str, error: ClientError) -> StorageError:
        code = _code(error)
        message = error.response.get("Error", {}).get("Message", "") or str(error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        what = f"{operation} on AWS secret {name} ({self.region})"
        if code in _THROTTLED or code in _UNAVAILABLE or status >= 500:
            return TemporaryStorageError(
                f"{what} still failed after {self._retry.max_attempts} attempts: "
                f"{code or status}: {message}",
                "AWS Secrets Manager is throttling or unavailable; keyrotd retries later by "
                "itself and keeps serving the keys it loaded",
            )
        if code in _ACCESS_DENIED:
            hint = (
                f"allow secretsmanager:{operation} on the secret for the IAM principal keyrotd "
                f"runs as (and kms:Decrypt/kms:GenerateDataKey on its KMS key); {_IAM_HINT}"
            )
        elif code in _KMS_FAILURES or code.startswith("KMS"):
            hint = (
                f"check the KMS key of the secret ({self._kms_key_id or 'aws/secretsmanager'}): "
                f"it must be enabled and allow kms:Decrypt and kms:GenerateDataKey to keyrotd's "
                f"IAM principal; {_IAM_HINT}"
            )
        elif code == "LimitExceededException":
            hint = (
                "a Secrets Manager quota was reached; for versions: every write is a version, "
                "kept at least 24 hours, and AWS advises at most one write per 10 minutes per "
                "secret: lengthen rotation_period, stop runaway writers, then wait"
            )
        elif code in _BAD_CREDENTIALS:
            hint = "the AWS credentials keyrotd runs with are invalid or expired; renew them"
        elif "delet" in message.lower():
            hint = f"restore the secret: aws secretsmanager restore-secret --secret-id {name}"
        else:
            hint = "see the AWS message; the secret was left as it was"
        return StorageError(f"{what} failed: {code}: {message}", hint)

    def _botocore_failure(self, operation: str, name: str, error: BotoCoreError) -> StorageError:
        what = f"{operation} on AWS secret {name} ({self.region})"
        if isinstance(error, ConnectionError | HTTPClientError):
            return TemporaryStorageError(
                f"{what} failed after {self._retry.max_attempts} attempts: {error}",
                "AWS Secrets Manager is unreachable: check the network, storage.region and "
                "storage.endpoint_url; keyrotd retries later by itself",
            )
        if isinstance(error, _NO_CREDENTIALS):
            return StorageError(
                f"{what}: no usable AWS credentials ({error})",
                "give keyrotd credentials: an instance or task role, AWS_PROFILE, or "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            )
        return StorageError(f"{what} failed: {error}")

    def _kms(self) -> _Encryption:
        return {"KmsKeyId": self._kms_key_id} if self._kms_key_id else {}


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _tags(keyset: str) -> list[TagTypeDef]:
    return [{"Key": "managed-by", "Value": "keyrotd"}, {"Key": "keyrotd:keyset", "Value": keyset}]


def _silence_request_logging() -> None:
    """botocore logs request parameters, secret values included, at DEBUG: never let it."""
    for name in ("botocore", "boto3", "urllib3"):
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
