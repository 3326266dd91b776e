"""``storage.type = "aws"``: its ``[storage]`` keys and its limit, without importing boto3."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict

from keyrotd.config.fields import EndpointUrl, Region, SecretPrefix

MAX_DOCUMENT_SIZE: Final = 65536
"""Secrets Manager's limit on a secret value, in bytes."""


class AwsSettings(BaseModel):
    """The AWS Secrets Manager store's settings (`keyrotd check-config --example`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret_prefix: SecretPrefix = "keyrotd/"  # noqa: S105 - a name prefix, not a secret
    region: Region = ""
    endpoint_url: EndpointUrl = ""
    kms_key_id: str = ""
