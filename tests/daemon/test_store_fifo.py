"""A FIFO put in the store over a keyset's document never hangs the daemon or the CLI
(docs/storage.md, "Files keyrotd did not create").

Before: the refresh blocked on ``open`` for good, the admin threads that then waited on that
keyset were used up, ``rotate`` on every keyset hung, ``/readyz`` stayed 200 and no failure was
counted. Now the read of that keyset fails at once, naming the file, and is counted as a storage
failure; the other keysets go on, and the daemon keeps serving what it had.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.daemon import Daemon
from tests.support.http import metric

from .conftest import DaemonFactory

BOUND = 20.0
"""Seconds a CLI run may take: one blocked on the FIFO is killed and the test fails."""
KEYSETS: list[dict[str, object]] = [
    {"name": name, "algorithm": "ES256", "rotation_period": "1h", "publish_ahead": "1h"}
    for name in ("main", "other")
]


def cli(daemon: Daemon, *argv: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "keyrotd.cli", *argv, "--config", str(daemon.config)],
            capture_output=True,
            text=True,
            timeout=BOUND,
            cwd=daemon.workdir,
            env=daemon.env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"keyrotd {' '.join(argv)} still running after {BOUND}s")


def failures(daemon: Daemon, keyset: str) -> float:
    return metric(daemon, f'keyrotd_storage_failures_total{{keyset="{keyset}"}}') or 0.0


def test_a_fifo_over_a_document_fails_that_keyset_only(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(keysets=KEYSETS).start()
    served = daemon.get("/keysets/main/jwks.json").body
    fifo = daemon.data / "main.json"
    fifo.unlink()
    os.mkfifo(fifo, 0o600)

    daemon.wait_for(lambda: failures(daemon, "main") >= 1, 15, "the failed read to be counted")
    assert failures(daemon, "other") == 0
    [logged] = {
        e["error"] for e in daemon.log_events() if e.get("keyset") == "main" and "error" in e
    }
    assert str(fifo) in logged and "a FIFO" in logged
    # more rotations than admin threads: each answers (the failing keyset with its error)
    for _ in range(3):
        reply = daemon.admin("POST", "/keysets/main/rotate")
        assert reply.status == 503 and str(fifo) in reply.body.decode()
    assert daemon.admin("POST", "/keysets/other/rotate").status == 200
    assert daemon.get("/keysets/main/jwks.json").body == served  # what it had, still served
    assert daemon.get("/readyz").status == 200

    done = cli(daemon, "rotate", "--now", "--keyset", "main")
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert str(fifo) in line and "a FIFO" in line
    assert cli(daemon, "rotate", "--now", "--force", "--keyset", "other").returncode == 0
    daemon.check_alive()
