"""The daemon makes itself non-dumpable at start: no core file, no ptrace or /proc/PID/mem by
other processes of its uid. The kernel shows it: a non-dumpable process's /proc/PID files belong
to root, whatever its uid (proc(5), "/proc/pid"), so the daemon runs as nobody here."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import NOBODY, TOKEN, free_port, start_daemon


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory nobody can traverse (pytest's temp root is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="keyrotd-dumpable-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the daemon as nobody")
def test_the_daemon_is_not_dumpable(open_dir: Path) -> None:
    store = open_dir / "store"
    store.mkdir(mode=0o700)
    os.chown(store, NOBODY, NOBODY)
    token = open_dir / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    os.chown(token, NOBODY, NOBODY)
    port = free_port()
    config = open_dir / "keyrotd.toml"
    config.write_text(
        f'[storage]\npath = "{store}"\n[server]\nlisten = "127.0.0.1:{port}"\n'
        f'admin_token_file = "{token}"\n[[keysets]]\nname = "main"\nalgorithm = "ES256"\n'
    )
    config.chmod(0o644)
    daemon = start_daemon(config, port, log_path=open_dir / "daemon.log", as_nobody=True)
    try:
        assert daemon.process is not None
        proc = Path(f"/proc/{daemon.process.pid}")
        status = (proc / "status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert uids == [str(NOBODY)] * 4, uids  # it runs as nobody...
        assert (proc / "status").stat().st_uid == 0  # ...yet the kernel hides it from nobody
        assert (proc / "mem").stat().st_uid == 0
    finally:
        assert daemon.stop() == 0
