"""The chaos drill on PostgreSQL: three ``keyrotd run`` replicas on one table, SIGKILLs at random
moments, CLI rotations, the server stopped for 10 s and started again mid-run, and tokens minted
from the replicas' signing keys verified by PyJWT throughout against the JWKS of a replica
picked at random (docs/storage.md, "PostgreSQL").

Checked: no token is rejected by a JWKS fetched during its lifetime (G2, G3 across replicas),
no mint on a live replica fails (the signing key is served from memory through the outage),
and no stored document ever holds two active keys (G1) -- read by a watcher that checks every
revision it sees with ``tests.faults.helpers.check_document``.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from keyrotd.errors import KeyrotdError
from keyrotd.model import Policy, from_json
from keyrotd.storage.postgres.backend import PostgresStorage
from tests.faults.helpers import check_document
from tests.support.daemon import TOKEN, Daemon, make_daemon
from tests.support.postgres import PostgresServer, require_postgres

ROTATE = ("rotate", "--keyset", "main")
RUN = 36.0
OUTAGE_AT, OUTAGE = 10.0, 10.0
KEYSET = {
    "name": "main",
    "algorithm": "ES256",
    "rotation_period": "5s",
    "publish_ahead": "2500ms",
    "token_lifetime": "1s",
    "clock_skew": "500ms",
    "verifier_cache": "1s",
}
POLICY = Policy(
    rotation_period=timedelta(seconds=5),
    publish_ahead=timedelta(milliseconds=2500),
    token_lifetime=timedelta(seconds=1),
    clock_skew=timedelta(milliseconds=500),
)


@dataclass
class Drill:
    replicas: list[Daemon]
    live: list[bool]
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    tokens: list[tuple[float, str]] = field(default_factory=list)
    minted: int = 0
    lost: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    verified: int = 0
    documents: int = 0
    two_active: list[str] = field(default_factory=list)
    kills: int = 0
    rotations: int = 0
    cli_runs: int = 0
    cli_answers: list[str] = field(default_factory=list)

    def pick(self) -> Daemon | None:
        with self.lock:
            alive = [r for r, up in zip(self.replicas, self.live, strict=True) if up]
        return random.choice(alive) if alive else None

    def mint(self) -> None:
        while not self.stop.wait(0.1):
            replica = self.pick()
            if replica is None:
                continue
            try:
                reply = replica.admin("GET", "/keysets/main/signing-key")
            except OSError:
                continue  # killed under the request: not a live replica
            if reply.status != 200:
                self.lost.append(f"signing-key answered {reply.status}")
                continue
            active = reply.json()["active"]
            key = jwt.PyJWK(active)
            now = time.time()
            token = jwt.encode(
                {"sub": "drill", "iat": int(now), "exp": int(now) + 1},
                key.key,
                algorithm="ES256",
                headers={"kid": active["kid"]},
            )
            with self.lock:
                self.tokens.append((time.monotonic(), token))
                self.minted += 1

    def verify(self) -> None:
        while not self.stop.wait(0.05):
            replica = self.pick()
            if replica is None:
                continue
            fetched = time.monotonic()
            try:
                reply = replica.get("/keysets/main/jwks.json", timeout=2)
            except OSError:
                continue
            if reply.status != 200:
                self.rejected.append(f"JWKS answered {reply.status}")
                continue
            keys = {key["kid"]: jwt.PyJWK(key) for key in reply.json()["keys"]}
            with self.lock:
                # a token lives token_lifetime (1 s); minted before this JWKS was fetched
                living = [t for at, t in self.tokens if fetched - 1.0 < at < fetched]
            for token in living:
                kid = jwt.get_unverified_header(token)["kid"]
                try:
                    # whether its key is served is the question, not the token's own clock
                    jwt.decode(
                        token, keys[kid].key, algorithms=["ES256"], options={"verify_exp": False}
                    )
                except (KeyError, jwt.InvalidTokenError) as error:
                    self.rejected.append(f"{kid}: {type(error).__name__}")
                else:
                    self.verified += 1

    def watch_documents(self, dsn: str) -> None:
        storage = PostgresStorage(dsn, pool_timeout=1.0)
        seen: set[str] = set()
        try:
            while not self.stop.wait(0.1):
                try:
                    stored = storage.read("main")
                except KeyrotdError:
                    continue  # the outage
                if stored is None or stored.version in seen:
                    continue
                seen.add(stored.version)
                self.documents += 1
                try:
                    check_document(from_json(stored.data, stored.location), POLICY)
                except AssertionError as error:
                    self.two_active.append(f"revision {stored.version}: {error}")
        finally:
            storage.close()

    def kill_at_random(self) -> None:
        while not self.stop.wait(random.uniform(1.5, 4.0)):
            n = random.randrange(len(self.replicas))
            with self.lock:
                self.live[n] = False
            self.replicas[n].kill()
            self.kills += 1
            self.replicas[n].start(wait=False)
            try:
                self.replicas[n].wait_ready(timeout=20)
            except AssertionError:
                continue  # not ready within the drill (the outage): left out of the picks
            with self.lock:
                self.live[n] = True

    def rotate_from_the_cli(self, config: Path) -> None:
        """``rotate`` (a successor now, if there is none) and ``rotate --now`` (the successor
        signs at once, once verifiers may hold it) in turns; a refusal is fine."""
        commands = [ROTATE, (*ROTATE, "--now")]
        while not self.stop.wait(random.uniform(1.0, 3.0)):
            command = commands[self.cli_runs % 2]
            done = subprocess.run(
                [sys.executable, "-m", "keyrotd.cli", "--config", str(config), *command],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            self.cli_runs += 1
            self.rotations += done.returncode == 0
            self.cli_answers.append(f"{' '.join(command)}: {done.returncode} {done.stdout[-150:]}")


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    require_postgres()
    own = PostgresServer.make()
    yield own
    own.destroy()


@pytest.mark.slow
def test_chaos_drill_three_replicas_kills_cli_rotations_and_a_10s_server_outage(
    tmp_path: Path, server: PostgresServer
) -> None:
    database = server.new_database()
    dsn_file = server.dsn_file(tmp_path, database)
    replicas = [
        make_daemon(
            tmp_path / f"replica-{n}",
            keysets=[KEYSET],
            storage={"type": "postgres", "dsn_file": dsn_file},
        )
        for n in range(3)
    ]
    for replica in replicas:
        replica.start()
    drill = Drill(replicas, [True] * 3)
    threads = [
        threading.Thread(target=drill.mint),
        threading.Thread(target=drill.verify),
        threading.Thread(target=drill.watch_documents, args=(server.dsn(database),)),
        threading.Thread(target=drill.kill_at_random),
        threading.Thread(target=drill.rotate_from_the_cli, args=(replicas[0].config,)),
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(OUTAGE_AT)
        server.stop()
        time.sleep(OUTAGE)
        server.start()
        time.sleep(RUN - OUTAGE_AT - OUTAGE)
    finally:
        drill.stop.set()
        for thread in threads:
            thread.join(40)
        for replica in replicas:
            replica.stop()

    summary = (
        f"minted {drill.minted}, verified {drill.verified}, kills {drill.kills}, "
        f"CLI rotations {drill.rotations}, documents {drill.documents}"
    )
    assert drill.rejected == [], summary
    assert drill.lost == [], summary
    assert drill.two_active == [], summary
    assert drill.minted > 100 and drill.verified > 100 and drill.kills >= 3, summary
    # the keyset rotated, before and after the outage, by the replicas and by the CLI
    assert drill.documents >= 3 and drill.rotations >= 1, (summary, drill.cli_answers)
    for replica in replicas:
        assert TOKEN not in replica.log_text()
