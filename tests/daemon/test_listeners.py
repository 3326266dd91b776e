"""The listeners say they are bound only once they take connections (``READY=1`` waits for it).

A readiness sent before a socket listens would let a client that connects at once, as systemd's
dependants do, be refused.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import uvloop

from keyrotd.config import split_admin_listen
from keyrotd.daemon.listeners import ADMIN, PUBLIC, Listener, Listeners, make_listener
from tests.daemon.test_app_inprocess import write_config
from tests.support.app import running_app
from tests.support.daemon import free_port


def test_on_bound_runs_once_every_listener_takes_connections(tmp_path: Path) -> None:
    admin_socket = tmp_path / "admin.sock"
    port = free_port()
    config = write_config(tmp_path, admin_listen=f"unix:{admin_socket}")
    refused: list[str] = []
    told = threading.Event()
    with running_app(config) as running:
        assert running.admin is not None
        made = [
            make_listener(PUBLIC, f"127.0.0.1:{port}", running.public, None),
            make_listener(ADMIN, f"unix:{admin_socket}", running.admin, None),
        ]

        def on_bound() -> None:  # connect at once, as a client woken by READY=1 does
            for listener in made:
                if not takes_connections(listener):
                    refused.append(listener.name)
            told.set()
            loop.call_soon_threadsafe(listeners.stop)

        listeners = Listeners(made, on_bound=on_bound)
        loop = uvloop.new_event_loop()  # as keyrotd run
        try:
            loop.run_until_complete(asyncio.wait_for(listeners.serve(), timeout=30))
        finally:
            loop.close()
    assert told.is_set()
    assert refused == []


def takes_connections(listener: Listener) -> bool:
    """Whether a connection to ``listener`` succeeds now (closed at once, nothing sent)."""
    path = listener.socket_path
    target: str | tuple[str, int]
    if path is not None:
        family, target = socket.AF_UNIX, str(path)
    else:
        host, port = split_admin_listen(listener.address)  # type: ignore[misc]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        family, target = (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, port)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(target)
        except OSError:
            return False
    return True
