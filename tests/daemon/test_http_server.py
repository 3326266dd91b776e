"""The daemon's HTTP/1.1 server on its own (keyrotd/daemon/http_server.py): real sockets, a
handler written here. What the app answers is tested through real daemons elsewhere
(test_http.py, test_http_input.py, test_admin.py); this is what the connection does around it."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from keyrotd.daemon.http_server import MAX_BODY_READ, MAX_HEAD
from keyrotd.daemon.responses import Response, Scope
from tests.support.serving import connect, serving

seen: list[Scope] = []


def echo(scope: Scope) -> Response:
    """Answers at once with what it was asked."""
    seen.append(scope)
    body = b"%s %s %s %s" % (
        scope["method"].encode(),
        scope["raw_path"],
        scope["path"].encode(),
        scope["body"],
    )
    return Response(200, [(b"x-query", scope["query_string"] or b"-")], body)


async def later(scope: Scope) -> Response:
    """Answers after a while: an admin write, a signature in an HSM."""
    await asyncio.sleep(0.2)
    return Response(200, [], b"later " + scope["raw_path"])


def either(scope: Scope) -> Response | asyncio.Future[Response]:
    if scope["raw_path"].startswith(b"/slow"):
        return asyncio.ensure_future(later(scope))
    return echo(scope)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def answers(raw: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The answers in ``raw``, in order: (status, headers, body)."""
    found = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        headers = dict(line.split(b": ", 1) for line in lines)
        length = int(headers.get(b"content-length", b"0"))
        found.append((int(status_line.split()[1]), headers, raw[:length]))
        raw = raw[length:]
    return found


def test_pipelined_requests_are_answered_in_order_awaited_ones_included() -> None:
    with serving(either) as (port, _), connect(port) as client:
        client.sendall(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /slow1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /slow2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        got = answers(read_all(client))
    assert [body.split()[0:2] for _, _, body in got] == [
        [b"GET", b"/a"],
        [b"later", b"/slow1"],
        [b"GET", b"/b"],
        [b"later", b"/slow2"],
    ]
    assert got[-1][1][b"connection"] == b"close"


def test_keep_alive_follows_the_version_and_the_connection_header() -> None:
    with serving(echo) as (port, _):
        with connect(port) as client:  # HTTP/1.0: closed after the answer
            client.sendall(b"GET /x HTTP/1.0\r\n\r\n")
            ((status, headers, _),) = answers(read_all(client))
            assert status == 200 and headers[b"connection"] == b"close"
        with connect(port) as client:  # HTTP/1.1: kept
            client.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
            client.sendall(b"GET /y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            ((status, _, body),) = answers(read_all(client))
            assert status == 200 and body.split()[1] == b"/y"


def test_the_path_is_decoded_once_and_kept_as_sent_beside_it() -> None:
    with serving(echo) as (port, _), connect(port) as client:
        client.sendall(
            b"GET /m%61in/%2561?q=%C3%A9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        ((_, headers, body),) = answers(read_all(client))
    method, raw_path, path, _ = body.split(b" ")
    assert (method, raw_path, path) == (b"GET", b"/m%61in/%2561", b"/main/%61")
    assert headers[b"x-query"] == b"q=%C3%A9"


def test_bytes_outside_ascii_in_a_target_reach_the_app_percent_encoded() -> None:
    with serving(echo) as (port, _), connect(port) as client:
        target = "/keysets/é/rotate?now=é".encode()
        client.sendall(b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        ((status, headers, body),) = answers(read_all(client))
    assert status == 200
    assert body.split(b" ")[1:3] == [b"/keysets/%C3%A9/rotate", "/keysets/é/rotate".encode()]
    assert headers[b"x-query"] == b"now=%C3%A9"


def test_a_body_is_read_whole_chunked_or_not_and_expect_continue_is_answered() -> None:
    with serving(echo) as (port, _), connect(port) as client:
        client.sendall(
            b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert client.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.sendall(b"hello")
        first = client.recv(65536)
        client.sendall(
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
            b"\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        rest = read_all(client)
    assert answers(first)[0][2].endswith(b" hello")
    assert answers(rest)[0][2].endswith(b" abcde")


def test_head_gets_the_length_without_the_body_and_304_neither() -> None:
    def not_modified(scope: Scope) -> Response:
        if scope["path"] == "/304":
            return Response(304, [(b"etag", b'"e"')], b"")
        return Response(200, [], b"x" * 10)

    with serving(not_modified) as (port, _), connect(port) as client:
        client.sendall(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n")
        head = client.recv(65536)
        client.sendall(b"GET /304 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rest = read_all(client)
    assert b"content-length: 10\r\n" in head and head.endswith(b"\r\n\r\n")
    assert b"content-length" not in rest and rest.endswith(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 304 Not Modified\r\n")


def test_oversized_and_malformed_requests_are_refused_and_closed() -> None:
    refused = {
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n": 431,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_READ + 1): 413,
        b"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n": 400,
        "GET /é HTTP/1.1\r\nHost: x\r\n\r\n".encode(): 200,  # taken percent-encoded
        b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n": 400,  # decodes to no UTF-8
    }
    with serving(echo) as (port, _):
        for request, status in refused.items():
            with connect(port) as client:
                client.sendall(request)
                if status == 200:
                    assert client.recv(65536).startswith(b"HTTP/1.1 200")
                    continue
                raw = read_all(client)
                assert raw.startswith(b"HTTP/1.1 %d " % status), (request[:40], raw[:60])
                assert b"connection: close" in raw


def test_an_http2_client_is_told_in_http2_to_use_http_1_1() -> None:
    with serving(echo) as (port, _), connect(port) as client:
        client.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        frames = read_all(client)
    settings, goaway = frames[:9], frames[9:]
    assert settings == bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # an empty SETTINGS frame
    assert goaway[3] == 7 and int.from_bytes(goaway[-4:], "big") == 0xD  # HTTP_1_1_REQUIRED


def test_a_stop_closes_idle_connections_at_once_and_busy_ones_after_their_answer(
    tmp_path: Path,
) -> None:
    with serving(either, tmp_path / "s.sock") as (path, server), connect(path) as busy:
        idle = connect(path)
        idle.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.05)
        loop = server._server.get_loop()  # type: ignore[union-attr]
        loop.call_soon_threadsafe(server.stop)
        assert read_all(idle) == b""  # closed without an answer
        late = read_all(busy)
        assert late.startswith(b"HTTP/1.1 200") and late.endswith(b"later /slow")
        assert b"connection: close" in late
        idle.close()
