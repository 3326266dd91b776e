"""The guarantees unchanged on a keyset in PKCS#11 custody (docs/issuers.md): CLI processes racing
on one keyset in a real SoftHSM2 token never make two active keys and lose no key, and after the
10-minute grace the token holds exactly the keys the document names (G1, G6); a running daemon
holds a successor until the observed URL serves it, signing with the active key meanwhile
(propagation gating, docs/guarantees.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from keyrotd.cli import main
from keyrotd.config import load_settings
from keyrotd.custody import close_all, open_custody
from keyrotd.storage import open_storage
from keyrotd.times import utc_now
from tests.daemon.test_observe import StuckCache
from tests.faults.helpers import check_document
from tests.support.daemon import TOKEN, Daemon, make_daemon
from tests.support.keysets import open_writer
from tests.support.softhsm import SoftHsm
from tests.support.waiting import wait_for


@pytest.fixture
def config(softhsm: SoftHsm, tmp_path: Path) -> Iterator[Path]:
    config = tmp_path / "keyrotd.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "store"}"\n'
        + softhsm.custody_toml(tmp_path)
        + '[[keysets]]\nname = "default"\nalgorithm = "ES256"\ncustody = "pkcs11"\n'
        'rotation_period = "1h"\npublish_ahead = "10m"\ntoken_lifetime = "1h"\n'
    )
    yield config
    close_all()


def _keyrotd(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    return subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", "--config", str(config), *argv],
        capture_output=True,
        text=True,
        env=env,  # SOFTHSM2_CONF: the test's token
        timeout=180,
        check=False,
    )


@pytest.mark.slow
def test_cli_writers_racing_on_a_custody_keyset_keep_one_active_key_and_no_orphan(
    config: Path,
) -> None:
    assert main(["--config", str(config), "rotate"]) == 0
    status = json.loads(_keyrotd(config, "status", "--json").stdout)
    [pending] = [k["kid"] for k in status["keysets"][0]["keys"] if k["state"] == "pending"]
    commands: list[tuple[str, ...]] = [("rotate", "--now", "--force")] * 8
    commands += [("rotate",)] * 4 + [("revoke", pending)] * 2
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        results = list(pool.map(lambda argv: _keyrotd(config, *argv), commands))
    created: set[str] = set()
    for result in results:
        assert result.returncode == 0, result.stderr
        created |= set(re.findall(r"key\.created (\S+)", result.stdout))
    emergencies = sum(len(re.findall(r"key\.activated .*rotate --now", r.stdout)) for r in results)
    assert emergencies == 8  # every emergency rotation activated exactly one key

    settings = load_settings(config, {})
    custody = open_custody(settings, "pkcs11")
    later = utc_now() + timedelta(minutes=11)
    storage = open_storage(settings.storage)
    manager = open_writer(storage, settings.keyset("default"), lambda: later, custody=custody)
    keyset = manager.load().keyset
    check_document(keyset, manager.spec.policy)  # one active key, at most one successor, G3, G5
    present = {k.kid for k in (*keyset.keys, *keyset.history)}
    assert created <= present, "a key was lost"
    manager.sweep(keyset, later, every=timedelta(0))
    named = {k.handle for k in keyset.keys if k.handle is not None and k.holds_private}
    assert {k.handle for k in custody.held("default")} == named


def _sign(daemon: Daemon) -> dict[str, Any]:
    reply = daemon.request(
        "POST",
        "/keysets/main/sign",
        headers={"Authorization": f"Bearer {TOKEN}"},
        body=json.dumps({"claims": {"sub": "alice"}}).encode(),
    )
    assert reply.status == 200, reply.body
    answer: dict[str, Any] = json.loads(reply.body)
    jwks = json.loads(daemon.get("/keysets/main/jwks.json").body)
    jwk = next(k for k in jwks["keys"] if k["kid"] == answer["kid"])
    jwt.decode(answer["token"], jwt.PyJWK(jwk, algorithm="ES256").key, algorithms=["ES256"])
    return answer


def _held(daemon: Daemon) -> dict[str, Any] | None:
    done = subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", "status", "--json", "--config", str(daemon.config)],
        capture_output=True,
        check=True,
        cwd=daemon.workdir,
        env=daemon.env,
    )
    [keyset] = json.loads(done.stdout)["keysets"]
    held: dict[str, Any] | None = keyset["held"]
    return held


@pytest.mark.slow
def test_a_custody_successor_is_held_until_the_observed_url_serves_it(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    daemon = make_daemon(
        tmp_path / "d",
        keysets=[
            {
                "name": "main",
                "algorithm": "ES256",
                "custody": "pkcs11",
                "rotation_period": "6s",
                "publish_ahead": "3s",
                "token_lifetime": "2s",
                "clock_skew": "0s",
                "verifier_cache": "1s",
            }
        ],
        custody=softhsm.custody(tmp_path),
        env={"SOFTHSM2_CONF": str(softhsm.conf)},
    )
    cache = StuckCache(daemon)
    daemon.config.write_text(daemon.config.read_text() + f"observe = {json.dumps([cache.url])}\n")
    daemon.start()
    try:
        first = _sign(daemon)["kid"]
        held = wait_for(lambda: _held(daemon), 20, "the successor to be held", every=0.3)
        assert held["lacking"] == [cache.url]
        time.sleep(2)  # past the scheduled time: still the first key signs
        assert _sign(daemon)["kid"] == first
        cache.stuck = False
        wait_for(lambda: _sign(daemon)["kid"] == held["kid"], 20, "the switch", every=0.2)
        assert _held(daemon) is None
    finally:
        cache.close()
        daemon.stop()
