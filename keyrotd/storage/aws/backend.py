"""``storage.type = "aws"``: its ``[storage]`` keys and its ``Backend``, without importing boto3."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict

from keyrotd.config.fields import EndpointUrl, Region, SecretPrefix
from keyrotd.storage.aws import MAX_DOCUMENT_SIZE
from keyrotd.storage.registry import Backend

if TYPE_CHECKING:
    from keyrotd.storage.interface import Storage

__all__ = ["BACKEND", "AwsSettings", "open_aws"]


class AwsSettings(BaseModel):
    """The AWS Secrets Manager store's settings (`keyrotd check-config --example`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret_prefix: SecretPrefix = "keyrotd/"  # noqa: S105 - a name prefix, not a secret
    region: Region = ""
    endpoint_url: EndpointUrl = ""
    kms_key_id: str = ""


def open_aws(settings: AwsSettings) -> Storage:
    """The store (boto3 loads now); refuses without a region (settings, environment or AWS
    config files)."""
    from keyrotd.storage.aws.storage import AwsStorage

    return AwsStorage(
        secret_prefix=settings.secret_prefix,
        region=settings.region,
        endpoint_url=settings.endpoint_url,
        kms_key_id=settings.kms_key_id,
    )


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
