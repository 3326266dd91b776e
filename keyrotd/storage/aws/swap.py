"""The AWS compare-and-swap: create a keyset's secret, or move ``AWSCURRENT`` onto a new version.

- Swap: ``PutSecretValue`` stores the document as a new version carrying only the staging label
  ``KEYROTD_PENDING``, then ``UpdateSecretVersionStage`` moves ``AWSCURRENT`` onto it with
  ``RemoveFromVersionId`` set to the version that was read. Secrets Manager refuses the move
  when ``AWSCURRENT`` is no longer there: the loser gets :class:`ConflictError`. A refused move
  is checked with one ``DescribeSecret``, so that a move retried after a lost response (it had
  succeeded) is not taken for a conflict.
- Create: ``CreateSecret``; if the secret exists, a ``PutSecretValue`` wins only if it is the
  secret's first version (Secrets Manager then makes it current), otherwise it is a conflict.

Labels do not pile up: ``KEYROTD_PENDING`` is one label, which Secrets Manager moves to each new
version, so at most three versions are labelled (current, previous, pending); versions left
without a label are deprecated and removed by Secrets Manager itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypedDict

from botocore.exceptions import ClientError

from keyrotd.storage.aws.errors import EXISTS, NOT_FOUND, REFUSED, SecretErrors, code

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager.client import SecretsManagerClient
    from mypy_boto3_secretsmanager.type_defs import PutSecretValueResponseTypeDef, TagTypeDef

__all__ = ["CURRENT", "STAGING_LABEL", "SecretValue", "SecretWrites"]

STAGING_LABEL: Final = "KEYROTD_PENDING"
CURRENT: Final = "AWSCURRENT"
PREVIOUS: Final = "AWSPREVIOUS"


class SecretValue(TypedDict, total=False):
    """The value of a secret version: exactly one of the two."""

    SecretString: str
    SecretBinary: bytes


class _Encryption(TypedDict, total=False):
    KmsKeyId: str


@dataclass(frozen=True)
class SecretWrites:
    """The two conditional writes of a keyset's secret; each returns the new ``VersionId``."""

    client: SecretsManagerClient
    errors: SecretErrors
    kms_key_id: str

    def create(self, keyset: str, name: str, value: SecretValue, token: str) -> str:
        """Create the secret, or fill it if it exists without a value; else a conflict."""
        with self.errors.translated("CreateSecret", name):
            try:
                created = self.client.create_secret(
                    Name=name,
                    ClientRequestToken=token,
                    Description=f"keyrotd keyset {keyset}: signing keys managed by keyrotd",
                    Tags=_tags(keyset),
                    **self._kms(),
                    **value,
                )
                return created["VersionId"]
            except ClientError as error:
                if code(error) != EXISTS:
                    raise
        # The secret exists. Fill it only if it has no value yet (created beforehand):
        # Secrets Manager makes the first version of a secret current, and only the first.
        with self.errors.translated("PutSecretValue", name):
            put = self._put_pending(name, value, token)
        if CURRENT in put.get("VersionStages", []):
            return put["VersionId"]
        raise self.errors.conflict(name, None, "a stored document")

    def swap(self, name: str, value: SecretValue, token: str, expected: str) -> str:
        """Store ``value`` as a pending version, then move ``AWSCURRENT`` from ``expected``."""
        with self.errors.translated("PutSecretValue", name):
            try:
                put = self._put_pending(name, value, token)
            except ClientError as error:
                if code(error) == NOT_FOUND:
                    raise self.errors.conflict(name, expected, None) from None
                raise
        new = put["VersionId"]
        refused: ClientError | None = None
        with self.errors.translated("UpdateSecretVersionStage", name):
            try:
                self.client.update_secret_version_stage(
                    SecretId=name,
                    VersionStage=CURRENT,
                    MoveToVersionId=new,
                    RemoveFromVersionId=expected,
                )
            except ClientError as error:
                if code(error) not in REFUSED:
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
        with self.errors.translated("DescribeSecret", name):
            try:
                stages = self.client.describe_secret(SecretId=name).get("VersionIdsToStages", {})
            except ClientError as describe_error:
                if code(describe_error) == NOT_FOUND:
                    raise self.errors.conflict(name, expected, None) from None
                raise
        if {CURRENT, PREVIOUS} & set(stages.get(new, [])):
            return
        current = next((v for v, labels in stages.items() if CURRENT in labels), None)
        if current != expected:
            raise self.errors.conflict(name, expected, current)
        raise self.errors.client_failure("UpdateSecretVersionStage", name, error)

    def _put_pending(
        self, name: str, value: SecretValue, token: str
    ) -> PutSecretValueResponseTypeDef:
        """A new version of the secret, labelled only ``KEYROTD_PENDING``."""
        return self.client.put_secret_value(
            SecretId=name, ClientRequestToken=token, VersionStages=[STAGING_LABEL], **value
        )

    def _kms(self) -> _Encryption:
        return {"KmsKeyId": self.kms_key_id} if self.kms_key_id else {}


def _tags(keyset: str) -> list[TagTypeDef]:
    return [{"Key": "managed-by", "Value": "keyrotd"}, {"Key": "keyrotd:keyset", "Value": keyset}]
