"""Signing with keys that never leave a SoftHSM2 token: the daemon's POST /sign for all ten
algorithms, through rotations with tokens signed continuously (0 rejected), keyrotd sign,
Issuer.from_config, and Issuer.from_url without remote=True refused naming it."""

from __future__ import annotations

import contextlib
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest

from keyrotd.cli import main
from keyrotd.client import Issuer
from keyrotd.config import load_settings
from keyrotd.custody import close_all, open_custody
from keyrotd.errors import KeyrotdError
from keyrotd.keys import PRIVATE_MEMBERS
from keyrotd.model import ALGORITHMS
from keyrotd.storage import open_storage
from tests.support.daemon import Daemon, make_daemon
from tests.support.keysets import open_writer
from tests.support.softhsm import SoftHsm

SLOW = {"rotation_period": "1h", "publish_ahead": "1h", "token_lifetime": "10m"}
FAST = {
    "rotation_period": "3s",
    "publish_ahead": "2500ms",
    "token_lifetime": "5s",
    "clock_skew": "0s",
    "verifier_cache": "0s",
}


def _daemon(tmp_path: Path, softhsm: SoftHsm, keysets: list[dict[str, object]]) -> Daemon:
    return make_daemon(
        tmp_path / "d",
        keysets=keysets,
        custody=softhsm.custody(tmp_path),
        env={"SOFTHSM2_CONF": str(softhsm.conf)},
        server={"refresh_interval": "500ms", "jwks_max_age": "1s"},
    )


def _verify(token: str, jwks: dict[str, Any], audience: str = "api") -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    key = jwt.PyJWK(jwk, algorithm=header["alg"])
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=[header["alg"]], audience=audience
    )
    return claims


@pytest.mark.slow
def test_post_sign_for_all_ten_algorithms(tmp_path: Path, softhsm: SoftHsm) -> None:
    keysets = [
        {"name": alg.lower(), "algorithm": alg, "custody": "pkcs11", **SLOW} for alg in ALGORITHMS
    ]
    daemon = _daemon(tmp_path, softhsm, keysets)
    daemon.start()
    try:
        for alg in ALGORITHMS:
            name = alg.lower()
            jwks = json.loads(daemon.get(f"/keysets/{name}/jwks.json").body)
            assert all(not PRIVATE_MEMBERS & set(k) for k in jwks["keys"])
            reply = daemon.request(
                "POST",
                f"/keysets/{name}/sign",
                headers={"Authorization": "Bearer " + daemon_token(daemon)},
                body=json.dumps({"claims": {"sub": "alice", "aud": "api"}}).encode(),
            )
            assert reply.status == 200, reply.body
            answer = json.loads(reply.body)
            claims = _verify(answer["token"], jwks)
            assert claims["sub"] == "alice"
            assert answer["kid"] == jwks["keys"][0]["kid"]
    finally:
        daemon.stop()
    assert softhsm.pin not in daemon.log_text()


def daemon_token(daemon: Daemon) -> str:
    return (daemon.workdir / "admin.token").read_text().strip()


def test_concurrent_signatures_in_the_token_each_answer_their_own_request(
    tmp_path: Path, softhsm: SoftHsm
) -> None:
    """The token's one thread signs the requests waiting in turn and hands the answers back in
    batches (keyrotd/daemon/custody_calls.py): every request gets its own claims signed."""
    daemon = _daemon(
        tmp_path, softhsm, [{"name": "api", "algorithm": "ES256", "custody": "pkcs11", **SLOW}]
    )
    daemon.start()
    token = daemon_token(daemon)

    def sign_as(subject: str) -> tuple[str, int, bytes]:
        reply = daemon.request(
            "POST",
            "/keysets/api/sign",
            headers={"Authorization": f"Bearer {token}"},
            body=json.dumps({"claims": {"sub": subject, "aud": "api"}}).encode(),
        )
        return subject, reply.status, reply.body

    try:
        jwks = json.loads(daemon.get("/keysets/api/jwks.json").body)
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(sign_as, [f"caller-{n}" for n in range(160)]))
    finally:
        daemon.stop()
    for subject, status, body in answers:
        assert status == 200, body
        assert _verify(json.loads(body)["token"], jwks)["sub"] == subject


