"""SIGTERM while ``Sign`` calls wait on a stalled custody: the daemon still exits 0 within 5 s.

The keyset's keys are in AWS KMS (moto's server) reached through a TCP relay the test controls;
once the keys exist the relay stops forwarding requests (a KMS that accepts connections and never
answers, as a network partition looks to botocore, which waits 10 s a read and retries). The API
server's calls are then stuck in a signature; stopping must not wait for them."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import make_daemon
from tests.support.moto import AWS_TEST_ENVIRONMENT, REGION, fake_aws_environment, moto_endpoint

grpc = pytest.importorskip("grpc")

from keyrotd.kubernetes.externaljwt.v1 import api_pb2 as v1  # noqa: E402
from keyrotd.kubernetes.externaljwt.v1 import api_pb2_grpc as v1_grpc  # noqa: E402


class Relay:
    """A TCP relay to ``upstream``; with ``stalled`` set it swallows what clients send."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.stalled = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.connections += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, request: bool) -> None:
        try:
            while data := source.recv(65536):
                if request and self.stalled.is_set():
                    continue  # a request nobody answers
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def relay() -> Iterator[Relay]:
    with fake_aws_environment(), moto_endpoint() as url:
        host, port = url.removeprefix("http://").split(":")
        relay = Relay((host, int(port)))
        try:
            yield relay
        finally:
            relay.close()


def test_sigterm_does_not_wait_for_signatures_stuck_in_custody(
    tmp_path: Path, relay: Relay
) -> None:
    socket_path = tmp_path / "signer.sock"
    daemon = make_daemon(
        tmp_path / "d",
        keysets=[
            {
                "name": "sa",
                "algorithm": "ES256",
                "custody": "aws-kms",
                "rotation_period": "1h",
                "publish_ahead": "30m",
                "token_lifetime": "1h",
            }
        ],
        custody={
            "aws_kms_region": REGION,
            "aws_kms_endpoint_url": f"http://127.0.0.1:{relay.port}",
        },
        env=AWS_TEST_ENVIRONMENT,
    )
    daemon.config.write_text(
        daemon.config.read_text() + f'\n[kubernetes]\nsigner_socket = "{socket_path}"\n'
    )
    daemon.start()
    channel = grpc.insecure_channel(f"unix:{socket_path}")
    try:
        stub = v1_grpc.ExternalJWTSignerStub(channel)
        claims = "eyJzdWIiOiJ4IiwiYXVkIjoiYXBpIn0"
        assert stub.Sign(v1.SignJWTRequest(claims=claims), timeout=30).signature  # KMS answers
        relay.stalled.set()
        calls = [stub.Sign.future(v1.SignJWTRequest(claims=claims)) for _ in range(12)]
        time.sleep(1.5)  # the calls are in KMS now, waiting for an answer that never comes
        assert not any(call.done() for call in calls)
        assert daemon.get("/keysets/sa/jwks.json", timeout=5).status == 200
        started = time.monotonic()
        assert daemon.stop(signal.SIGTERM, timeout=15) == 0
        took = time.monotonic() - started
        assert took < 5, f"SIGTERM took {took:.1f}s with signatures stuck in custody"
    finally:
        channel.close()
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.kill()
