"""Connections idle for longer than 60 s are closed, on every listener: a real daemon with the
public TCP listener and the admin unix socket, idle sockets left silent (slow: it waits the real
minute); and the server's own rule on real sockets, with a short timeout."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest

from keyrotd.daemon.http_server import IDLE_TIMEOUT
from keyrotd.daemon.responses import Response, Scope
from tests.support.daemon import TOKEN
from tests.support.serving import connect, serving

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


def ok(scope: Scope) -> Response:
    return Response(200, [], b"ok")


@pytest.mark.parametrize("listener", ["tcp", "unix"])
def test_idle_and_slow_connections_are_closed_and_busy_ones_are_not(
    listener: str, tmp_path: Path
) -> None:
    unix_path = tmp_path / "s.sock" if listener == "unix" else None
    with serving(ok, unix_path, idle_timeout=SHORT) as (where, _):
        silent, kept_alive, slow, busy = (connect(where) for _ in range(4))
        request_line(kept_alive, "/")
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        deadline = time.monotonic() + SHORT * 3
        while time.monotonic() < deadline:  # a request every fifth of the timeout
            request_line(busy, "/")
            time.sleep(SHORT / 5)
        for sock in (silent, kept_alive, slow):
            assert closed_within(sock, 2) is not None
        request_line(busy, "/")  # still open
        for sock in (silent, kept_alive, slow, busy):
            sock.close()


def test_a_connection_awaiting_its_answer_is_not_idle() -> None:
    async def slow_answer(scope: Scope) -> Response:
        await asyncio.sleep(SHORT * 3)
        return Response(200, [], b"late")

    with serving(slow_answer, idle_timeout=SHORT) as (where, _), connect(where) as waiting:
        waiting.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        waiting.settimeout(SHORT * 6)
        assert waiting.recv(65536).startswith(b"HTTP/1.1 200")


def request_line(sock: socket.socket, path: str, token: str | None = None) -> None:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    sock.settimeout(5)
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
    # a connection that sent nothing, or nothing since its answer, is closed at 60 s; one
    # that speaks HTTP/2 (the listeners speak HTTP/1.1) is answered 400 and closed at once
    assert all(at is not None for at in results.values()), results
    assert IDLE_TIMEOUT - 1 <= (results["silent"] or 0) <= IDLE_TIMEOUT + 10, results
    assert IDLE_TIMEOUT - 1 <= (results["kept_alive"] or 0) <= IDLE_TIMEOUT + 10, results
    assert IDLE_TIMEOUT - 1 <= (results["unix"] or 0) <= IDLE_TIMEOUT + 10, results
    assert (results["http2"] or 0) < 5, results
    assert busy_open
    assert daemon.get("/healthz").status == 200
