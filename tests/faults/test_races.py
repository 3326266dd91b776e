"""Races: two daemons, CLI processes and direct API writers on one keyset, file and
AWS. The daemons tick by themselves (scheduled transitions, 1 s refresh) and take rotations
through their admin endpoints; their transitions are read back from their JSON logs.

Every writer reports what it did (the CLI prints its transitions, the API returns them) and a
reader thread records every document it can see while they race. Afterwards: every document held
exactly one active key and at most one successor, no reported key is missing from the final
document (no lost update), every activation that was not an announced exception came
``publish_ahead`` after its key's publication, and every expiry ``token_lifetime + clock_skew``
after its retirement, all by the documents' own timestamps (``helpers.History``). The policy is
seconds long, so ticks really activate and expire keys while the race runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from keyrotd.lifecycle.commands import TICK, Command, Rotate
from keyrotd.lifecycle.events import Transition
from keyrotd.model import Keyset, from_json
from keyrotd.storage import Storage
from keyrotd.storage.file import FileStorage
from keyrotd.times import utc_now
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.support.daemon import Daemon, free_port, start_daemon
from tests.support.keysets import EVERY_20_SECONDS as POLICY

from .helpers import History

KEYSET = """
[server]
refresh_interval = "1s"
jwks_max_age = "1s"

