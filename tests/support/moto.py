"""moto's ``ThreadedMotoServer`` on 127.0.0.1 (the one fake AWS) and its fake credentials.

:class:`MotoServer` listens on one fixed port, so that it can be stopped and started again at the
same URL. moto keeps its state in process-wide backends, not in the server object, so a server
started again holds every secret and version it held. Its werkzeug server closes the connection
after every answer, so a stopped server leaves no pooled connection behind: clients get
"connection refused" until it is back. The port is taken below the kernel's ephemeral range, so
that no outgoing connection can take it while the server is down.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import free_port

from .waiting import wait_for

REGION = "us-east-1"

AWS_TEST_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto's well-known fake credentials
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,  # never the developer's ~/.aws
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
AWS_VARIABLES_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_CA_BUNDLE",
)


@contextmanager
def fake_aws_environment() -> Iterator[None]:
    """moto's fake credentials and region in ``os.environ`` (restored afterwards)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in AWS_VARIABLES_TO_CLEAR:
            patch.delenv(name, raising=False)
        for name, value in AWS_TEST_ENVIRONMENT.items():
            patch.setenv(name, value)
        yield


def quiet_port() -> int:
    """A free local port below the ephemeral range (no outgoing connection will take it)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    if low <= 20000:
        return free_port()
    for _ in range(200):
        port = random.randrange(20000, low)
        if port_is_free(port):
            return port
    return free_port()


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class MotoServer:
    """moto's server on one port (fixed unless ``port=0``) that tests can stop and start again."""

    def __init__(self, port: int | None = None) -> None:
        self.port = quiet_port() if port is None else port
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        if self.port:  # ThreadedMotoServer.start waits forever if it cannot bind: check first.
            wait_for(lambda: port_is_free(self.port), 10, f"port {self.port} to be free")
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = int(self._server.get_host_and_port()[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@contextmanager
def moto_endpoint() -> Iterator[str]:
    """Run moto's server in a thread on a free local port; yields its URL."""
    server = MotoServer(port=0)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
