"""One slow observed URL holds no other keyset (docs/guarantees.md, "Slow URLs").

The slow server here answers a byte every 0.2 s: no single read waits long enough to trip a
socket timeout, so only a deadline on the whole fetch ends it. Before, the observer's fetches
shared four workers: four such URLs filled them for good, and another keyset's healthy URL then
failed "no answer in time" and its successor was held.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from keyrotd.daemon.observe_fetch import ObserveError, fetch
from tests.support.daemon import Daemon
from tests.support.http import metric

from .conftest import DaemonFactory

TRICKLE = 0.2
"""Seconds between two bytes of the slow server's answers."""
BODY = b'{"keys": []}' + b" " * 1000


class Trickle:
    """A local HTTP server answering every GET with a JWKS, one byte every ``TRICKLE`` seconds;
    it counts, per path, the connections open at once (the most ever seen)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.open: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.requests = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(connection,), daemon=True).start()

    def answer(self, connection: socket.socket) -> None:
        with connection:
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 8192:
                chunk = connection.recv(1024)
                if not chunk:
                    return
                request += chunk
            path = request.split(b" ")[1].decode()
            with self.lock:
                self.requests += 1
                self.open[path] = self.open.get(path, 0) + 1
                self.most[path] = max(self.most.get(path, 0), self.open[path])
            try:
                self.trickle(connection)
            finally:
                with self.lock:
                    self.open[path] -= 1

    def trickle(self, connection: socket.socket) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}"
        answer = head.encode() + b"\r\n\r\n" + BODY
        for index in range(len(answer)):
            if self.stopping.wait(TRICKLE) or closed(connection):
                return
            try:
                connection.sendall(answer[index : index + 1])
            except OSError:
                return

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()


def closed(connection: socket.socket) -> bool:
    """Whether the client closed its end (readable with nothing to read)."""
    readable, _, _ = select.select([connection], [], [], 0)
    return bool(readable) and not connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)


@pytest.fixture
def trickle() -> Iterator[Trickle]:
    server = Trickle()
    yield server
    server.close()


POLICY: dict[str, object] = {
    "algorithm": "ES256",
    "rotation_period": "6s",
    "publish_ahead": "3s",
    "token_lifetime": "2s",
    "clock_skew": "0s",
    "verifier_cache": "1s",
}


def active_kid(daemon: Daemon, keyset: str) -> str:
    reply = daemon.admin("GET", f"/keysets/{keyset}/signing-key")
    assert reply.status == 200
    body: dict[str, Any] = reply.json()
    return str(body["active"]["kid"])


@pytest.mark.slow
def test_a_slow_url_holds_no_other_keyset(daemon_factory: DaemonFactory, trickle: Trickle) -> None:
    slow_urls = [f"{trickle.base}/jwks-{n}.json" for n in range(4)]
    daemon = daemon_factory(
        keysets=[{"name": "slow", **POLICY, "observe": slow_urls}, {"name": "fast", **POLICY}]
    )
    healthy = f"{daemon.url}/keysets/fast/jwks.json"  # the daemon's own JWKS: no delay
    daemon.config.write_text(daemon.config.read_text() + f"observe = {json.dumps([healthy])}\n")
    started = time.monotonic()
    daemon.start()
    first = active_kid(daemon, "fast")

    # scheduled 6 s after the first key; confirmed a poll after its publication at 3 s
    daemon.wait_for(lambda: active_kid(daemon, "fast") != first, 20, "fast's successor", 0.2)
    switched = time.monotonic() - started
    events = daemon.log_events()
    failed = [e for e in events if e.get("event") == "observe.failed"]
    assert [e for e in failed if e["url"] == healthy] == []
    assert metric(daemon, f'keyrotd_observe_errors_total{{keyset="fast",url="{healthy}"}}') in (
        None,
        0.0,
    )
    assert switched < 6 + 5, f"fast's successor activated {switched:.1f}s after the start"

    # the slow URLs failed on the deadline, each fetched at most once at a time
    slow = [e for e in failed if e["url"] in slow_urls]
    assert slow and all("no complete answer within" in e["error"] for e in slow), slow
    assert trickle.requests >= len(slow_urls)
    assert max(trickle.most.values()) == 1, trickle.most


def test_a_fetch_ends_at_its_deadline_however_the_bytes_trickle(trickle: Trickle) -> None:
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fetch(f"{trickle.base}/jwks.json", timeout=1)
        except ObserveError as error:
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(1.5)  # a fetch that outlives it is left behind (a daemon thread) and fails here
    assert outcome, "the fetch is still running 1.5 s after its 1 s deadline"
    assert str(outcome[0]) == "no complete answer within 1s"
