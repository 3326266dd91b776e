"""AWS KMS custody: asymmetric KMS keys (``KeyUsage`` SIGN_VERIFY) that never leave KMS.

Each key is created with the key spec of its algorithm and tagged ``keyrotd:keyset`` (the keyset),
``keyrotd:created`` (unix seconds: the creation time keyrotd reasons about) and, once its public
key is read, ``keyrotd:kid`` (the RFC 7638 thumbprint). Its handle is the key's ARN. Signatures
come from ``Sign``: signing input up to 4,096 bytes as ``MessageType=RAW``, longer as ``DIGEST``
(EdDSA takes RAW only); ECDSA answers are DER and become JOSE's r‖s here. Destroying a key
disables it at once and schedules its deletion with the shortest window KMS allows (7 days).
Throttling, 5xx and unreachable endpoints are temporary errors (botocore retries them first).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey, OKPKey, RSAKey

from keyrotd.custody.interface import (
    CustodyError,
    CustodyKey,
    CustodyKeyGoneError,
    CustodyUnavailableError,
)
from keyrotd.keys import PRIVATE_MEMBERS, thumbprint
from keyrotd.model import Jwk

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

RAW_LIMIT: Final = 4096
"""The largest message KMS signs as ``MessageType=RAW``."""
DELETION_WINDOW_DAYS: Final = 7
"""The shortest ``PendingWindowInDays`` KMS accepts."""
TAG_KEYSET: Final = "keyrotd:keyset"
TAG_KID: Final = "keyrotd:kid"
TAG_CREATED: Final = "keyrotd:created"

_KEY_SPECS: Final = {
    "ES256": "ECC_NIST_P256",
    "ES384": "ECC_NIST_P384",
    "ES512": "ECC_NIST_P521",
    "EdDSA": "ECC_NIST_EDWARDS25519",
}
_SIGNING: Final = {
    "RS": "RSASSA_PKCS1_V1_5_SHA_{bits}",
    "PS": "RSASSA_PSS_SHA_{bits}",
    "ES": "ECDSA_SHA_{bits}",
}
_HASHES: Final = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
_EC_SIZES: Final = {"256": 32, "384": 48, "512": 66}
_TEMPORARY_CODES: Final = frozenset(
    {
        "ThrottlingException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "KeyUnavailableException",
        "InternalFailure",
        "ServiceUnavailable",
    }
)


class KmsCustody:
    """Keys in AWS KMS; see the module docstring."""

    name = "aws-kms"

    def __init__(self, region: str = "", endpoint_url: str = "") -> None:
        import boto3  # an optional role: loaded only when a keyset has aws-kms custody
        from botocore.config import Config

        self._client: Any = boto3.client(
            "kms",
            region_name=region or None,
            endpoint_url=endpoint_url or None,
            config=Config(
                retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5, read_timeout=10
            ),
        )
        if not self._client.meta.region_name:
            raise CustodyError(
                "no AWS region is set for the aws-kms custody",
                "set custody.aws_kms_region (KEYROTD_CUSTODY__AWS_KMS_REGION) or AWS_REGION",
            )
        self.region: str = self._client.meta.region_name

    def create(self, keyset: str, alg: str, rsa_key_size: int, now: datetime) -> CustodyKey:
        spec = f"RSA_{rsa_key_size}" if alg.startswith(("RS", "PS")) else _KEY_SPECS[alg]
        created = int(now.timestamp())
        answer = self._call(
            f"creating a {alg} key ({spec})",
            "create_key",
            KeyUsage="SIGN_VERIFY",
            KeySpec=spec,
            Description=f"keyrotd signing key of keyset {keyset}",
            Tags=[
                {"TagKey": TAG_KEYSET, "TagValue": keyset},
                {"TagKey": TAG_CREATED, "TagValue": str(created)},
            ],
        )
        arn = answer["KeyMetadata"]["Arn"]
        try:
            public = self._call("reading a public key", "get_public_key", KeyId=arn)
            jwk = _public_jwk(public["PublicKey"], alg)
            kid = thumbprint(jwk)
            self._call(
                "tagging a key",
                "tag_resource",
                KeyId=arn,
                Tags=[{"TagKey": TAG_KID, "TagValue": kid}],
            )
        except CustodyError:
            self.destroy(arn)  # best effort; else an orphan the sweep destroys
            raise
        return CustodyKey(
            kid=kid,
            alg=alg,
            public_jwk={**jwk, "kid": kid, "alg": alg, "use": "sig"},
            handle=arn,
            created_at=datetime.fromtimestamp(created, UTC),
        )

    def sign(self, handle: str, alg: str, signing_input: bytes) -> bytes:
        if alg == "EdDSA":
            if len(signing_input) > RAW_LIMIT:
                raise CustodyError(
                    f"aws-kms custody signs EdDSA input of at most {RAW_LIMIT} bytes, "
                    f"not {len(signing_input)}",
                    "send fewer or shorter claims",
                )
            algorithm, message, kind = "ED25519_SHA_512", signing_input, "RAW"
        else:
            bits = alg[2:]
            algorithm = _SIGNING[alg[:2]].format(bits=bits)
            if len(signing_input) <= RAW_LIMIT:
                message, kind = signing_input, "RAW"
            else:
                message, kind = _HASHES[bits](signing_input).digest(), "DIGEST"
        answer = self._call(
            "signing",
            "sign",
            KeyId=handle,
            Message=message,
            MessageType=kind,
            SigningAlgorithm=algorithm,
        )
        signature = bytes(answer["Signature"])
        if alg.startswith("ES"):
            r, s = decode_dss_signature(signature)
            size = _EC_SIZES[alg[2:]]
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return signature

    def destroy(self, handle: str) -> None:
        try:
            metadata = self._call("describing a key", "describe_key", KeyId=handle)["KeyMetadata"]
            if metadata.get("KeyState") in ("PendingDeletion", "PendingReplicaDeletion"):
                return  # destroyed already (by this writer before a crash, or another one)
            # The key id, not the ARN: KMS takes either, moto's DisableKey only the id.
            key_id = metadata["KeyId"]
            self._call("disabling a key", "disable_key", KeyId=key_id)
            self._call(
                "scheduling a key's deletion",
                "schedule_key_deletion",
                KeyId=key_id,
                PendingWindowInDays=DELETION_WINDOW_DAYS,
            )
        except CustodyKeyGoneError:
            return  # already deleted or pending deletion: nothing left to destroy

    def deletion_date(self, handle: str) -> datetime | None:
        """When KMS deletes the key (``keyrotd status`` shows it), None if not scheduled."""
        metadata = self._call("describing a key", "describe_key", KeyId=handle)["KeyMetadata"]
        date = metadata.get("DeletionDate")
        return date.astimezone(UTC) if isinstance(date, datetime) else None

    def held(self, keyset: str) -> list[CustodyKey]:
        """Every enabled key tagged for ``keyset`` (those pending deletion are destroyed)."""
        keys = []
        pages = self._client.get_paginator("list_keys").paginate()
        try:
            for page in pages:
                for entry in page["Keys"]:
                    found = self._tagged(entry["KeyArn"], keyset)
                    if found is not None:
                        keys.append(found)
        except Exception as error:
            raise self._translate("listing keys", error) from error
        return keys

    def _tagged(self, arn: str, keyset: str) -> CustodyKey | None:
        try:
            tags = self._call("reading tags", "list_resource_tags", KeyId=arn)["Tags"]
        except CustodyKeyGoneError:
            return None
        except CustodyError as error:
            if "AccessDenied" in error.message:
                return None  # a key of the account keyrotd may not look at: not ours
            raise
        values = {t["TagKey"]: t["TagValue"] for t in tags}
        created = values.get(TAG_CREATED, "")
        if values.get(TAG_KEYSET) != keyset or not created.isdigit():
            return None
        state = self._call("describing a key", "describe_key", KeyId=arn)["KeyMetadata"]
        if state.get("KeyState") in ("PendingDeletion", "PendingReplicaDeletion", "Disabled"):
            return None
        return CustodyKey(
            kid=values.get(TAG_KID, ""),
            alg="",
            public_jwk={},
            handle=arn,
            created_at=datetime.fromtimestamp(int(created), UTC),
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, what: str, operation: str, **arguments: Any) -> Any:
        try:
            return getattr(self._client, operation)(**arguments)
        except Exception as error:
            raise self._translate(what, error) from error

    def _translate(self, what: str, error: Exception) -> CustodyError:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(error, ClientError):
            return self._client_error(what, error)
        if isinstance(error, BotoCoreError):
            return CustodyUnavailableError(
                f"aws-kms custody ({self.region}): {what} failed: {type(error).__name__}",
                "KMS is unreachable; keyrotd retries",
            )
        raise error

    def _client_error(self, what: str, error: ClientError) -> CustodyError:
        code = str(error.response.get("Error", {}).get("Code", ""))
        # One short line: an error page's HTML or a multi-line message never reaches a log.
        message = " ".join(str(error.response.get("Error", {}).get("Message", "")).split())[:200]
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        text = f"aws-kms custody ({self.region}): {what} failed: {code}: {message}"
        if code in ("NotFoundException", "KMSInvalidStateException"):
            return CustodyKeyGoneError(text, "another writer destroyed it: read storage again")
        if code in _TEMPORARY_CODES or status >= 500:
            return CustodyUnavailableError(text, "keyrotd retries")
        return CustodyError(text, "check the IAM policy and the key spec (docs/issuers.md)")


def _public_jwk(der: bytes, alg: str) -> Jwk:
    key = serialization.load_der_public_key(der)
    if isinstance(key, rsa.RSAPublicKey):
        jwk = RSAKey.import_key(key).as_dict(private=False)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        jwk = ECKey.import_key(key).as_dict(private=False)
    elif isinstance(key, ed25519.Ed25519PublicKey):
        jwk = OKPKey.import_key(key).as_dict(private=False)
    else:
        raise CustodyError(
            f"aws-kms custody: KMS answered a public key keyrotd cannot use for {alg}"
        )
    return {k: str(v) for k, v in jwk.items() if k not in PRIVATE_MEMBERS}
