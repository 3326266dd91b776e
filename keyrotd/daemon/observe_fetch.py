"""The observer's bounded GET: a JWKS URL fetched as a verifier would, its kids and cache lifetime.

Plain GET, no cache-busting; http(s) only, at most 3 redirects, 1 MiB, and a hard deadline: the
caller's ``timeout`` bounds the whole fetch, not each read (a server sending a byte a second never
trips a socket timeout). At the deadline a timer shuts the fetch's sockets down, which ends a read
blocked in any phase (connect, TLS handshake, headers, body); only a name lookup, which no socket
interrupts, can outlast it (tests/daemon/test_observe_slow.py).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from datetime import timedelta
from email.message import Message
from typing import IO, Any, Final

from keyrotd.observations import Answer

MAX_BODY: Final = 1024 * 1024
MAX_REDIRECTS: Final = 3
_CACHE_LIFETIME: Final = re.compile(r"(?:^|[\s,])(?:max-age|s-maxage)\s*=\s*\"?(\d+)", re.I)


class ObserveError(Exception):
    """One answer that does not count as a JWKS (the message names why, never the body)."""


class _AtMostThreeRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS


class _Sockets:
    """The sockets one fetch opened, shut down together when its deadline passes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.expired = False

    def connect(self, *args: Any, **kwargs: Any) -> socket.socket:
        """``socket.create_connection``, remembering the socket (shut at once if expired)."""
        sock = socket.create_connection(*args, **kwargs)
        with self._lock:
            self._open.append(sock)
            if self.expired:
                _shut(sock)
        return sock

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._open:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    """End every read and write on ``sock``, in any thread (the fetch closes it)."""
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _tracked(base: type[http.client.HTTPConnection], sockets: _Sockets) -> Callable[..., Any]:
    """A connection class of ``base`` whose sockets ``sockets`` opens."""

    def make(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
        connection = base(*args, **kwargs)
        connection._create_connection = sockets.connect  # type: ignore[attr-defined]
        return connection

    return make


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, sockets: _Sockets) -> None:
        super().__init__()
        self.sockets = sockets

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_tracked(http.client.HTTPConnection, self.sockets), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, sockets: _Sockets) -> None:
        super().__init__()
        self.sockets = sockets

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = _tracked(http.client.HTTPSConnection, self.sockets)
        return self.do_open(connection, req, context=self._context)  # type: ignore[attr-defined]


def _opener(sockets: _Sockets) -> urllib.request.OpenerDirector:
    """http(s) only: a redirect elsewhere (file:, ftp:) finds no handler and fails as
    unreachable; every connection's socket goes to ``sockets``."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        _HTTPHandler(sockets),
        _HTTPSHandler(sockets),
        urllib.request.HTTPDefaultErrorHandler(),
        _AtMostThreeRedirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def cache_lifetime(headers: Message) -> timedelta:
    """The longest ``max-age``/``s-maxage`` in ``Cache-Control``, as sent (0 without one)."""
    values = [
        int(v) for h in headers.get_all("Cache-Control") or () for v in _CACHE_LIFETIME.findall(h)
    ]
    return timedelta(seconds=max(values, default=0))


def fetch(url: str, timeout: float) -> Answer:
    """GET ``url`` as a verifier would, within ``timeout`` seconds in all; the kids it serves
    and the cache lifetime it sent."""
    request = urllib.request.Request(url, headers={"User-Agent": "keyrotd-observe"})  # noqa: S310
    sockets = _Sockets()
    deadline = threading.Timer(timeout, sockets.expire)
    deadline.daemon = True
    deadline.start()
    try:
        with _opener(sockets).open(request, timeout=timeout) as response:
            body = _read_bounded(response)
            lifetime = cache_lifetime(response.headers)
    except urllib.error.HTTPError as exc:
        raise ObserveError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        if sockets.expired:
            raise ObserveError(f"no complete answer within {timeout:g}s") from None
        reason = getattr(exc, "reason", exc)
        raise ObserveError(f"unreachable ({reason})") from None
    finally:
        deadline.cancel()
    if sockets.expired:  # cut short: what was read is not the answer
        raise ObserveError(f"no complete answer within {timeout:g}s")
    return Answer(_kids(body), lifetime)


def _read_bounded(response: IO[bytes]) -> bytes:
    body = response.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise ObserveError("answer larger than 1 MiB")
    return body


def _kids(body: bytes) -> frozenset[str]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ObserveError("not JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise ObserveError("not a JWKS (no keys array)")
    return frozenset(k["kid"] for k in keys if isinstance(k.get("kid"), str))
