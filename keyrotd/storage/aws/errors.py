"""The AWS error table: which botocore failures are temporary, and the line each one reads as.

Throttling, 5xx answers, timeouts and connection failures are retried by botocore (standard
mode, :class:`RetryPolicy`) and then raise :class:`TemporaryStorageError`; everything else is a
:class:`StorageError` naming the secret and the fix (``LimitExceededException``, which botocore
retries as throttling, is a quota such as versions per secret: permanent). Only
:mod:`keyrotd.storage.aws` and its pieces import this module, so boto3 stays out of other runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, Literal

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from keyrotd.storage.interface import ConflictError, StorageError, TemporaryStorageError

__all__ = ["ACCESS_DENIED", "EXISTS", "NOT_FOUND", "REFUSED", "RetryPolicy", "SecretErrors", "code"]

NOT_FOUND: Final = "ResourceNotFoundException"
EXISTS: Final = "ResourceExistsException"
REFUSED: Final = frozenset({"InvalidParameterException", "InvalidRequestException", NOT_FOUND})
"""The codes of a refused ``UpdateSecretVersionStage``: perhaps a lost compare-and-swap."""
_THROTTLED: Final = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
_UNAVAILABLE: Final = frozenset(
    {"InternalServiceError", "InternalFailure", "ServiceUnavailable", "RequestTimeout"}
)
ACCESS_DENIED: Final = frozenset({"AccessDeniedException", "AccessDenied"})
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


def code(error: ClientError) -> str:
    """The AWS error code of ``error``, or ``""``."""
    return error.response.get("Error", {}).get("Code", "")


@dataclass(frozen=True)
class SecretErrors:
    """The keyrotd errors of calls on one region's secrets, each naming the secret and the fix."""

    region: str
    max_attempts: int
    """botocore's attempts per call, quoted when a temporary failure outlasted them."""
    kms_key_id: str

    @contextmanager
    def translated(self, operation: str, name: str) -> Iterator[None]:
        """Translate botocore errors of one call into keyrotd errors naming the secret."""
        try:
            yield
        except ClientError as error:
            raise self.client_failure(operation, name, error) from None
        except BotoCoreError as error:
            raise self.botocore_failure(operation, name, error) from None

    def conflict(self, name: str, expected: str | None, found: str | None) -> ConflictError:
        return ConflictError(
            f"AWS secret {name} ({self.region}) changed since it was read (expected version "
            f"{expected or 'none'}, found {found or 'none'})",
            "re-read the keyset and try again",
        )

    def client_failure(self, operation: str, name: str, error: ClientError) -> StorageError:
        error_code = code(error)
        message = error.response.get("Error", {}).get("Message", "") or str(error)
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        what = f"{operation} on AWS secret {name} ({self.region})"
        if error_code in _THROTTLED or error_code in _UNAVAILABLE or status >= 500:
            return TemporaryStorageError(
                f"{what} still failed after {self.max_attempts} attempts: "
                f"{error_code or status}: {message}",
                "AWS Secrets Manager is throttling or unavailable; keyrotd retries later by "
                "itself and keeps serving the keys it loaded",
            )
        hint = self._hint(operation, name, error_code, message)
        return StorageError(f"{what} failed: {error_code}: {message}", hint)

    def _hint(self, operation: str, name: str, error_code: str, message: str) -> str:
        """The fix for a permanent client error."""
        if error_code in ACCESS_DENIED:
            return (
                f"allow secretsmanager:{operation} on the secret for the IAM principal keyrotd "
                f"runs as (and kms:Decrypt/kms:GenerateDataKey on its KMS key); {_IAM_HINT}"
            )
        if error_code in _KMS_FAILURES or error_code.startswith("KMS"):
            return (
                f"check the KMS key of the secret ({self.kms_key_id or 'aws/secretsmanager'}): "
                f"it must be enabled and allow kms:Decrypt and kms:GenerateDataKey to keyrotd's "
                f"IAM principal; {_IAM_HINT}"
            )
        if error_code == "LimitExceededException":
            return (
                "a Secrets Manager quota was reached; for versions: every write is a version, "
                "kept at least 24 hours, and AWS advises at most one write per 10 minutes per "
                "secret: lengthen rotation_period, stop runaway writers, then wait"
            )
        if error_code in _BAD_CREDENTIALS:
            return "the AWS credentials keyrotd runs with are invalid or expired; renew them"
        if "delet" in message.lower():
            return f"restore the secret: aws secretsmanager restore-secret --secret-id {name}"
        return "see the AWS message; the secret was left as it was"

    def botocore_failure(self, operation: str, name: str, error: BotoCoreError) -> StorageError:
        what = f"{operation} on AWS secret {name} ({self.region})"
        if isinstance(error, ConnectionError | HTTPClientError):
            return TemporaryStorageError(
                f"{what} failed after {self.max_attempts} attempts: {error}",
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
