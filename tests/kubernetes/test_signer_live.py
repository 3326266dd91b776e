"""keyrotd run serving the Kubernetes signer, seen from outside: an API server of 1.32-1.33
(v1alpha1) through a rotation, the ``data_timestamp`` of FetchKeys against the daemon's own record
of its last storage read, and clients that stall the socket while the HTTP listeners and SIGTERM
carry on (docs/kubernetes.md)."""

from __future__ import annotations

import signal
import socket
import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.kubernetes.apiserver import ApiServerKeyCache
from tests.support.daemon import Daemon, make_daemon
from tests.support.http import metric

pytest.importorskip("grpc")

FAST = {
    "rotation_period": "5s",
    "publish_ahead": "4s",
    "token_lifetime": "10m",
    "clock_skew": "0s",
    "verifier_cache": "0s",
}


@pytest.fixture
def signer_daemon(tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    socket_path = tmp_path / "signer.sock"
    daemon = make_daemon(
        tmp_path / "d",
        keysets=[{"name": "sa", "algorithm": "ES256", **FAST}],
        server={"jwks_max_age": "1s", "refresh_interval": "1s"},
    )
    daemon.config.write_text(
        daemon.config.read_text() + f'\n[kubernetes]\nsigner_socket = "{socket_path}"\n'
    )
    daemon.start()
    try:
        yield daemon, socket_path
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.stop()


def test_a_v1alpha1_api_server_through_a_rotation(signer_daemon: tuple[Daemon, Path]) -> None:
    daemon, socket_path = signer_daemon
    cache = ApiServerKeyCache(str(socket_path), version="v1alpha1")
    try:
        assert cache.metadata.max_token_expiration_seconds == 600
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:
            cache.sign_and_verify({"sub": "system:serviceaccount:kube-system:a", "aud": "api"})
            time.sleep(0.05)
    finally:
        cache.close()
    assert len(cache.tally.kids) >= 2, cache.tally  # a rotation at least
    assert cache.tally.rejected == [], cache.tally
    assert cache.tally.verified == cache.tally.signed > 50
    assert daemon.stop() == 0


def test_data_timestamp_is_the_last_successful_storage_read(
    signer_daemon: tuple[Daemon, Path],
) -> None:
    """Between two readings of the daemon's last-successful-read metric, FetchKeys says a time
    between them; it follows the refreshes (every second) and never goes back nor ahead."""
    daemon, socket_path = signer_daemon
    series = 'keyrotd_storage_last_success_timestamp_seconds{keyset="sa"}'
    cache = ApiServerKeyCache(str(socket_path))
    try:
        answered: list[datetime] = []
        for _ in range(12):
            before = metric(daemon, series)
            cache.fetch()
            answered.append(datetime.now(UTC))
            after = metric(daemon, series)
            assert before is not None and after is not None
            stamp = cache.timestamps[-1].timestamp()
            assert before - 0.001 <= stamp <= after + 0.001, (before, stamp, after)
            time.sleep(0.4)
    finally:
        cache.close()
    stamps = cache.timestamps
    assert stamps == sorted(stamps)  # never going back
    assert all(s <= a for s, a in zip(stamps[1:], answered, strict=True))  # never ahead
    assert (stamps[-1] - stamps[1]).total_seconds() >= 2  # it advances with the refreshes


# -- stalled clients -----------------------------------------------------------------------------


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream)
    return head + payload


def _literal(name: str, value: str) -> bytes:
    """HPACK: a literal header field without indexing, new name, no Huffman (lengths < 127)."""
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def _stalled_calls(socket_path: Path, calls: int) -> socket.socket:
    """A connection that tells the server it may send nothing (flow-control window 0), starts
    ``calls`` unary calls (FetchKeys and Sign) and never reads a byte."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(socket_path))
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    out += _frame(0x4, 0, 0, struct.pack(">HI", 0x4, 0))  # SETTINGS_INITIAL_WINDOW_SIZE = 0
    claims = b"eyJzdWIiOiJ4IiwiYXVkIjoiYXBpIn0"  # {"sub":"x","aud":"api"}
    for i in range(calls):
        method, message = ("FetchKeys", b"") if i % 2 else ("Sign", b"\x0a" + bytes([len(claims)]))
        message += claims if method == "Sign" else b""
        headers = b"".join(
            _literal(k, v)
            for k, v in [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", f"/v1.ExternalJWTSigner/{method}"),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
        )
        stream = 2 * i + 1
        out += _frame(0x1, 0x4, stream, headers)  # HEADERS, END_HEADERS
        out += _frame(0x0, 0x1, stream, b"\x00" + struct.pack(">I", len(message)) + message)
    conn.sendall(out)
    return conn


def test_stalled_grpc_clients_delay_neither_jwks_nor_sigterm(
    signer_daemon: tuple[Daemon, Path],
) -> None:
    daemon, socket_path = signer_daemon
    stalled = [_stalled_calls(socket_path, 40) for _ in range(30)]  # 1200 calls nobody reads
    for _ in range(20):  # and connections that never say anything at all
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        idle.connect(str(socket_path))
        stalled.append(idle)
    try:
        slowest = 0.0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            started = time.monotonic()
            assert daemon.get("/keysets/sa/jwks.json", timeout=5).status == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.05)
        assert slowest < 1.0, f"a JWKS answer took {slowest:.2f}s beside stalled gRPC clients"
        started = time.monotonic()
        assert daemon.stop(signal.SIGTERM, timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        for conn in stalled:
            conn.close()
