"""An :class:`~keyrotd.daemon.http_server.HttpServer` in the test's own process, on a loop of
its own (a thread), with a handler the test writes: the server's own rules without a daemon."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvloop

from keyrotd.daemon.http_server import IDLE_TIMEOUT, Handler, HttpServer


@contextmanager
def serving(
    handler: Handler,
    unix_path: Path | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
) -> Iterator[tuple[int | str, HttpServer]]:
    """Serve ``handler`` on a loopback port (or ``unix_path``): that port or path, and the
    server. Stopped (and its loop closed) afterwards."""
    loop = uvloop.new_event_loop()  # as keyrotd run
    server = HttpServer(handler, None, idle_timeout=idle_timeout, sweep_every=0.1)
    if unix_path is None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        where: int | str = sock.getsockname()[1]
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(unix_path))
        where = str(unix_path)
    sock.listen()
    sock.setblocking(False)
    loop.run_until_complete(server.start(sock))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield where, server
    finally:
        loop.call_soon_threadsafe(server.stop)
        stopped = asyncio.run_coroutine_threadsafe(server.stopped(), loop)
        try:
            try:
                stopped.result(2)
            except TimeoutError:  # a request left half sent by the test: as the daemon does
                loop.call_soon_threadsafe(server.abort)
                stopped.result(3)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


def connect(where: int | str) -> socket.socket:
    """A client socket connected to ``where`` (a port on loopback, or a unix socket path)."""
    if isinstance(where, int):
        sock = socket.create_connection(("127.0.0.1", where))
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(where)
    sock.settimeout(5)
    return sock
