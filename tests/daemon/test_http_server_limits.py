"""The HTTP/1.1 server (keyrotd/daemon/http_server.py) against hostile or careless clients, on
real sockets: memory stays bounded, answers stay in order, nothing is run after a close."""

from __future__ import annotations

import concurrent.futures
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from keyrotd.daemon.http_server import MAX_BODY_READ, MAX_HEAD, HttpServer
from keyrotd.daemon.responses import Response, Scope
from tests.support.serving import connect, serving

from .test_http_server import answers, echo, either, read_all

T = TypeVar("T")


def on_loop(server: HttpServer, read: Callable[[], T]) -> T:
    """``read()`` run on the server's loop (its thread): the server's own state, read safely."""
    loop = server._server.get_loop()  # type: ignore[union-attr]
    found: concurrent.futures.Future[T] = concurrent.futures.Future()
    loop.call_soon_threadsafe(lambda: found.set_result(read()))
    return found.result(5)


def buffered(server: HttpServer) -> int:
    """Bytes of answers the server holds, not yet taken by the kernel."""
    return on_loop(
        server, lambda: sum(c.transport.get_write_buffer_size() for c in server.connections)
    )


def flood(sock: socket.socket, data: bytes, seconds: float) -> int:
    """Send as much of ``data`` as the peer takes within ``seconds``, never reading; bytes sent."""
    sock.setblocking(False)
    sent, end = 0, time.monotonic() + seconds
    while sent < len(data) and time.monotonic() < end:
        try:
            sent += sock.send(data[sent : sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)
    return sent


def big(scope: Scope) -> Response:
    return Response(200, [], b"x" * 16384)


def test_a_client_that_never_reads_its_answers_cannot_make_the_server_buffer_them() -> None:
    with serving(big) as (port, server), connect(port) as client:
        flood(client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20000, 1.0)
        deadline = time.monotonic() + 5
        while not buffered(server) and time.monotonic() < deadline:  # accepted and answering
            time.sleep(0.05)
        time.sleep(0.3)
        held = buffered(server)
        assert held > 0
    # the kernel's buffers take what they take; the server itself holds about one answer more
    # than the transport's high-water mark, not one for each request received
    assert held < 256 * 1024, held


def test_a_pipelined_flood_read_as_it_comes_is_answered_whole_and_in_order() -> None:
    count = 3000
    requests = b"".join(
        b"GET /%s%d HTTP/1.1\r\nHost: x\r\n\r\n" % (b"slow" if i % 1000 == 500 else b"", i)
        for i in range(count)
    )
    requests += b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with serving(either) as (port, _), connect(port) as client:
        sender = threading.Thread(target=client.sendall, args=(requests,))
        sender.start()
        got = answers(read_all(client))
        sender.join()
    paths = [body.split(b" ")[1] for _, _, body in got]
    expected = [b"/%s%d" % (b"slow" if i % 1000 == 500 else b"", i) for i in range(count)]
    assert paths == [*expected, b"/last"]


def test_a_connection_whose_answers_are_never_read_is_dropped_once_idle() -> None:
    def open_connections() -> int:
        return on_loop(server, lambda: len(server.connections))

    with serving(big, idle_timeout=0.5) as (port, server), connect(port) as client:
        flood(client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20000, 1.0)
        deadline = time.monotonic() + 5
        while not open_connections() and time.monotonic() < deadline:  # not accepted yet
            time.sleep(0.05)
        assert open_connections() == 1
        while open_connections() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert open_connections() == 0


def send_until_answered(client: socket.socket, chunk: int, most: int, pause: float) -> None:
    """Send ``a`` bytes, ``chunk`` at a time, up to ``most``, until the server answers; then
    give its answer 2 s to arrive."""
    for _ in range(most // chunk):
        client.sendall(b"a" * chunk)
        time.sleep(pause)
        if select.select([client], [], [], 0)[0]:
            break
    client.settimeout(2)


def test_a_header_that_never_ends_is_refused_once_too_large() -> None:
    with serving(either) as (port, _), connect(port) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ")
        send_until_answered(client, 4096, 4 * MAX_HEAD, pause=0.002)
        assert client.recv(65536).startswith(b"HTTP/1.1 431 ")


def test_trailers_that_never_end_are_refused() -> None:
    with serving(either) as (port, _), connect(port) as client:
        client.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-Trailer: "
        )
        send_until_answered(client, 16384, 2 * (MAX_HEAD + MAX_BODY_READ), pause=0.001)
        assert client.recv(65536).startswith(b"HTTP/1.1 413 ")


def test_a_refusal_behind_an_awaited_answer_comes_after_it() -> None:
    refused = {
        b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n": 400,  # not a path
        b"BLAH\r\n\r\n": 400,  # not HTTP
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_READ + 1): 413,
    }
    with serving(either) as (port, _):
        for request, status in refused.items():
            with connect(port) as client:
                client.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + request)
                got = answers(read_all(client))
            assert [(s, body) for s, _, body in got][:1] == [(200, b"later /slow")]
            assert [s for s, _, _ in got] == [200, status]


def test_an_upgrade_request_behind_an_awaited_answer_still_gets_that_answer() -> None:
    with serving(either) as (port, _), connect(port) as client:
        client.sendall(
            b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        )
        assert answers(read_all(client))[0][2] == b"later /slow"


def test_nothing_sent_after_a_closing_request_reaches_the_app() -> None:
    calls: list[bytes] = []

    def record(scope: Scope) -> Response:
        calls.append(scope["raw_path"])
        return Response(200, [], b"")

    closing = (
        b"POST /first HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"POST /%ff HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",  # refused: not a path
    )
    with serving(record) as (port, _):
        for first in closing:
            with connect(port) as client:
                second = b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                client.sendall(first + second)
                assert len(answers(read_all(client))) == 1
    assert calls == [b"/first"]


def test_trailers_are_not_taken_as_headers() -> None:
    seen: list[Scope] = []

    def record(scope: Scope) -> Response:
        seen.append(scope)
        return Response(200, [], b"")

    with serving(record) as (port, _), connect(port) as client:
        client.sendall(
            b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
            b"\r\n3\r\nabc\r\n0\r\nAuthorization: Bearer smuggled\r\n\r\n"
        )
        assert answers(read_all(client))[0][0] == 200
    assert seen[0]["body"] == b"abc"
    assert b"authorization" not in dict(seen[0]["headers"])


def test_an_http_1_0_client_asking_keep_alive_is_told_the_connection_closes() -> None:
    """An HTTP/1.0 client keeps a connection only when the answer says ``keep-alive``; one
    kept open without saying so leaves it waiting for the close (``ab -k``: a minute)."""
    with serving(echo) as (port, _), connect(port) as client:
        client.sendall(b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        client.settimeout(2)
        ((status, headers, _),) = answers(read_all(client))
    assert status == 200 and headers[b"connection"] == b"close"


def test_many_small_headers_count_as_the_bytes_they_take() -> None:
    """64 KiB of headers of a byte each are 16,000 headers kept: refused like any 64 KiB."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"a:\r\n" * (MAX_HEAD // 3) + b"\r\n"
    assert len(head) < 4 * MAX_HEAD
    with serving(echo) as (port, _), connect(port) as client:
        client.sendall(head)
        assert read_all(client).startswith(b"HTTP/1.1 431 ")
