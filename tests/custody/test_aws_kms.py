"""AWS KMS custody against moto's server through a real boto3 client.

moto signs PSS with the maximum salt length (a PS* signature is then no valid JWS) and has no
Ed25519 key spec: RS* and ES* are tested end to end, PS* and EdDSA for the clear refusal.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import boto3
import jwt
import pytest

from keyrotd.custody.aws_kms import TAG_CREATED, TAG_KEYSET, TAG_KID, KmsCustody
from keyrotd.custody.interface import CustodyError, CustodyUnavailableError
from keyrotd.keys import PRIVATE_MEMBERS, thumbprint
from tests.support.clock import T0_DECEMBER as T0
from tests.support.moto import REGION, fake_aws_environment, moto_endpoint


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with fake_aws_environment(), moto_endpoint() as url:
        yield url


@pytest.fixture
def custody(moto_url: str) -> Iterator[KmsCustody]:
    with fake_aws_environment():
        custody = KmsCustody(REGION, moto_url)
        yield custody
        custody.close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(custody: KmsCustody, handle: str, kid: str, alg: str, claims: dict[str, object]) -> str:
    header = _b64(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = custody.sign(handle, alg, f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(signature)}"


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"])
def test_kms_keys_sign_tokens_pyjwt_verifies(custody: KmsCustody, moto_url: str, alg: str) -> None:
    key = custody.create("api", alg, 2048, T0)
    assert key.kid == thumbprint(key.public_jwk)
    assert not PRIVATE_MEMBERS & set(key.public_jwk)
    public = jwt.PyJWK(dict(key.public_jwk), algorithm=alg)
    token = _token(custody, key.handle, key.kid, alg, {"sub": "alice", "aud": "api"})
    assert jwt.decode(token, public.key, algorithms=[alg], audience="api")["sub"] == "alice"
    # Signing input above 4,096 bytes goes as its digest, MessageType=DIGEST (moto ignores the
    # type and signs the digest as a message, so the answer is checked on the request only).
    sent: list[dict[str, Any]] = []
    custody._client.meta.events.register(
        "provide-client-params.kms.Sign", lambda params, **_: sent.append(dict(params))
    )
    _token(custody, key.handle, key.kid, alg, {"aud": "api", "blob": "x" * 5000})
    assert [(p["MessageType"], len(p["Message"])) for p in sent] == [("DIGEST", int(alg[2:]) // 8)]
    kms = boto3.client("kms", region_name=REGION, endpoint_url=moto_url)
    metadata = kms.describe_key(KeyId=key.handle)["KeyMetadata"]
    assert metadata["KeyUsage"] == "SIGN_VERIFY"
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key.handle)["Tags"]}
    assert tags == {TAG_KEYSET: "api", TAG_KID: key.kid, TAG_CREATED: str(int(T0.timestamp()))}


def test_destroy_disables_at_once_and_schedules_the_shortest_deletion(
    custody: KmsCustody, moto_url: str
) -> None:
    keyset = "destroy-test"
    kept = custody.create(keyset, "ES256", 2048, T0)
    gone = custody.create(keyset, "ES256", 2048, T0)
    custody.destroy(gone.handle)
    custody.destroy(gone.handle)  # idempotent
    kms = boto3.client("kms", region_name=REGION, endpoint_url=moto_url)
    metadata = kms.describe_key(KeyId=gone.handle)["KeyMetadata"]
    assert metadata["KeyState"] == "PendingDeletion"
    assert custody.deletion_date(gone.handle) is not None
    assert [k.kid for k in custody.held(keyset)] == [kept.kid]


def test_held_never_lists_keys_keyrotd_did_not_create(custody: KmsCustody, moto_url: str) -> None:
    kms = boto3.client("kms", region_name=REGION, endpoint_url=moto_url)
    kms.create_key(
        KeyUsage="SIGN_VERIFY",
        KeySpec="ECC_NIST_P256",
        Tags=[{"TagKey": TAG_KEYSET, "TagValue": "foreign"}],
    )
    mine = custody.create("foreign", "ES256", 2048, T0)
    assert [(k.kid, k.created_at) for k in custody.held("foreign")] == [(mine.kid, T0)]


def test_a_key_spec_the_kms_refuses_is_a_clear_error(custody: KmsCustody) -> None:
    with pytest.raises(CustodyError, match=r"aws-kms custody .*EdDSA.*ECC_NIST_EDWARDS25519"):
        custody.create("api", "EdDSA", 2048, T0)


def test_an_unreachable_kms_is_a_temporary_error() -> None:
    with fake_aws_environment():
        custody = KmsCustody(REGION, "http://127.0.0.1:9")
        with pytest.raises(CustodyUnavailableError) as raised:
            custody.create("api", "ES256", 2048, T0)
    assert raised.value.temporary
