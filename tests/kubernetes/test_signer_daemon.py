"""keyrotd run as the Kubernetes API server's signer: a client that keeps keys as the API server's
key cache does signs service-account tokens continuously through two rotations and more, and
every token verifies with the keys it held when it was signed: 0 rejected."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.kubernetes.apiserver import ApiServerKeyCache
from tests.support.daemon import make_daemon
from tests.support.softhsm import SoftHsm

pytest.importorskip("grpc")

FAST = {
    "rotation_period": "5s",
    "publish_ahead": "4s",
    "token_lifetime": "10m",
    "clock_skew": "0s",
    "verifier_cache": "0s",
}


def _drive(socket_path: Path, seconds: float) -> ApiServerKeyCache:
    cache = ApiServerKeyCache(str(socket_path))
    assert cache.metadata.max_token_expiration_seconds == 600
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        cache.sign_and_verify({"sub": "system:serviceaccount:default:app", "aud": ["api"]})
        time.sleep(0.05)
    cache.close()
    return cache


@pytest.mark.slow
@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_the_api_server_holds_every_key_before_it_signs(tmp_path: Path, alg: str) -> None:
    socket_path = tmp_path / "run" / "signer.sock"
    socket_path.parent.mkdir()
    daemon = make_daemon(
        tmp_path / "d",
        keysets=[{"name": "sa", "algorithm": alg, **FAST}],
        server={"jwks_max_age": "1s", "refresh_interval": "1s"},
    )
    config = daemon.config.read_text() + f'\n[kubernetes]\nsigner_socket = "{socket_path}"\n'
    daemon.config.write_text(config)
    daemon.start()
    try:
        assert oct(socket_path.stat().st_mode & 0o777) == "0o600"
        cache = _drive(socket_path, 13)
    finally:
        daemon.stop()
    tally = cache.tally
    assert len(tally.kids) >= 3, f"fewer than two rotations: {tally}"
    assert tally.rejected == [], tally
    assert tally.verified == tally.signed > 100


@pytest.mark.slow
def test_the_signer_on_a_pkcs11_keyset(tmp_path: Path, softhsm: SoftHsm) -> None:
    socket_path = tmp_path / "signer.sock"
    daemon = make_daemon(
        tmp_path / "d",
        keysets=[{"name": "sa", "algorithm": "ES256", "custody": "pkcs11", **FAST}],
        server={"jwks_max_age": "1s", "refresh_interval": "1s"},
        custody=softhsm.custody(tmp_path),
        env={"SOFTHSM2_CONF": str(softhsm.conf)},
    )
    config = daemon.config.read_text() + f'\n[kubernetes]\nsigner_socket = "{socket_path}"\n'
    daemon.config.write_text(config)
    daemon.start()
    try:
        cache = _drive(socket_path, 13)
    finally:
        daemon.stop()
    assert len(cache.tally.kids) >= 3
    assert cache.tally.rejected == []
    assert cache.tally.verified == cache.tally.signed > 100
