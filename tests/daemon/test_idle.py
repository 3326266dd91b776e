"""Connections idle for longer than 60 s are closed, on every listener: a real daemon with the
public TCP listener and the admin unix socket, idle sockets left silent (slow: it waits the real
minute); and the :class:`IdleCloser` pass itself on real sockets of this process, with a short
timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyrotd.daemon.idle import IDLE_TIMEOUT, Activity, IdleCloser
from tests.support.daemon import TOKEN

from .conftest import DaemonFactory

SHORT = 0.5


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the peer closed ``sock`` (EOF or reset), None if it stayed open."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


@pytest.fixture
def tcp_pair() -> Iterator[tuple[int, socket.socket, socket.socket]]:
    """A listening port of this process, a client connected to it and the accepted socket."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted:
            yield server.getsockname()[1], client, accepted


def test_an_idle_tcp_connection_is_shut_down_and_a_busy_one_is_not(
    tcp_pair: tuple[int, socket.socket, socket.socket],
) -> None:
    port, client, accepted = tcp_pair
    closer = IdleCloser({port}, set(), timeout=SHORT)
    assert closer.check() == 0  # just opened
    for _ in range(4):  # busy: a byte each way more often than the timeout
        time.sleep(SHORT / 3)
        client.sendall(b"x")
        accepted.recv(1)
        accepted.sendall(b"y")
        client.recv(1)
        assert closer.check() == 0
    time.sleep(SHORT + 0.2)
    assert IdleCloser({port + 1}, set(), timeout=SHORT).check() == 0  # another port: not ours
    assert closer.check() == 1
    assert closed_within(client, 2) is not None


def test_an_idle_unix_connection_is_shut_down_once_the_listener_is_quiet(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "admin.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        accepted, _ = server.accept()
        with client, accepted:
            activity = Activity()
            closer = IdleCloser(set(), {path}, activity, timeout=SHORT)
            assert closer.check() == 0  # first seen now
            time.sleep(SHORT + 0.2)
            with activity.request():  # a request in progress somewhere on the listener
                assert closer.check() == 0
            assert closer.check() == 0  # it just answered
            time.sleep(SHORT + 0.2)
            assert closer.check() == 1
            assert closed_within(client, 2) is not None


def request_line(sock: socket.socket, path: str, token: str | None = None) -> None:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")


@pytest.mark.slow
def test_connections_idle_for_a_minute_are_closed_on_every_listener(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    admin_path = tmp_path / "admin.sock"
    daemon = daemon_factory(server={"admin_listen": f"unix:{admin_path}"}).start()
    silent = socket.create_connection(("127.0.0.1", daemon.port))
    kept_alive = socket.create_connection(("127.0.0.1", daemon.port))
    request_line(kept_alive, "/.well-known/jwks.json")
    busy = socket.create_connection(("127.0.0.1", daemon.port))
    http2 = socket.create_connection(("127.0.0.1", daemon.port))  # prior knowledge, no request
    http2.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    unix = socket.socket(socket.AF_UNIX)
    unix.connect(str(admin_path))
    request_line(unix, "/keysets/main/signing-key", TOKEN)
    stop = threading.Event()

    def keep_busy() -> None:  # a request every 20 s: never idle for a minute
        while not stop.wait(20):
            request_line(busy, "/healthz")

    worker = threading.Thread(target=keep_busy, daemon=True)
    worker.start()
    opened = time.monotonic()
    results: dict[str, float | None] = {}

    def watch(name: str, sock: socket.socket) -> None:
        took = closed_within(sock, IDLE_TIMEOUT + 15)
        results[name] = None if took is None else time.monotonic() - opened

    watchers = [
        threading.Thread(target=watch, args=(name, sock))
        for name, sock in (
            ("silent", silent),
            ("kept_alive", kept_alive),
            ("http2", http2),
            ("unix", unix),
        )
    ]
    try:
        for watcher in watchers:
            watcher.start()
        for watcher in watchers:
            watcher.join()
        stop.set()  # before the check below reads from the socket the worker writes to
        worker.join()
        busy_open = closed_within(busy, 0.1) is None
    finally:
        stop.set()
        worker.join()
        for sock in (silent, kept_alive, http2, busy, unix):
            sock.close()
    # granian itself closes a kept-alive HTTP/1 connection 30 s after its answer (its header
    # read timeout); one that sent nothing, or speaks HTTP/2, is closed by keyrotd at 60 s
    assert all(at is not None for at in results.values()), results
    assert IDLE_TIMEOUT - 1 <= (results["silent"] or 0) <= IDLE_TIMEOUT + 10, results
    assert IDLE_TIMEOUT - 1 <= (results["http2"] or 0) <= IDLE_TIMEOUT + 10, results
    assert busy_open
    assert daemon.get("/healthz").status == 200