@pytest.mark.slow
def test_tokens_signed_continuously_through_rotations_are_never_rejected(
    tmp_path: Path, softhsm: SoftHsm
) -> None:
    daemon = _daemon(
        tmp_path, softhsm, [{"name": "api", "algorithm": "ES256", "custody": "pkcs11", **FAST}]
    )
    daemon.start()
    token = daemon_token(daemon)
    held: dict[str, Any] = {"keys": []}
    fetched_at = 0.0
    kids, rejected, signed = set(), [], 0
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if time.monotonic() - fetched_at >= 1:  # a verifier honouring max-age (1s)
                held = json.loads(daemon.get("/keysets/api/jwks.json").body)
                fetched_at = time.monotonic()
            reply = daemon.request(
                "POST",
                "/keysets/api/sign",
                headers={"Authorization": f"Bearer {token}"},
                body=b'{"claims": {"aud": "api"}}',
            )
            assert reply.status == 200, reply.body
            minted = json.loads(reply.body)["token"]
            kid = jwt.get_unverified_header(minted)["kid"]
            kids.add(kid)
            signed += 1
            try:
                _verify(minted, held)
            except StopIteration:
                rejected.append(kid)
            time.sleep(0.02)
    finally:
        daemon.stop()
    assert len(kids) >= 3, "fewer than two rotations"
    assert rejected == []
    assert signed > 100
    # The daemon has stopped (a stop finishes the write in progress): retired keys' private
    # objects are destroyed, and the token holds exactly the keys the document signs or will.
    settings = load_settings(daemon.config, {"SOFTHSM2_CONF": str(softhsm.conf)})
    stored = open_writer(open_storage(settings.storage), settings.keyset("api")).load().keyset
    holding = {k.kid for k in stored.keys if k.holds_private}
    in_token = {k.kid for k in open_custody(settings, "pkcs11").held("api")}
    close_all()
    assert in_token == holding
    assert not (kids - holding) & in_token


def _config(tmp_path: Path, softhsm: SoftHsm) -> Path:
    daemon = _daemon(
        tmp_path,
        softhsm,
        [
            {
                "name": "api",
                "algorithm": "ES384",
                "custody": "pkcs11",
                **SLOW,
                "issuer": "https://auth.example.com",
            }
        ],
    )
    return daemon.config


def test_keyrotd_sign_and_issuer_from_config_sign_in_the_token(
    tmp_path: Path, softhsm: SoftHsm
) -> None:
    config = _config(tmp_path, softhsm)
    assert main(["--config", str(config), "rotate"]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--config", str(config), "sign", '{"sub": "cli", "aud": "api"}']) == 0
    with contextlib.redirect_stdout(io.StringIO()) as jwks_out:
        assert main(["--config", str(config), "jwks"]) == 0
    jwks = json.loads(jwks_out.getvalue())
    claims = _verify(out.getvalue().strip(), jwks)
    assert (claims["sub"], claims["iss"]) == ("cli", "https://auth.example.com")
    issuer = Issuer.from_config(config, keyset="api")
    try:
        claims = _verify(issuer.sign({"sub": "lib", "aud": "api"}, lifetime=60), jwks)
        assert claims["exp"] - claims["iat"] == 60
        with pytest.raises(KeyrotdError, match="pkcs11 custody"):
            issuer.signing_key()
    finally:
        issuer.close()
    close_all()


@pytest.mark.slow
def test_issuer_from_url_without_remote_names_remote_true(tmp_path: Path, softhsm: SoftHsm) -> None:
    daemon = _daemon(
        tmp_path, softhsm, [{"name": "api", "algorithm": "ES256", "custody": "pkcs11", **SLOW}]
    )
    daemon.start()
    try:
        with pytest.raises(KeyrotdError) as raised:
            Issuer.from_url(daemon.url, keyset="api", token=daemon_token(daemon))
        assert "remote=True" in str(raised.value)
        remote = Issuer.from_url(daemon.url, keyset="api", token=daemon_token(daemon), remote=True)
        jwks = json.loads(daemon.get("/keysets/api/jwks.json").body)
        assert _verify(remote.sign({"aud": "api"}), jwks)["aud"] == "api"
    finally:
        daemon.stop()
