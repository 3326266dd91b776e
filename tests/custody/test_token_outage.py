"""A PKCS#11 token that goes away and comes back (docs/issuers.md): a temporary error while it is
gone, the JWKS served throughout, signing again once it is back. SoftHSM2's token going away is
its token directory moved aside; coming back, moved back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jwt
import pytest

from keyrotd.custody.interface import CustodyUnavailableError
from keyrotd.custody.pkcs11 import Pkcs11Custody
from tests.support.clock import T0_DECEMBER as T0
from tests.support.daemon import TOKEN, Daemon, make_daemon
from tests.support.http import Reply
from tests.support.softhsm import SoftHsm
from tests.support.waiting import wait_for


def _tokens(softhsm: SoftHsm) -> Path:
    return softhsm.conf.parent / "tokens"


def test_the_custody_signs_again_once_the_token_is_back(softhsm: SoftHsm) -> None:
    custody = Pkcs11Custody(softhsm.module, softhsm.label, softhsm.pin)
    try:
        key = custody.create("api", "ES256", 2048, T0)
        assert len(custody.sign(key.handle, "ES256", b"a.b")) == 64
        tokens, aside = _tokens(softhsm), _tokens(softhsm).with_name("aside")
        os.rename(tokens, aside)
        with pytest.raises(CustodyUnavailableError) as gone:
            custody.sign(key.handle, "ES256", b"a.b")
        assert gone.value.temporary
        assert softhsm.pin not in str(gone.value)
        os.rename(aside, tokens)
        assert len(custody.sign(key.handle, "ES256", b"a.b")) == 64
    finally:
        custody.close()


def _sign(daemon: Daemon) -> Reply:
    return daemon.request(
        "POST",
        "/keysets/api/sign",
        headers={"Authorization": f"Bearer {TOKEN}"},
        body=json.dumps({"claims": {"sub": "alice"}}).encode(),
    )


@pytest.mark.slow
def test_the_daemon_serves_the_jwks_and_answers_503_while_the_token_is_gone(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    daemon = make_daemon(
        tmp_path / "d",
        keysets=[
            {
                "name": "api",
                "algorithm": "ES256",
                "custody": "pkcs11",
                "rotation_period": "1h",
                "publish_ahead": "1h",
            }
        ],
        custody=softhsm.custody(tmp_path),
        env={"SOFTHSM2_CONF": str(softhsm.conf)},
    )
    daemon.start()
    tokens, aside = _tokens(softhsm), _tokens(softhsm).with_name("aside")
    try:
        jwks = json.loads(daemon.get("/keysets/api/jwks.json").body)
        assert _sign(daemon).status == 200
        os.rename(tokens, aside)
        for _ in range(3):
            refused = _sign(daemon)
            assert refused.status == 503, refused.body
            assert "pkcs11" in json.loads(refused.body)["error"]
            served = daemon.get("/keysets/api/jwks.json")
            assert served.status == 200 and json.loads(served.body) == jwks
        os.rename(aside, tokens)
        signed = wait_for(
            lambda: (reply := _sign(daemon)).status == 200 and reply, 10, "signing again"
        )
        token = json.loads(signed.body)["token"]
        public = jwt.PyJWK(jwks["keys"][0], algorithm="ES256")
        assert jwt.decode(token, public.key, algorithms=["ES256"])["sub"] == "alice"
    finally:
        if aside.exists():
            os.rename(aside, tokens)
        daemon.stop()
    assert softhsm.pin not in daemon.log_text()