[[keysets]]
name = "default"
algorithm = "ES256"
rotation_period = "20s"
publish_ahead = "3s"
token_lifetime = "1s"
clock_skew = "1s"
verifier_cache = "1s"
"""
TRANSITION = re.compile(
    r"^default: (key\.\w+) (\S+) at (\S+)(?: \(exception to publish-ahead: (.*)\))?$", re.M
)


@dataclass
class Backend:
    name: str
    storage: Callable[[], Storage]
    config: str
    environ: dict[str, str]


@pytest.fixture
def file_backend(tmp_path: Path) -> Backend:
    store = tmp_path / "store"
    return Backend(
        "file", lambda: FileStorage(store), f'[storage]\npath = "{store}"\n', dict(os.environ)
    )


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    pytest.importorskip("moto")
    from tests.support.moto import moto_endpoint

    with moto_endpoint() as url:
        yield url


@pytest.fixture
def aws_backend(moto_url: str) -> Iterator[Backend]:
    from keyrotd.storage.aws.storage import AwsStorage
    from tests.support.moto import (
        REGION,
        fake_aws_environment,
    )

    prefix = f"races-{uuid.uuid4().hex[:12]}/"
    with fake_aws_environment():
        yield Backend(
            "aws",
            lambda: AwsStorage(secret_prefix=prefix, region=REGION, endpoint_url=moto_url),
            f'[storage]\ntype = "aws"\nsecret_prefix = "{prefix}"\nregion = "{REGION}"\n'
            f'endpoint_url = "{moto_url}"\n',
            dict(os.environ),
        )


@dataclass
class Race:
    backend: Backend
    config: Path
    history: History
    lock: threading.Lock

    @classmethod
    def on(cls, backend: Backend, directory: Path) -> Race:
        config = directory / "keyrotd.toml"
        config.write_text(KEYSET + backend.config)
        return cls(backend, config, History(POLICY), threading.Lock())

    def report(self, transitions: tuple[Transition, ...] | list[Transition]) -> None:
        with self.lock:
            self.history.report(transitions)

    def observe(self, keyset: Keyset, now: datetime | None = None) -> None:
        with self.lock:
            self.history.observe(keyset, now)

    def manager(self, storage: Storage) -> KeysetWriter:
        return KeysetWriter(storage, KeysetSpec("default", "ES256", 2048, POLICY))

    def cli(self, *argv: str) -> str:
        env = {k: v for k, v in self.backend.environ.items() if not k.startswith("KEYROTD_")}
        result = subprocess.run(
            [sys.executable, "-m", "keyrotd.cli", "--config", str(self.config), *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, (argv, result.stderr)
        self.report(
            [
                Transition(event, kid, datetime.fromisoformat(at), exception or None)
                for event, kid, at, exception in TRANSITION.findall(result.stdout)
            ]
        )
        return result.stdout

    def api_writer(self, commands: list[Command], pace: float) -> int:
        """One writer with its own storage client, a command every ``pace`` seconds; returns its
        emergency activations."""
        storage = self.backend.storage()
        emergencies = 0
        try:
            manager = self.manager(storage)
            for command in commands:
                outcome = manager.apply(command)
                self.report(outcome.transitions)  # documents are observed in order by the reader
                emergencies += sum(t.exception == "rotate --now" for t in outcome.transitions)
                time.sleep(pace)  # let scheduled activations and expiries fall due meanwhile
        finally:
            storage.close()
        return emergencies

    def reader(self, stop: threading.Event) -> None:
        storage = self.backend.storage()
        try:
            while not stop.is_set():
                stored = storage.read("default")
                if stored is not None:
                    self.observe(from_json(stored.data, stored.location), utc_now())
                stop.wait(0.01)
        finally:
            storage.close()

    def final(self) -> Keyset:
        storage = self.backend.storage()
        try:
            stored = storage.read("default")
            assert stored is not None
            return from_json(stored.data, stored.location)
        finally:
            storage.close()


def api_commands(writer: int, count: int) -> list[Command]:
    """Writer 0 starts with an emergency rotation (racing the CLI's); then all tick and rotate,
    so that successors are published, activate on schedule and retired keys expire."""
    first: list[Command] = [Rotate(now=True)] if writer == 0 else []
    cycle: list[Command] = [TICK, Rotate(), TICK]
    return first + [cycle[(writer + i) % len(cycle)] for i in range(count - len(first))]


ADMIN_TOKEN = "races-admin-token-5e8d1c0b-7f3a9c2e41d6"
NOW = "rotate?now=true&force=true"  # races, not the age of a successor: forced
ADMIN_ORDERS = ("rotate", NOW, "rotate", NOW)


def start_daemons(race: Race, directory: Path, count: int) -> list[Daemon]:
    token = directory / "admin.token"
    token.write_text(ADMIN_TOKEN)
    token.chmod(0o600)
    daemons = []
    for n in range(count):
        port = free_port()
        config = directory / f"daemon-{n}.toml"
        server = f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_token_file = "{token}"\n'
        config.write_text(race.config.read_text().replace("[server]\n", server))
        log = directory / f"daemon-{n}.log"
        daemons.append(
            start_daemon(config, port, log_path=log, environ=race.backend.environ, wait_ready=False)
        )
    for daemon in daemons:  # started together, waited for in turn
        daemon.wait_for(lambda d=daemon: ready(d), 30, "the daemon to be ready")  # type: ignore[misc]
    return daemons


def ready(daemon: Daemon) -> bool:
    try:
        return daemon.get("/readyz").status == 200
    except OSError:
        return False


def admin_orders(daemon: Daemon, pace: float) -> int:
    """Rotations through one daemon's admin endpoint; returns its emergency activations."""
    emergencies = 0
    for order in ADMIN_ORDERS:
        reply = daemon.request(
            "POST", f"/keysets/default/{order}", {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert reply.status == 200, reply.body
        body = reply.json()
        assert isinstance(body, dict)
        emergencies += sum(t["exception"] == "rotate --now" for t in body["transitions"])
        time.sleep(pace)
    return emergencies


def run_race(
    race: Race,
    directory: Path,
    *,
    cli_runs: int,
    api_writers: int,
    api_commands_each: int,
    pace: float,
    daemons: int = 2,
) -> None:
    bootstrap = race.manager(race.backend.storage())
    outcome = bootstrap.apply(Rotate())
    race.report(outcome.transitions)
    [pending] = outcome.keyset.pending
    cli_argv = [("rotate", "--now", "--force"), ("rotate",), ("revoke", pending.kid)]
    running = start_daemons(race, directory, daemons)
    stop = threading.Event()
    reader = threading.Thread(target=race.reader, args=(stop,))
    reader.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=cli_runs + api_writers + daemons) as pool:
            cli = [pool.submit(race.cli, *cli_argv[i % 3]) for i in range(cli_runs)]
            api = [
                pool.submit(race.api_writer, api_commands(n, api_commands_each), pace)
                for n in range(api_writers)
            ]
            admin = [pool.submit(admin_orders, daemon, 4 * pace) for daemon in running]
            outputs = [f.result(timeout=300) for f in cli]
            api_emergencies = sum(f.result(timeout=300) for f in api)
            admin_emergencies = sum(f.result(timeout=300) for f in admin)
    finally:
        stop.set()
        reader.join(30)
        codes = [daemon.stop() for daemon in running]
    elapsed = time.monotonic() - started
    assert codes == [0] * daemons
    for daemon in running:
        race.report(daemon.transitions())
    assert admin_emergencies == daemons * ADMIN_ORDERS.count(NOW)

    cli_emergencies = sum("rotate --now)" in out for out in outputs)
    expected = sum(1 for i in range(cli_runs) if i % 3 == 0)
    assert cli_emergencies == expected  # every `rotate --now` activated exactly one key
    assert api_emergencies == sum(
        isinstance(c, Rotate) and c.now
        for n in range(api_writers)
        for c in api_commands(n, api_commands_each)
    )
    final = race.final()
    race.observe(final, utc_now())
    history = race.history
    history.check_nothing_lost(final)
    assert history.unexplained_activations() == []
    # Revoked by the CLI, unless emergency rotations retired it and it expired first.
    assert pending.kid in history.revoked or history.records[pending.kid].state.value == "expired"
    scheduled = history.activations - len(history.exceptions)
    expired = sum(k.state.value == "expired" for k in history.records.values())
    assert scheduled > 0 and expired > 0, "the race was too short to exercise G2 and G3"
    print(
        f"{race.backend.name}: {daemons} daemons, {cli_runs} CLI processes and "
        f"{api_writers} API writers "
        f"x {api_commands_each} commands in {elapsed:.1f}s; {history.documents} documents "
        f"checked, {len(history.created)} keys created, {history.activations} activations "
        f"({scheduled} scheduled), {expired} expiries; none lost, one active key in each"
    )


@pytest.mark.alone  # the race needs the CPU: contention starves it
def test_daemons_cli_processes_and_api_writers_race_on_a_file_store(
    file_backend: Backend, tmp_path: Path
) -> None:
    race = Race.on(file_backend, tmp_path)
    run_race(race, tmp_path, cli_runs=9, api_writers=3, api_commands_each=30, pace=0.25)


def test_daemons_cli_processes_and_api_writers_race_on_aws(
    aws_backend: Backend, tmp_path: Path
) -> None:
    race = Race.on(aws_backend, tmp_path)
    run_race(race, tmp_path, cli_runs=6, api_writers=2, api_commands_each=24, pace=0.3)
