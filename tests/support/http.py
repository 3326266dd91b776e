"""HTTP for the tests (http.client only): one exchange, replies, a unix socket, ``metric()``."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """One request on ``connection``, which is closed afterwards."""
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the admin listener's ``unix:/PATH``)."""

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(str(self.socket_path))
        except BaseException:
            sock.close()  # a refused connection leaves no socket for a later test's GC to warn of
            raise
        self.sock = sock


class Gettable(Protocol):
    def get(self, path: str) -> Reply: ...


def metric(server: Gettable, series: str) -> float | None:
    """The sum of the ``/metrics`` samples of ``series``; None if it has none.

    ``series`` is either one labelled series (``name{keyset="main"}``), matched exactly, or a
    bare metric name, which matches every label set of it.
    """
    values = []
    for line in server.get("/metrics").body.decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name == series or ("{" not in series and name.startswith(series + "{")):
            values.append(float(value))
    return sum(values) if values else None


@contextmanager
def local_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free port of 127.0.0.1 in a thread; yields ``http://HOST:PORT``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
