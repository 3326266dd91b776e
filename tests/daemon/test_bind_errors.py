"""A bind failure names its cause and that cause's own fix, with real binds (docs/operations.md)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import NOBODY, Daemon, free_port, start_daemon
from tests.support.process import TOKEN

from .conftest import DaemonFactory

IN_USE = "stop the process using it"
LOW_PORT = "CAP_NET_BIND_SERVICE"


def refusal(daemon: Daemon, code: int) -> str:
    """The one line of the refusal, once the daemon exited with ``code``."""
    assert daemon.process is not None
    assert daemon.process.wait(30) == code, daemon.log_text()[-2000:]
    lines = [line for line in daemon.log_text().splitlines() if line.startswith("keyrotd: ")]
    assert len(lines) == 1, daemon.log_text()[-2000:]
    return lines[0]


def test_a_port_in_use_says_to_stop_the_process_using_it(daemon_factory: DaemonFactory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = daemon_factory(server={"listen": f"127.0.0.1:{port}"}).start(wait=False)
        line = refusal(daemon, 1)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert IN_USE in line and "server.listen" in line
    assert LOW_PORT not in line


def test_an_address_of_another_machine_says_so(daemon_factory: DaemonFactory) -> None:
    # TEST-NET-1; no admin endpoints, which plain HTTP off loopback would refuse first
    daemon = daemon_factory(server={"listen": "192.0.2.1:8080"}, admin=False).start(wait=False)
    line = refusal(daemon, 1)
    assert "cannot listen on 192.0.2.1:8080" in line
    assert "not an address of this machine" in line
    assert IN_USE not in line


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory nobody can traverse (pytest's temp root is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="keyrotd-bind-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the daemon as nobody")
def test_a_low_port_without_privilege_says_how_to_get_one(open_dir: Path) -> None:
    store = open_dir / "store"
    store.mkdir(mode=0o700)
    os.chown(store, NOBODY, NOBODY)
    token = open_dir / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    os.chown(token, NOBODY, NOBODY)
    config = open_dir / "keyrotd.toml"
    config.write_text(
        f'[storage]\npath = "{store}"\n[server]\nlisten = "127.0.0.1:443"\n'
        f'admin_token_file = "{token}"\n'
    )
    config.chmod(0o644)
    daemon = start_daemon(
        config, 443, log_path=open_dir / "daemon.log", as_nobody=True, wait_ready=False
    )
    try:
        line = refusal(daemon, 1)
    finally:
        daemon.stop()
    assert "cannot listen on 127.0.0.1:443" in line
    assert "above 1023" in line and LOW_PORT in line
    assert IN_USE not in line


def test_a_missing_socket_directory_says_to_create_it(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    path = tmp_path / "no-such-directory" / "admin.sock"
    server = {"admin_listen": f"unix:{path}", "listen": f"127.0.0.1:{free_port()}"}
    # one line, whatever a library's backtrace settings ask
    daemon = daemon_factory(server=server, env={"RUST_BACKTRACE": "1"}).start(wait=False)
    line = refusal(daemon, 2)
    assert str(path.parent) in line and "server.admin_listen" in line
    assert "mkdir" in line and "RuntimeDirectory" in line
    assert IN_USE not in line
    assert "backtrace" not in daemon.log_text().lower()
