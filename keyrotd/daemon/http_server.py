"""HTTP/1.1 connections on the daemon's event loop: httptools parses, the app answers in place.

Each accepted connection is one :class:`Connection` (an asyncio protocol on uvloop's transports;
TLS is the standard library's ``ssl`` through those transports). The parser is httptools (llhttp,
node's parser: strict on framing, so a request smuggled through conflicting ``Content-Length`` /
``Transfer-Encoding`` is a parse error here, answered 400 and closed; an HTTP/2 preface gets
HTTP/2's GOAWAY with ``HTTP_1_1_REQUIRED``). The app gets one request at
a time per connection, with its whole body, as a small ASGI-shaped ``scope`` (``method``,
``path`` decoded once, ``raw_path`` as sent, ``query_string``, lower-case ``headers``,
``client``, ``body``), and answers a :class:`~keyrotd.daemon.responses.Response` at once (every
JWKS answer: nothing is scheduled, no task, no thread hop) or an awaitable of one.

- Keep-alive as HTTP/1.1 says (``Connection: close``, HTTP/1.0 even with keep-alive); pipelined
  requests are answered in order (a refusal too, after the answers before it): while an awaited
  answer is pending, or the client does not read its answers (the transport's buffer is full),
  parsing and reading pause, :data:`SLICE` bytes at most past that point. Nothing received after
  a closing request or a refusal reaches the app.
- Limits: :data:`MAX_HEAD` bytes of request line and headers (431; a header not yet ended
  counts too), :data:`MAX_BODY_READ` bytes of body (413, whatever the app's own limit below it),
  both answered and closed. Trailers of a chunked body are read, never taken as headers.
  ``Expect: 100-continue`` is answered ``100 Continue`` unless the body announced is too long.
- A connection with no request in progress and nothing received for :data:`IDLE_TIMEOUT`
  seconds is closed, and so is one whose request has not arrived whole within that time
  (a slow sender); :meth:`HttpServer.sweep` runs every :data:`SWEEP_EVERY` seconds. One closed
  that still has answers its client never read is dropped at the next sweep.
- HEAD gets the headers of the GET answer, ``Content-Length`` included, without the body;
  1xx, 204 and 304 answers carry neither.
- Stop: the listening socket closes, idle connections close at once, a connection with a
  request in progress closes after answering it.

docs/http.md ("Connections") describes what a client sees; docs/architecture.md why the daemon
serves HTTP itself.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Final
from urllib.parse import unquote_to_bytes

import httptools

from keyrotd.daemon.responses import Response, Scope

IDLE_TIMEOUT: Final = 60.0
"""Seconds a connection may stay idle (or take to send one request) before it is closed."""
SWEEP_EVERY: Final = 5.0
MAX_HEAD: Final = 64 * 1024
"""Request line and headers, in bytes."""
MAX_BODY_READ: Final = 1024 * 1024
"""The longest request body read at all; the app refuses above its own, smaller limits."""
TLS_HANDSHAKE_TIMEOUT: Final = 10.0
SLICE: Final = 4096
"""Bytes parsed at a time when more arrive at once: the most parsed past a pause."""

Handler = Callable[[Scope], "Response | Awaitable[Response]"]

_NO_BODY: Final = frozenset({204, 304})
_REASONS: Final = {status.value: status.phrase.encode() for status in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {}
_UNIX_PEER: Final = ("", 0)
"""The ``client`` of a unix-socket request (no address): the audit line says ``unix``."""
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_NON_ASCII: Final = re.compile(rb"[\x80-\xff]")
_WATCHED: Final = frozenset({b"content-length", b"expect", b"connection"})
_METHODS: Final = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")}
_FAILED: Final = Response(500, [], b"")


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))
    return line


class _Date:
    """The ``Date`` header, formatted once a second."""

    def __init__(self) -> None:
        self.second = 0
        self.line = b""

    def header(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = b"date: %s\r\n" % formatdate(now, usegmt=True).encode()
        return self.line


_date: Final = _Date()


class _Encoded:
    """The encodings of the shared answers (``Response.shared``) made this second (their
    ``Date`` header holds for it): a kept-alive GET of a JWKS is one dict lookup."""

    def __init__(self) -> None:
        self.second = 0
        self.by_id: dict[int, tuple[Response, bytes]] = {}

    def get(self, response: Response) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second, self.by_id = now, {}
        found = self.by_id.get(id(response))
        if found is not None and found[0] is response:
            return found[1]
        encoded = encode_response(response, head_only=False, keep_alive=True)
        self.by_id[id(response)] = (response, encoded)
        return encoded


def encode_response(response: Response, head_only: bool, keep_alive: bool) -> bytes:
    """Status line, headers (``content-length``, ``date``, ``connection: close`` added) and body."""
    status = response.status
    head = _STATUS_LINES.get(status) or _status_line(status)
    fields = b"".join([b"%s: %s\r\n" % field for field in response.headers])
    body = response.body
    if status in _NO_BODY or status < 200:
        length, body = b"", b""
    else:
        length = b"content-length: %d\r\n" % len(body)
        if head_only:
            body = b""
    close = b"" if keep_alive else b"connection: close\r\n"
    return b"%s%s%s%s%s\r\n%s" % (head, fields, length, _date.header(), close, body)


_encoded: Final = _Encoded()


def _refusal(status: int, message: str) -> bytes:
    body = b'{"error":"%s"}' % message.encode()
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    return encode_response(Response(status, headers, body), head_only=False, keep_alive=False)


_BAD_REQUEST: Final = _refusal(400, "malformed request")
_HEAD_TOO_LARGE: Final = _refusal(431, "request line and headers too large")
_BODY_TOO_LARGE: Final = _refusal(413, "request body too large")
_BAD_PATH: Final = _refusal(400, "the path is not valid UTF-8")
_HTTP2_PREFACE: Final = b"PRI * HTTP/2.0\r\n"
_HTTP2_GOAWAY: Final = (
    b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # SETTINGS, empty (a server's preface)
    b"\x00\x00\x08\x07\x00\x00\x00\x00\x00"  # GOAWAY: last stream 0, HTTP_1_1_REQUIRED
    b"\x00\x00\x00\x00\x00\x00\x00\x0d"
)
"""An HTTP/2 client (prior knowledge) is told, in HTTP/2 (RFC 9113 §5.4.1), to use HTTP/1.1."""


class HttpServer:
    """One listening socket and its connections; ``handler`` answers each request."""

    def __init__(
        self,
        handler: Handler,
        tls: ssl.SSLContext | None,
        idle_timeout: float = IDLE_TIMEOUT,
        sweep_every: float = SWEEP_EVERY,
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.idle_timeout = idle_timeout
        self.sweep_every = sweep_every
        self.connections: set[Connection] = set()
        self.closing = False
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._emptied: asyncio.Event | None = None
        self._listening = -1
        """The listening socket's descriptor (the server owns it)."""

    async def start(self, sock: socket.socket) -> None:
        """Serve on ``sock`` (bound and listening) from now on."""
        self._emptied = asyncio.Event()
        await self._serve(sock)
        self._sweeper = asyncio.get_running_loop().call_later(self.sweep_every, self.sweep)

    async def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._listening = sock.fileno()
        if sock.family == socket.AF_UNIX:
            self._server = await loop.create_unix_server(
                lambda: Connection(self), sock=sock, start_serving=True
            )
        else:
            self._server = await loop.create_server(
                lambda: Connection(self),
                sock=sock,
                ssl=self.tls,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if self.tls else None,
                start_serving=True,
            )

    def sweep(self) -> int:
        """Close the connections idle for ``idle_timeout`` seconds; the number closed."""
        now = time.monotonic()
        stale = [c for c in self.connections if c.idle_for(now) > self.idle_timeout]
        for connection in stale:
            if connection.closed:  # closed already: its answers were never read, drop it
                connection.abort()
            else:
                connection.close()
        if not self.closing:
            self._sweeper = asyncio.get_running_loop().call_later(self.sweep_every, self.sweep)
        return len(stale)

    def stop(self) -> None:
        """Stop accepting; close idle connections now, busy ones once answered."""
        if self.closing:
            return
        self.closing = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self.connections):
            connection.stop()
        self._check_emptied()

    async def stopped(self) -> None:
        """Return once :meth:`stop` was called and every connection closed (one accepted just
        before the stop included: its close runs on the loop's next turns)."""
        emptied = self._emptied
        assert emptied is not None, "start() first"
        while True:
            await emptied.wait()
            await asyncio.sleep(0.01)
            if not self.connections:
                return
            emptied.clear()

    def abort(self) -> None:
        """Drop the connections still open (a stop's grace has passed)."""
        for connection in list(self.connections):
            connection.abort()

    async def use_tls(self, context: ssl.SSLContext) -> None:
        """New connections get ``context``'s certificate: a second server starts on (a
        duplicate of) the listening socket, then the first stops accepting. Connections open
        keep the pair they began with."""
        old = self._server
        if old is None or self.closing:
            return
        duplicate = socket.socket(fileno=os.dup(self._listening))
        duplicate.setblocking(False)
        self.tls = context
        await self._serve(duplicate)
        old.close()

    def forget(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self._check_emptied()

    def _check_emptied(self) -> None:
        if self.closing and not self.connections and self._emptied is not None:
            self._emptied.set()


class Connection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.handler = server.handler
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client: tuple[str, int] = _UNIX_PEER
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.head_size = 0
        self.body_size = 0
        self.expect_continue = False
        self.connection_header = False
        """The request has a ``Connection`` header (its HTTP version is looked at then)."""
        self.at_request_line = True
        """The next data received begins with a request line (or the rest of one)."""
        self.in_head = False
        """A request line and headers are arriving."""
        self.wire = -1
        """Bytes of the request in progress received after the read it began in, its body
        excepted (-1: still in that read): a header, a trailer or chunk framing without end."""
        self.in_message = False
        self.message_began = 0.0
        self.last = time.monotonic()
        self.pending: list[tuple[Scope, bool]] = []
        """Complete requests not answered yet (pipelined behind an awaited answer)."""
        self.busy = False
        self.unparsed = b""
        """Received, not parsed yet: parsing paused (see the module docstring)."""
        self.final: bytes | None = None
        """A refusal due once the answers pending are written; then the connection closes."""
        self.write_paused = False
        self.closed = False
        self.eof = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = (str(peer[0]), int(peer[1]))
        self.server.connections.add(self)
        if self.server.closing:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.forget(self)

    def data_received(self, data: bytes) -> None:
        self.last = time.monotonic()
        if self.unparsed or len(data) > SLICE or self.closed or self.final is not None:
            self._feed(self.unparsed + data)
        else:
            self._parse(data)

    def _feed(self, data: bytes) -> None:
        """Parse ``data`` a slice at a time while nothing asks to pause; keep the rest."""
        self.unparsed = b""
        for start in range(0, len(data), SLICE):
            if self.closed or self.final is not None:
                return
            if self.busy or self.pending or self.write_paused:
                self.unparsed = data[start:]
                break
            self._parse(data[start : start + SLICE])
        self._reading()

    def _parse(self, data: bytes) -> None:
        body_before = self.body_size
        try:
            if self.at_request_line and not data.isascii():
                data = self._escaped_request_line(data)
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.refuse(b"")  # answer what came before it; nothing else on this one
        except httptools.HttpParserError as exc:  # a callback's _Refused arrives as its context
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self.refuse(refused.answer)
            elif data.startswith(_HTTP2_PREFACE):
                self.refuse(_HTTP2_GOAWAY)
            else:
                self.refuse(_BAD_REQUEST)
            return
        if self.in_message:  # a request spans reads: count what arrives, besides its body
            if self.wire < 0:  # the read it began in (its complete headers are counted)
                self.wire = 0
                return
            self.wire += len(data) - (self.body_size - body_before)
            if self.in_head and self.wire > MAX_HEAD:
                self.refuse(_HEAD_TOO_LARGE)  # a header not ended yet (httptools keeps it)
            elif self.wire > MAX_HEAD + MAX_BODY_READ:
                self.refuse(_BODY_TOO_LARGE)  # chunk framing or trailers without end

    def _escaped_request_line(self, data: bytes) -> bytes:
        """``data`` with the bytes outside ASCII of the request line it begins with
        percent-encoded, as a browser sends them (the parser refuses them raw; the app then
        refuses what it does not understand, with its own answer, audited)."""
        end = data.find(b"\n")
        line, rest = (data, b"") if end < 0 else (data[:end], data[end:])
        return _NON_ASCII.sub(lambda byte: b"%%%02X" % byte[0][0], line) + rest

    def eof_received(self) -> bool | None:
        """The client sent everything: answer what it asked first (plain TCP or unix keeps the
        half-open connection for that), then close."""
        self.eof = True
        if self.busy or self.pending or self.unparsed:
            return self.server.tls is None or None
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        self._reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.last = time.monotonic()  # the client reads: not idle
        self._proceed()

    # httptools callbacks (the hot path: every request runs them)

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []
        self.head_size = 0
        self.body_size = 0
        self.expect_continue = False
        self.in_message = self.in_head = True
        self.wire = -1
        self.message_began = self.last

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD:
            raise _Refused(_HEAD_TOO_LARGE)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.at_request_line = False  # the line ended before the first header
        self.head_size += len(name) + len(value) + 3  # as sent, at least: "name:value\r\n"
        if self.head_size > MAX_HEAD:
            raise _Refused(_HEAD_TOO_LARGE)
        if not self.in_head:
            return  # a trailer (after a chunked body): never a header
        name = name.lower()
        if name in _WATCHED:
            self._watched(name, value)
        self.headers.append((name, value))

    def _watched(self, name: bytes, value: bytes) -> None:
        if name == b"expect":
            self.expect_continue = value.lower() == b"100-continue"
        elif name == b"connection":
            self.connection_header = True
        elif value.strip().isdigit() and int(value) > MAX_BODY_READ:  # content-length
            raise _Refused(_BODY_TOO_LARGE)

    def on_headers_complete(self) -> None:
        self.at_request_line = self.in_head = False
        if self.expect_continue:
            self.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > MAX_BODY_READ:
            raise _Refused(_BODY_TOO_LARGE)
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.at_request_line = True
        keep_alive = self.parser.should_keep_alive() and not self.server.closing
        if self.connection_header:
            self.connection_header = False
            if keep_alive and self.parser.get_http_version() == "1.0":
                # its keep-alive needs an answer saying so; this one says close (RFC 9112 §9.3)
                keep_alive = False
        if self.closed or self.final is not None:
            return  # after a closing request or a refusal: never run
        scope = self.scope()
        if scope is None:
            raise _Refused(_BAD_PATH)  # the parser stops here
        if self.busy or self.pending or self.write_paused:
            self.pending.append((scope, keep_alive))
            self._reading()
        else:
            self.answer(scope, keep_alive)

    # answering

    def scope(self) -> Scope | None:
        """The request as the app reads it; None: a target that is not a valid path."""
        url = self.url
        if url[:1] == b"/":
            raw_path, _, query = url.partition(b"?")
        else:  # absolute form (http://host/path), or no path at all
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                return None
            raw_path, query = parsed.path or b"/", parsed.query or b""
        try:
            path = (unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path).decode()
        except UnicodeDecodeError:
            return None
        method = self.parser.get_method()
        return {
            "method": _METHODS.get(method) or method.decode("latin-1"),
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": self.headers,
            "client": self.client,
            "body": b"".join(self.body),
        }

    def answer(self, scope: Scope, keep_alive: bool) -> None:
        try:
            response = self.handler(scope)
        except Exception:  # the app answers its own failures; this is the last resort
            response = _FAILED
        if type(response) is Response:
            head_only = scope["method"] == "HEAD"
            if response.shared and keep_alive and not head_only:
                self.write(_encoded.get(response))
                return
            self.write(encode_response(response, head_only, keep_alive))
            if not keep_alive:
                self.pending_close()
            return
        self.busy = True
        self._reading()
        task = asyncio.ensure_future(response)  # type: ignore[arg-type]
        task.add_done_callback(lambda done: self._answered(done, scope, keep_alive))

    def _answered(self, done: asyncio.Future[Response], scope: Scope, keep_alive: bool) -> None:
        self.busy = False
        self.last = time.monotonic()
        failed = done.cancelled() or done.exception() is not None
        response = _FAILED if failed else done.result()
        keep_alive = keep_alive and not self.server.closing  # a stop came meanwhile
        if not self.closed:
            self.write(encode_response(response, scope["method"] == "HEAD", keep_alive))
            if not keep_alive:
                self.pending_close()
        self._proceed()

    def _proceed(self) -> None:
        """Answer what is pending, then parse what was kept, as far as the client reads."""
        while self.pending and not self.busy and not self.closed and not self.write_paused:
            scope, keep_alive = self.pending.pop(0)
            self.answer(scope, keep_alive)
        if not self.busy and not self.pending and not self.closed:
            if self.final is not None:
                self.write(self.final)
                self.close()
            elif self.unparsed and not self.write_paused:
                self._feed(self.unparsed)
            if self.eof and not self.busy and not self.pending and not self.unparsed:
                self.close()
        self._reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def refuse(self, answer: bytes) -> None:
        """Answer ``answer`` after the answers due (in order), then close; nothing more is read."""
        self.unparsed = b""
        if self.busy or self.pending:
            self.final = answer
            self._reading()
        else:
            self.write(answer)
            self.close()

    def pending_close(self) -> None:
        """Close once written; nothing more is read."""
        self.pending.clear()
        self.unparsed = b""
        self.close()

    def _reading(self) -> None:
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return
        waiting = self.busy or self.pending or self.write_paused or self.unparsed
        if waiting or self.final is not None:
            transport.pause_reading()
        else:
            transport.resume_reading()

    # idleness and stop

    def idle_for(self, now: float) -> float:
        if self.busy:  # answers pending and not busy: the client does not read them
            return 0.0
        if self.in_message:
            return now - self.message_began
        return now - self.last

    def stop(self) -> None:
        """The server stops: close now when nothing is in progress, else after answering."""
        if not self.busy and not self.pending and not self.in_message:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _Refused(Exception):
    """Raised in a parser callback: answer ``answer`` and close."""

    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self.answer = answer


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context: TLS 1.2 and above, HTTP/1.1 by ALPN, ``cert``/``key`` loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert, key)
    return context
