"""keyrotd on PostgreSQL with many keysets: ready time, steady CPU, queries per refresh, and how
soon three replicas serve a CLI's change (docs/storage.md, "PostgreSQL").

    python benchmarks/postgres_scale.py [--keysets 10000] [--seconds 60] [--replicas 3]

A real PostgreSQL 15 server (tests/support/postgres.py, pg_stat_statements loaded). N ES256
keysets with the default policy and refresh_interval (30 s):

- ready: process start -> first /readyz 200, on an empty table (every keyset's first keys are
  made and inserted), then again on the filled table;
- steady CPU (% of one core, utime+stime) over --seconds once ready, and the statements the daemon
  sent over that window (pg_stat_statements: calls per statement), against the refreshes made;
- change seen: --replicas daemons (refresh_interval 60 s) share a small table; a CLI revocation
  (``keyrotd revoke``) is timed from its return (the write committed) until every replica
  stops serving the key (``--keysets 0``: this part only). Without LISTEN a
  replica would see it at its next refresh: up to refresh_interval (60 s).

Prints a markdown table; exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from daemon_tools import cpu_seconds, wait_for
from scale_tools import write_config

from keyrotd.cli import main as keyrotd
from keyrotd.model import from_json
from keyrotd.storage.postgres.backend import PostgresStorage
from tests.support.daemon import Daemon, start_daemon
from tests.support.postgres import PostgresServer


def kids(daemon: Daemon, keyset: str) -> frozenset[str]:
    reply = daemon.get(f"/keysets/{keyset}/jwks.json", timeout=5)
    return frozenset(key["kid"] for key in reply.json()["keys"])


def timed_start(config: Path, port: int, log: Path) -> tuple[Daemon, float]:
    started = time.monotonic()
    daemon = start_daemon(config, port, log_path=log, wait_ready=False)
    daemon.wait_ready(timeout=900)
    return daemon, time.monotonic() - started


def scale(server: PostgresServer, work: Path, count: int, seconds: float) -> dict[str, str]:
    database = server.new_database()
    storage = {"type": "postgres", "dsn_file": server.dsn_file(work, database)}
    config = work / "scale.toml"
    port = write_config(config, count, storage)
    daemon, empty = timed_start(config, port, work / "empty.log")
    daemon.stop()
    daemon, filled = timed_start(config, port, work / "filled.log")
    try:
        time.sleep(5)  # the start-up syncs settle
        server.forget_statements(database)
        assert daemon.process is not None
        cpu_before, at = cpu_seconds(daemon.process.pid), time.monotonic()
        time.sleep(seconds)
        cpu = (cpu_seconds(daemon.process.pid) - cpu_before) / (time.monotonic() - at)
        statements = server.statements(database)
    finally:
        daemon.stop()
    refreshes = [calls for query, (calls, _) in statements.items() if "unnest" in query]
    total = sum(calls for calls, _ in statements.values())
    return {
        "keysets": str(count),
        "ready, empty table (s)": f"{empty:.1f}",
        "ready, filled table (s)": f"{filled:.1f}",
        "steady CPU (% of a core)": f"{100 * cpu:.1f}",
        f"statements in {seconds:.0f} s": str(total),
        "refresh queries": str(sum(refreshes)),
    }


def change_seen(server: PostgresServer, work: Path, replicas: int) -> dict[str, str]:
    database = server.new_database()
    storage = {"type": "postgres", "dsn_file": server.dsn_file(work, database)}
    daemons = []
    for n in range(replicas):
        config = work / f"replica-{n}.toml"
        port = write_config(config, 10, storage, server={"refresh_interval": "60s"})
        daemons.append(start_daemon(config, port, log_path=work / f"replica-{n}.log"))
    try:
        first = daemons[0]
        for daemon in daemons:
            wait_for(lambda d=daemon: '"storage.listening"' in d.log_text(), 20, "LISTEN")
        keyset = "ks-00003"
        served = kids(first, keyset)
        reader = PostgresStorage(server.dsn(database))
        stored = reader.read(keyset)
        reader.close()
        assert stored is not None
        active = from_json(stored.data, stored.location).active
        assert active is not None
        (successor,) = served - {active.kid}
        keyrotd(["--config", str(work / "replica-0.toml"), "revoke", successor, "--keyset", keyset])
        started = time.monotonic()  # the CLI returned: its write is committed
        seen = []
        for daemon in daemons:
            wait_for(lambda d=daemon: successor not in kids(d, keyset), 90, "the change", 0.01)
            seen.append(time.monotonic() - started)
    finally:
        for daemon in daemons:
            daemon.stop()
    return {
        "replicas": str(replicas),
        "CLI revocation served by all (s)": f"{max(seen):.2f}",
        "refresh_interval": "60 s",
    }


def table(rows: dict[str, str]) -> str:
    head = "| " + " | ".join(rows) + " |"
    return "\n".join([head, "|" + "---|" * len(rows), "| " + " | ".join(rows.values()) + " |"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keysets", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args(argv)
    server = PostgresServer.make()
    work = server.root / "bench"
    work.mkdir()
    try:
        print(table(change_seen(server, work, args.replicas)), flush=True)
        if args.keysets:
            print(table(scale(server, work, args.keysets, args.seconds)), flush=True)
    finally:
        server.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
