"""The chaos drill on the vault storage type: three ``keyrotd run`` replicas on one raft OpenBao
(TLS, ``storage.ca_file``), SIGKILLs at random moments, CLI rotations, the server stopped for
10 s and started again mid-run, tokens signed with the schedule of one replica (the next one while
it is down, as behind a load balancer) and verified with PyJWT against the others' JWKS all along
(the issuer and verifiers of ``tests/daemon/test_rotation_e2e.py``).

Checked: 0 tokens rejected, 0 lost (every token signed is verified, right after signing and just
before expiry), and every KV version ever written (``max_versions`` raised so that none is pruned)
holds exactly one active key and at most one successor, and drops no kid it held without
recording it in its history.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from jwt import PyJWKClientConnectionError, PyJWKClientError

from keyrotd.model import from_json
from keyrotd.storage.sealing import unseal
from tests.daemon.test_rotation_e2e import CLOCK_SKEW, KEYSET, MAX_AGE, REFRESH, Run, Verifier
from tests.faults.helpers import check_document
from tests.replicas.cluster import make_replicas
from tests.replicas.e2e import jwks_url
from tests.support.daemon import Daemon
from tests.support.openbao import BaoServer, raft_server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

NAME = str(KEYSET["name"])
PREFIX = "chaos/"
OUTAGE = 10.0
KILLS = 3
CLI_ROTATIONS = 3


@pytest.fixture
def bao(tmp_path: Path) -> Iterator[BaoServer]:
    with raft_server(tmp_path / "bao") as server:
        server.api("POST", "secret/config", {"max_versions": 1000})
        yield server


def replicas_on(bao: BaoServer, directory: Path) -> list[Daemon]:
    directory.mkdir(parents=True, exist_ok=True)
    token_file = directory / "vault.token"
    token_file.write_text(bao.root_token)
    token_file.chmod(0o600)
    storage = {
        "type": "vault",
        "url": bao.url,
        "token_file": token_file,
        "ca_file": bao.ca_file,
        "path_prefix": PREFIX,
    }
    server = {"refresh_interval": f"{REFRESH}s", "jwks_max_age": f"{MAX_AGE}s"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    return make_replicas(directory, 3, storage=storage, server=server, keysets=[KEYSET], env=env)


class Balanced(Verifier):
    """A verifier behind a load balancer over every replica: a replica that is down (SIGKILLed,
    starting again) and whose last JWKS lacks the token's kid is skipped for the next one. The
    token is judged as of its arrival (when it was due to be checked, if this thread is late):
    time spent on a dead replica is not held against it."""

    def __init__(self, replicas: list[Daemon], first: int) -> None:
        urls = [jwks_url(replica) for replica in replicas]
        self.verifiers = [Verifier(url) for url in urls[first:] + urls[:first]]
        self.skipped = 0

    def verify(self, token: str, due: float | None = None) -> dict[str, Any]:
        arrived = min(time.time(), due) if due is not None else time.time()
        for verifier in self.verifiers:
            try:
                key = verifier.client.get_signing_key_from_jwt(token)
                break
            except (PyJWKClientConnectionError, PyJWKClientError, OSError) as error:
                self.skipped += 1
                failure = error
        else:
            raise failure
        leeway = CLOCK_SKEW + (time.time() - arrived)
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=["RS256"], audience="api", leeway=leeway
        )
        return claims


def cli_rotate(replica: Daemon) -> int:
    command = [sys.executable, "-m", "keyrotd.cli", "--config", str(replica.config)]
    done = subprocess.run(
        [*command, "rotate", "--keyset", NAME], capture_output=True, timeout=60, check=False
    )
    return done.returncode


def every_version(bao: BaoServer) -> list[bytes]:
    """Each KV version of the keyset's secret, oldest first, opened as keyrotd would."""
    metadata = bao.api("GET", f"secret/metadata/{PREFIX}{NAME}")["data"]
    assert isinstance(metadata, dict)
    documents = []
    for version in range(1, int(metadata["current_version"]) + 1):
        answer = bao.api("GET", f"secret/data/{PREFIX}{NAME}?version={version}")["data"]
        assert isinstance(answer, dict)
        documents.append(unseal(NAME, json.dumps(answer["data"]).encode(), None).data)
    return documents


@pytest.mark.alone  # three replicas racing SIGKILLs and an outage: contention starved it in CI
def test_chaos_three_replicas_kills_cli_rotations_and_a_server_outage(
    bao: BaoServer, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    chance = random.Random(seed)
    replicas = replicas_on(bao, tmp_path / "replicas")
    for replica in replicas:
        replica.start(wait=False)
    for replica in replicas:
        replica.wait_ready()
    run = Run(replicas[0], others=tuple(replicas[1:]))  # an issuer behind a load balancer
    wait_for(lambda: run.refresh_schedule() or run.schedule, 10, "a signing key")
    threads = [
        threading.Thread(target=run.issue),
        threading.Thread(target=run.verify_fresh, args=(Balanced(replicas, 1),)),
        threading.Thread(target=run.verify_before_expiry, args=(Balanced(replicas, 2),)),
    ]
    for thread in threads:
        thread.start()
    killed: list[int] = []
    rotations: list[int] = []

    def chaos_step() -> None:
        time.sleep(chance.uniform(0.5, 3.0))
        victim = chance.randrange(3)
        replicas[victim].kill()  # SIGKILL, at whatever it was doing
        killed.append(victim)
        replicas[victim].start()
        rotations.append(cli_rotate(replicas[chance.randrange(3)]))

    try:
        chaos_step()
        bao.stop(signal.SIGTERM)
        outage_began = time.monotonic()
        time.sleep(OUTAGE)
        bao.restart()  # the same raft data, unsealed again
        outage = time.monotonic() - outage_began
        for _ in range(KILLS - 1):
            chaos_step()
        time.sleep(4)  # a rotation and more after the last kill
    finally:
        run.stop.set()
        for thread in threads:
            thread.join(30)
        codes = []
        for replica in replicas:
            try:
                codes.append(replica.stop())
            except AssertionError:
                codes.append(-1)
    assert codes == [0, 0, 0], [r.log_text()[-2000:] for r in replicas]

    signed = sum(run.signed.values())
    assert run.failures == [], f"seed {seed}: {run.failures[:5]}"
    assert run.checked["fresh"] == run.checked["before-expiry"] == signed  # 0 lost
    assert rotations == [0] * CLI_ROTATIONS
    assert len(run.signed) >= 3  # tokens came from several keys: rotations happened

    documents = every_version(bao)
    settings_policy = replicas_policy(replicas[0])
    previous: set[str] = set()
    for number, data in enumerate(documents, start=1):
        keyset = from_json(data, f"version {number}")
        check_document(keyset, settings_policy)  # one active key, at most one successor
        kids = {key.kid for key in (*keyset.keys, *keyset.history)}
        assert previous <= kids, f"version {number} lost {previous - kids}"
        previous = kids
    for replica in replicas:
        assert bao.root_token not in replica.log_text()
    print(
        f"\nseed {seed}: {signed} tokens from {len(run.signed)} keys, 0 rejected, 0 lost; "
        f"SIGKILLed replicas {killed}; {len(rotations)} CLI rotations; server down {outage:.1f}s; "
        f"{len(documents)} KV versions, each with one active key"
    )


def replicas_policy(replica: Daemon) -> object:
    from keyrotd.config import load_settings

    settings = load_settings(str(replica.config), environ={})
    return settings.keysets[0].policy
