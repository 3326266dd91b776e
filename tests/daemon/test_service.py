"""Service life: sd_notify, signals, reload, storage failures, start-up refusals."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.config import render_config
from tests.support.daemon import Daemon
from tests.support.waiting import wait_for

from .conftest import DaemonFactory


class NotifySocket:
    """A datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def receive_until(self, field: str, timeout: float = 30.0) -> list[str]:
        """Receive until a new message holds ``field``; the messages received so far."""
        start = len(self.messages)

        def received() -> bool:
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())
            return any(field in message.splitlines() for message in self.messages[start:])

        wait_for(received, timeout, f"{field} on the notify socket", every=0)
        return self.messages


@pytest.fixture
def notify_path(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(str(tmp_path / "notify.sock"))
    yield sock
    sock.sock.close()


def test_sd_notify_ready_watchdog_and_stopping(
    daemon_factory: DaemonFactory, notify_path: NotifySocket, tmp_path: Path
) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
    daemon = daemon_factory(env=env).start(wait=False)
    notify_path.receive_until("READY=1")
    assert daemon.get("/readyz").status == 200  # READY=1 only once it is ready
    notify_path.receive_until("WATCHDOG=1", timeout=5)
    notify_path.receive_until("WATCHDOG=1", timeout=5)  # again: it keeps pinging
    daemon.send(signal.SIGHUP)
    notify_path.receive_until("RELOADING=1")
    notify_path.receive_until("READY=1")
    daemon.send(signal.SIGTERM)
    notify_path.receive_until("STOPPING=1")
    assert daemon.stop() == 0
    ready = next(m for m in notify_path.messages if "READY=1" in m)
    assert "STATUS=serving 1 keysets" in ready


def test_sd_notify_to_an_abstract_socket(daemon_factory: DaemonFactory) -> None:
    name = f"keyrotd-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = NotifySocket(b"\0" + name.encode())
    try:
        daemon = daemon_factory(env={"NOTIFY_SOCKET": "@" + name}).start(wait=False)
        sock.receive_until("READY=1")
        assert daemon.stop() == 0
        sock.receive_until("STOPPING=1")
    finally:
        sock.sock.close()


@pytest.mark.slow
def test_a_stalled_notify_socket_never_delays_the_jwks_nor_the_stop(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """A service manager that never reads ``$NOTIFY_SOCKET``: its queue fills within seconds
    (``net.unix.max_dgram_qlen`` datagrams: READY=1, a WATCHDOG=1 every second); then every
    further datagram is dropped and counted, and serving goes on."""
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stalled.bind(str(tmp_path / "stalled.sock"))  # never read
    env = {"NOTIFY_SOCKET": str(tmp_path / "stalled.sock"), "WATCHDOG_USEC": "2000000"}
    try:
        daemon = daemon_factory(env=env).start()
        slowest, answers = 0.0, 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            started = time.monotonic()
            reply = daemon.get("/.well-known/jwks.json", timeout=2)
            took = time.monotonic() - started
            assert reply.status == 200
            slowest, answers = max(slowest, took), answers + 1
            time.sleep(0.05)
        print(f"{answers} JWKS answers in 30 s, stalled notify socket: slowest {slowest:.3f}s")
        assert slowest < 0.1
        metrics = daemon.get("/metrics").body.decode()
        dropped = re.search(r"^keyrotd_notify_dropped_total (\S+)$", metrics, re.MULTILINE)
        assert dropped is not None and float(dropped[1]) >= 10, dropped  # 28 pings, 10 queued
        started = time.monotonic()
        assert daemon.stop(signal.SIGTERM, timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        stalled.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signals_exit_0_within_5_seconds(daemon: Daemon, signum: int) -> None:
    connection = socket.create_connection(("127.0.0.1", daemon.port))  # an idle keep-alive client
    try:
        started = time.monotonic()
        assert daemon.stop(signum, timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        connection.close()
    events = [e.get("event") for e in daemon.log_events()]
    assert events[-2:] == ["daemon.stopping", "daemon.stopped"]


def test_sighup_starts_a_keyset_added_to_the_file(daemon: Daemon) -> None:
    assert daemon.get("/keysets/extra/jwks.json").status == 404
    config = daemon.config.read_text()
    daemon.config.write_text(
        config + '[[keysets]]\nname = "extra"\nalgorithm = "EdDSA"\npublish_ahead = "1h"\n'
    )
    daemon.send(signal.SIGHUP)
    reply = daemon.wait_status("/keysets/extra/jwks.json", 200)
    assert reply.json()["keys"][0]["alg"] == "EdDSA"
    ready = {"status": "ready", "keysets": ["main", "extra"], "degraded": []}
    assert daemon.get("/readyz").json() == ready
    assert (daemon.data / "extra.json").exists()
    assert any(e.get("event") == "config.reloaded" for e in daemon.log_events())


def test_sighup_with_a_bad_config_keeps_the_running_one(daemon: Daemon) -> None:
    good = daemon.config.read_text()
    before = daemon.get("/.well-known/jwks.json").body
    daemon.config.write_text(good + "[server2]\n")
    daemon.send(signal.SIGHUP)
    wait_for(lambda: "configuration reload failed" in daemon.log_text(), 20, "the reload error")
    daemon.check_alive()
    assert daemon.get("/.well-known/jwks.json").body == before
    assert daemon.get("/readyz").status == 200
    assert (
        'keyrotd_config_reloads_total{result="failed"} 1.0' in daemon.get("/metrics").body.decode()
    )


def wait_readyz(daemon: Daemon, status: int, body: dict[str, object]) -> None:
    """Poll ``/readyz`` until it answers ``status`` with exactly ``body``."""

    def answered() -> bool:
        daemon.check_alive()
        reply = daemon.get("/readyz", timeout=2)
        return reply.status == status and reply.json() == body

    wait_for(answered, 20, f"/readyz to answer {status} {body}")


def test_storage_failure_keeps_the_jwks_served_and_readyz_200_degraded(daemon: Daemon) -> None:
    """A storage outage must not pull every replica out of a load balancer (docs/http.md): the
    JWKS is still served, so /readyz stays 200 and names the degraded keyset, never a file."""
    served = daemon.get("/.well-known/jwks.json")
    document = daemon.data / "main.json"
    aside = daemon.data / "main.json.aside"
    document.rename(aside)
    document.mkdir()  # reading it now fails (also as root, which chmod 000 would not stop)
    try:
        degraded = {"status": "ready", "keysets": ["main"], "degraded": ["main"]}
        wait_readyz(daemon, 200, degraded)
        assert str(daemon.data) not in daemon.get("/readyz").body.decode()
        again = daemon.get("/.well-known/jwks.json")
        assert again.status == 200 and again.body == served.body
        metrics = daemon.get("/metrics").body.decode()
        assert 'keyrotd_storage_up{keyset="main"} 0.0' in metrics
        assert 'keyrotd_storage_failures_total{keyset="main"} 0.0' not in metrics
        assert "keyrotd_ready 1.0" in metrics  # as /readyz: it serves every keyset
        assert str(document) in daemon.log_text()  # the detail is in the log
    finally:
        document.rmdir()
        aside.rename(document)
    wait_readyz(daemon, 200, {"status": "ready", "keysets": ["main"], "degraded": []})
    assert daemon.get("/.well-known/jwks.json").body == served.body


def test_a_vanished_document_is_not_recreated(daemon: Daemon) -> None:
    document = daemon.data / "main.json"
    kept = document.read_bytes()
    document.unlink()
    wait_readyz(daemon, 200, {"status": "ready", "keysets": ["main"], "degraded": ["main"]})
    assert "disappeared" in daemon.log_text()
    assert not document.exists()
    document.write_bytes(kept)
    document.chmod(0o600)
    wait_readyz(daemon, 200, {"status": "ready", "keysets": ["main"], "degraded": []})


def test_unreadable_storage_at_start_is_served_once_it_works(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory()
    daemon.data.mkdir(mode=0o700)
    (daemon.data / "main.json").mkdir()
    daemon.start(wait=False)
    daemon.wait_status("/readyz", 503, timeout=30)  # then the first read fails (not at once)
    wait_readyz(
        daemon,
        503,
        {"status": "not ready", "keysets": ["main"], "not_loaded": ["main"], "degraded": ["main"]},
    )
    assert daemon.get("/.well-known/jwks.json").status == 503
    (daemon.data / "main.json").rmdir()
    daemon.wait_ready()
    assert daemon.get("/.well-known/jwks.json").status == 200


def test_a_corrupt_store_at_start_logs_its_error_once_a_line(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory()
    daemon.data.mkdir(mode=0o700)
    document = daemon.data / "main.json"
    document.write_text("garbage\n")
    document.chmod(0o600)
    daemon.start(wait=False)
    wait_for(lambda: "storage read failed" in daemon.log_text(), 30, "the storage error")
    # the read may fail before the listener is up (they start side by side): the first answer
    answers: list[int] = []
    daemon.wait_for(lambda: _answered(daemon, "/readyz", answers), 20, "/readyz to answer")
    assert answers == [503]
    line = next(line for line in daemon.log_text().splitlines() if "storage read failed" in line)
    assert line.count("not valid JSON") == 1, line
    event = json.loads(line)
    assert event["message"] == "keyset main: storage read failed"
    assert event["keyset"] == "main"
    assert event["error"].startswith(f"{document}: it is not valid JSON")
    assert document.read_text() == "garbage\n"  # never overwritten


def _answered(daemon: Daemon, path: str, answers: list[int]) -> bool:
    """``GET path`` answered (its status appended to ``answers``); False if nothing listens yet."""
    try:
        answers.append(daemon.get(path, timeout=1).status)
    except OSError:
        return False
    return True


def test_a_port_in_use_is_refused(daemon: Daemon, daemon_factory: DaemonFactory) -> None:
    second = daemon_factory("second")
    second.config.write_text(
        second.config.read_text().replace(f"127.0.0.1:{second.port}", f"127.0.0.1:{daemon.port}")
    )
    second.start(wait=False)
    assert second.process is not None
    assert second.process.wait(30) == 1
    assert f"cannot listen on 127.0.0.1:{daemon.port}" in second.log_text()


def test_an_invalid_policy_refuses_the_start(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    server = {"refresh_interval": "1s", "jwks_max_age": "5s"}
    config.write_text(render_config({"server": server}, [{"name": "x", "publish_ahead": "3s"}]))
    result = subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "publish_ahead" in result.stderr


def test_help_does_not_import_the_daemon_libraries() -> None:
    code = (
        "import sys\n"
        "from keyrotd.cli import main\n"
        "assert main(['--help']) == 0\n"
        "heavy = {'httptools', 'apscheduler', 'prometheus_client', 'keyrotd.daemon'}\n"
        "heavy &= set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_restarted_daemon_serves_the_same_keys(daemon: Daemon) -> None:
    before = daemon.get("/.well-known/jwks.json").body
    assert daemon.stop() == 0
    daemon.start()
    assert daemon.get("/.well-known/jwks.json").body == before


def test_sigterm_during_an_admin_rotation_finishes_it_and_exits_0(
    daemon_factory: DaemonFactory,
) -> None:
    keyset = {"name": "big", "algorithm": "RS256", "publish_ahead": "1h"}
    daemon = daemon_factory(keysets=[keyset]).start()
    before = daemon.admin("GET", "/keysets/big/signing-key").json()["active"]["kid"]
    replies: list[object] = []

    def rotate() -> None:
        try:
            replies.append(daemon.admin("POST", "/keysets/big/rotate?now=true&force=true").status)
        except OSError as exc:  # the server may close the connection as it stops
            replies.append(exc)

    thread = threading.Thread(target=rotate)
    thread.start()
    time.sleep(0.05)  # the request is in: key generation and the write are under way
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=5) == 0
    assert time.monotonic() - started < 5
    thread.join(10)
    # the storage document is whole, and the daemon starts on it again
    daemon.start()
    after = daemon.admin("GET", "/keysets/big/signing-key").json()["active"]["kid"]
    rotated = any(
        e.get("event") == "key.activated" and e.get("kid") != before for e in daemon.log_events()
    )
    assert rotated and after != before  # the rotation in progress was finished


def test_a_failing_keyset_does_not_stop_the_others(daemon_factory: DaemonFactory) -> None:
    fast = {
        "algorithm": "ES256",
        "rotation_period": "3s",
        "publish_ahead": "2.5s",
        "verifier_cache": "1s",
    }
    daemon = daemon_factory(keysets=[{"name": "good", **fast}, {"name": "bad", **fast}]).start()
    (daemon.data / "bad.json").rename(daemon.data / "bad.aside")
    (daemon.data / "bad.json").mkdir()
    wait_readyz(daemon, 200, {"status": "ready", "keysets": ["good", "bad"], "degraded": ["bad"]})
    broken_at = len(daemon.log_events())

    def good_activated() -> bool:
        events = daemon.log_events()[broken_at:]
        return any(e.get("event") == "key.activated" and e["keyset"] == "good" for e in events)

    wait_for(good_activated, 20, "keyset good to rotate on")
    assert daemon.get("/keysets/bad/jwks.json").status == 200  # still served from memory


def test_a_second_sigterm_during_shutdown_still_exits_0(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory().start()
    daemon.send(signal.SIGTERM)
    for _ in range(20):  # keep signalling through the whole shutdown
        if daemon.process is None or daemon.process.poll() is not None:
            break
        daemon.send(signal.SIGTERM)
        time.sleep(0.01)
    assert daemon.stop() == 0
