"""AWS KMS custody through a real daemon on moto's server (docs/issuers.md): RS256 and ES256
keysets serve their JWKS and sign through POST /sign (tokens PyJWT verifies); ``rotate --now
--force`` retires the old key, disabled and pending deletion in KMS, which ``status --json`` says
with its deletion date. An EdDSA keyset fails its first key creation naming the custody, the
algorithm and KMS's answer (moto has no Ed25519): no JWKS for it, the others served."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest

from keyrotd.cli import main
from keyrotd.custody import close_all
from tests.support.daemon import TOKEN, Daemon, make_daemon
from tests.support.http import Reply
from tests.support.moto import AWS_TEST_ENVIRONMENT, REGION, fake_aws_environment, moto_endpoint
from tests.support.waiting import wait_for

SLOW = {"rotation_period": "1h", "publish_ahead": "1h", "token_lifetime": "10m"}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with fake_aws_environment(), moto_endpoint() as url:
        yield url


def _sign(daemon: Daemon, keyset: str) -> Reply:
    return daemon.request(
        "POST",
        f"/keysets/{keyset}/sign",
        headers={"Authorization": f"Bearer {TOKEN}"},
        body=json.dumps({"claims": {"sub": "alice", "aud": "api"}}).encode(),
    )


def _verified(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    key = jwt.PyJWK(jwk, algorithm=header["alg"])
    claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=[header["alg"]], audience="api")
    return claims


def _cli(config: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    try:
        with fake_aws_environment():
            code = main(["--config", str(config), *argv])
    finally:
        close_all()
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.slow
def test_kms_keysets_through_a_daemon_on_moto(
    tmp_path: Path, moto_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = make_daemon(
        tmp_path / "d",
        keysets=[
            {"name": "rs", "algorithm": "RS256", "custody": "aws-kms", **SLOW},
            {"name": "es", "algorithm": "ES256", "custody": "aws-kms", **SLOW},
            {"name": "ed", "algorithm": "EdDSA", "custody": "aws-kms", **SLOW},
            {"name": "plain", "algorithm": "ES256", **SLOW},
        ],
        custody={"aws_kms_region": REGION, "aws_kms_endpoint_url": moto_url},
        env=AWS_TEST_ENVIRONMENT,
        server={"refresh_interval": "500ms"},
    )
    daemon.start(wait=False)
    try:
        daemon.wait_status("/keysets/plain/jwks.json", 200)
        for name in ("rs", "es"):
            jwks = json.loads(daemon.wait_status(f"/keysets/{name}/jwks.json", 200).body)
            reply = _sign(daemon, name)
            assert reply.status == 200, reply.body
            assert _verified(json.loads(reply.body)["token"], jwks)["sub"] == "alice"

        # EdDSA: moto has no ECC_NIST_EDWARDS25519; the keyset has no JWKS, the others do.
        assert daemon.get("/keysets/ed/jwks.json").status == 503
        assert daemon.get("/keysets/rs/jwks.json").status == 200
        failures = [
            line
            for line in daemon.log_text().splitlines()
            if "aws-kms" in line and "EdDSA" in line and "ECC_NIST_EDWARDS25519" in line
        ]
        assert failures, daemon.log_text()[-2000:]
        assert "ValidationException" in failures[0]  # KMS's answer

        # rotate --now --force: the old key retires; KMS disables it and schedules its deletion.
        config = daemon.workdir / "keyrotd.toml"
        before = json.loads(_cli(config, capsys, "status", "--json", "--keyset", "es"))
        [old] = [k for k in before["keysets"][0]["keys"] if k["state"] == "active"]
        assert old["private_key"] == "in custody"
        _cli(config, capsys, "rotate", "--keyset", "es", "--now", "--force")
        kms = boto3.client(
            "kms",
            region_name=REGION,
            endpoint_url=moto_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        metadata = kms.describe_key(KeyId=old["handle"])["KeyMetadata"]
        assert metadata["KeyState"] == "PendingDeletion"
        assert metadata["Enabled"] is False
        after = json.loads(_cli(config, capsys, "status", "--json", "--keyset", "es"))
        entries = [*after["keysets"][0]["keys"], *after["keysets"][0]["history"]]
        [retired] = [k for k in entries if k["kid"] == old["kid"]]
        assert retired["state"] == "retired"
        assert retired["private_key"] == "destroyed"
        due = datetime.fromisoformat(retired["deletion_due"].replace("Z", "+00:00"))
        assert abs((due - metadata["DeletionDate"].astimezone(UTC)).total_seconds()) < 1
        [active] = [k for k in entries if k["state"] == "active"]
        assert active["private_key"] == "in custody"

        # The daemon signs with the new key once it has read it; the token still verifies.
        def signed_by_new_key() -> str | None:
            reply = _sign(daemon, "es")
            assert reply.status == 200, reply.body
            answer = json.loads(reply.body)
            return str(answer["token"]) if answer["kid"] == active["kid"] else None

        token = wait_for(signed_by_new_key, 10, "signing with the new key")
        jwks = json.loads(daemon.get("/keysets/es/jwks.json").body)
        assert _verified(token, jwks)["sub"] == "alice"
    finally:
        daemon.stop()
