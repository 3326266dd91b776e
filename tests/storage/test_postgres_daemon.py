"""``keyrotd run`` on PostgreSQL: a CLI's change heard through LISTEN within a second, a
server restart ridden out (docs/storage.md, "PostgreSQL")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyrotd.cli import main
from tests.support.daemon import Daemon, make_daemon
from tests.support.postgres import PASSWORD, PostgresServer, require_postgres
from tests.support.waiting import wait_for


def postgres_daemon(
    workdir: Path, server: PostgresServer, database: str, refresh_interval: str
) -> Daemon:
    dsn_file = server.dsn_file(workdir, database)
    return make_daemon(
        workdir,
        storage={"type": "postgres", "dsn_file": dsn_file},
        server={"refresh_interval": refresh_interval},
    )


def listening(daemon: Daemon) -> int:
    return sum(e.get("event") == "storage.listening" for e in daemon.log_events())


def kids(daemon: Daemon) -> frozenset[str]:
    reply = daemon.get("/.well-known/jwks.json", timeout=2)
    assert reply.status == 200
    return frozenset(key["kid"] for key in reply.json()["keys"])


def cli(daemon: Daemon, *argv: str) -> int:
    return main(["--config", str(daemon.config), *argv])


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of the test's own: it is stopped and started again."""
    require_postgres()
    server = PostgresServer.make()
    yield server
    server.destroy()


def test_a_cli_rotation_is_served_within_a_second_with_refresh_interval_60s(
    tmp_path: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    daemon = postgres_daemon(tmp_path, postgres_server, postgres_database, "60s").start()
    try:
        before = wait_for(lambda: kids(daemon), 10, "the first JWKS")
        daemon.wait_for(lambda: listening(daemon), 10, "the daemon's LISTEN")
        active = daemon.admin("GET", "/signing-key").json()["active"]["kid"]
        (successor,) = before - {active}
        assert cli(daemon, "revoke", successor, "--keyset", "main") == 0
        revoked = time.monotonic()
        after = wait_for(
            lambda: (now := kids(daemon)) != before and now, 5, "the revocation served", 0.02
        )
        seen_in = time.monotonic() - revoked
    finally:
        daemon.stop()

    assert active in after
    assert successor not in after  # revoked (the CLI made a new successor in the same write)
    assert seen_in < 1.0, seen_in  # refresh_interval is 60 s
    assert PASSWORD not in daemon.log_text()


@pytest.mark.slow
def test_a_server_restart_is_ridden_out_and_recovered_from(
    tmp_path: Path, own_server: PostgresServer
) -> None:
    database = own_server.new_database()
    daemon = postgres_daemon(tmp_path, own_server, database, "1s").start()
    try:
        before = wait_for(lambda: kids(daemon), 10, "the first JWKS")
        own_server.stop()
        daemon.wait_for(
            lambda: any(e.get("event") == "storage.read_failed" for e in daemon.log_events()),
            15,
            "storage.read_failed",
        )
        assert kids(daemon) == before  # still served
        assert daemon.get("/readyz").status == 200
        own_server.start()
        daemon.wait_for(
            lambda: any(e.get("event") == "storage.recovered" for e in daemon.log_events()),
            30,
            "storage.recovered",
        )
        daemon.wait_for(lambda: listening(daemon) == 2, 15, "LISTEN again")
        active = daemon.admin("GET", "/signing-key").json()["active"]["kid"]
        (successor,) = before - {active}
        assert cli(daemon, "revoke", successor, "--keyset", "main") == 0
        wait_for(lambda: successor not in kids(daemon), 1.5, "the revocation after the restart")
        served = daemon.get("/readyz").status
    finally:
        daemon.stop()

    events = [e.get("event") for e in daemon.log_events()]
    assert events.index("storage.read_failed") < events.index("storage.recovered")
    assert served == 200
    assert PASSWORD not in daemon.log_text()
