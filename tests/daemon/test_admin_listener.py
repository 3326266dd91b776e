"""``server.admin_listen`` (docs/http.md): the admin endpoints on their own listener."""

from __future__ import annotations

import http.client
import signal
import socket
import ssl
import stat
import time
from pathlib import Path

import pytest

from tests.support.daemon import TOKEN, Daemon, free_port
from tests.support.http import Reply, UnixConnection, exchange
from tests.support.waiting import wait_for

from .conftest import DaemonFactory
from .test_service import NotifySocket
from .test_tls import TestCA, plain_http_answer, served_serial

BEARER = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_PATHS = [
    ("GET", "/signing-key"),
    ("GET", "/keysets/main/signing-key"),
    ("POST", "/keysets/main/rotate"),
    ("POST", "/keysets/main/keys/somekid/revoke"),
]
PUBLIC_PATHS = [
    "/.well-known/jwks.json",
    "/keysets/main/jwks.json",
    "/healthz",
    "/readyz",
]
"""Not on the admin listener (its /metrics is for a token with a status scope: see
test_metrics_privacy)."""


def over_unix(path: Path, method: str, target: str, token: bool = True) -> Reply:
    return exchange(UnixConnection(path), method, target, BEARER if token else None)


def over_https(port: int, ca_file: Path, method: str, target: str) -> Reply:
    context = ssl.create_default_context(cafile=ca_file)
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    return exchange(connection, method, target, BEARER)


def test_admin_on_a_tcp_port_speaks_https_and_nothing_else(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    ca = TestCA.make(tmp_path / "pki")
    ca.issue(0x77)
    admin_port = free_port()
    server = {**ca.server_settings(), "admin_listen": f"127.0.0.1:{admin_port}"}
    daemon = daemon_factory(server=server, ca_file=ca.file).start()
    signing = over_https(admin_port, ca.file, "GET", "/keysets/main/signing-key")
    assert signing.status == 200
    assert signing.json()["active"]["kid"]
    for path in PUBLIC_PATHS:
        assert over_https(admin_port, ca.file, "GET", path).status == 404, path
    for method, path in ADMIN_PATHS:
        assert daemon.request(method, path, headers=BEARER).status == 404, path
    assert not plain_http_answer(admin_port).startswith(b"HTTP/")
    # a renewal reaches the admin listener too
    ca.issue(0x78)
    daemon.send(signal.SIGHUP)

    def renewed() -> bool:
        return served_serial(admin_port, ca.file) == 0x78 == served_serial(daemon.port, ca.file)

    wait_for(renewed, 5, "the renewed certificate on both listeners")
    listeners = [e["listener"] for e in daemon.log_events() if e.get("event") == "tls.reloaded"]
    assert sorted(listeners) == ["admin", "public"]


@pytest.fixture
def unix_daemon(daemon_factory: DaemonFactory, tmp_path: Path) -> tuple[Daemon, Path]:
    path = tmp_path / "run" / "admin.sock"
    path.parent.mkdir()
    daemon = daemon_factory(server={"admin_listen": f"unix:{path}"})
    return daemon, path


def test_admin_on_a_unix_socket_0660_and_a_clean_stop(unix_daemon: tuple[Daemon, Path]) -> None:
    daemon, path = unix_daemon
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a previous run's socket file, nobody listening
    stale.close()
    daemon.start()
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert over_unix(path, "GET", "/keysets/main/signing-key").status == 200
    assert over_unix(path, "GET", "/signing-key").status == 200  # the first keyset's
    assert over_unix(path, "GET", "/keysets/main/signing-key", token=False).status == 401
    assert over_unix(path, "POST", "/keysets/main/rotate").status == 200
    for target in PUBLIC_PATHS:
        assert over_unix(path, "GET", target).status == 404, target
    for method, target in ADMIN_PATHS:
        assert daemon.request(method, target, headers=BEARER).status == 404, target
    assert daemon.get("/.well-known/jwks.json").status == 200
    started = time.monotonic()
    assert daemon.stop(timeout=5) == 0
    assert time.monotonic() - started < 5
    assert not path.exists()


def test_the_admin_listener_binds_without_a_token_and_sighup_adds_one(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    path = tmp_path / "admin.sock"
    daemon = daemon_factory(server={"admin_listen": f"unix:{path}"}, admin=False).start()
    assert over_unix(path, "GET", "/keysets/main/signing-key").status == 404
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    config = daemon.config.read_text().replace(
        "[server]\n", f'[server]\nadmin_token_file = "{token_file}"\n'
    )
    daemon.config.write_text(config)
    daemon.send(signal.SIGHUP)

    wait_for(
        lambda: over_unix(path, "GET", "/keysets/main/signing-key").status == 200,
        20,
        "the admin endpoints after SIGHUP",
    )


def test_a_path_that_is_not_a_socket_is_refused(unix_daemon: tuple[Daemon, Path]) -> None:
    daemon, path = unix_daemon
    path.write_text("not a socket")
    daemon.start(wait=False)
    assert daemon.process is not None
    assert daemon.process.wait(30) == 2
    assert f"server.admin_listen: {path} exists and is not a socket" in daemon.log_text()
    assert path.read_text() == "not a socket"


def test_an_admin_port_in_use_is_refused(daemon_factory: DaemonFactory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = daemon_factory(server={"admin_listen": f"127.0.0.1:{port}"}).start(wait=False)
        assert daemon.process is not None
        assert daemon.process.wait(30) == 1
    text = daemon.log_text()
    assert f"cannot listen on 127.0.0.1:{port}" in text
    assert "server.admin_listen" in text


def test_ready_once_both_listeners_answer(unix_daemon: tuple[Daemon, Path], tmp_path: Path) -> None:
    daemon, path = unix_daemon
    notify = NotifySocket(str(tmp_path / "notify.sock"))
    try:
        daemon.env["NOTIFY_SOCKET"] = str(tmp_path / "notify.sock")
        daemon.start(wait=False)
        notify.receive_until("READY=1")
        assert over_unix(path, "GET", "/keysets/main/signing-key").status == 200
        assert daemon.get("/readyz").status == 200
        daemon.send(signal.SIGTERM)
        notify.receive_until("STOPPING=1")
        assert daemon.stop() == 0
    finally:
        notify.sock.close()


def test_a_socket_that_cannot_be_bound_is_one_line_naming_the_setting(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    path = tmp_path / "no-such-directory" / "admin.sock"
    server = {"admin_listen": f"unix:{path}"}
    # one line, whatever a library's backtrace settings ask
    daemon = daemon_factory(server=server, env={"RUST_BACKTRACE": "1"}).start(wait=False)
    assert daemon.process is not None
    # refused before binding, as check-config refuses it (tests/daemon/test_bind_errors.py)
    assert daemon.process.wait(30) == 2
    refusal = [line for line in daemon.log_text().splitlines() if "does not exist" in line]
    assert len(refusal) == 1
    assert refusal[0].endswith("or change server.admin_listen")
    assert "backtrace" not in daemon.log_text().lower()
