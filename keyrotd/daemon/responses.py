"""HTTP responses of the daemon: bytes in, bytes out, JSON errors, conditional requests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import MutableMapping
from typing import Any, Final, NamedTuple

Scope = MutableMapping[str, Any]
Headers = list[tuple[bytes, bytes]]

JSON: Final = (b"content-type", b"application/json")
NO_STORE: Final = (b"cache-control", b"no-store")
MAX_BODY: Final = 64 * 1024
"""The largest request body read (``POST .../sign``); a request announcing more is refused (413),
and so is a longer body that announced nothing."""
GET: Final = ("GET", "HEAD")
POST: Final = ("POST",)


class Response(NamedTuple):
    """An answer: a tuple, as cheap to make as one."""

    status: int
    headers: Headers
    body: bytes = b""
    shared: bool = False
    """The same object answers many requests (a JWKS answer, kept by the app until it changes):
    the server may keep its encoding for as long as its ``Date`` header holds."""


def compact_json(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def strong_etag(body: bytes) -> bytes:
    """A strong ETag of ``body``: 128 bits of its SHA-256, quoted."""
    return b'"%s"' % hashlib.sha256(body).hexdigest()[:32].encode()


def cacheable(
    headers: Headers,
    etag: bytes,
    max_age: int,
    body: bytes,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> Response:
    """``body`` with its ETag and a public max-age; 304 when ``If-None-Match`` matches.
    ``extra``: more headers for both (CORS)."""
    cache = (b"cache-control", b"public, max-age=%d" % max_age)
    for key, value in headers:
        if key == b"if-none-match" and etag_matches(value, etag):
            return Response(304, [(b"etag", etag), cache, *extra])
    return Response(200, [JSON, (b"etag", etag), cache, *extra], body)


def respond(status: int, data: object, *extra: tuple[bytes, bytes]) -> Response:
    """A JSON response that no cache keeps."""
    return Response(status, [JSON, NO_STORE, *extra], json.dumps(data).encode())


def error(status: int, message: str, *extra: tuple[bytes, bytes]) -> Response:
    return respond(status, {"error": message}, *extra)


def not_found() -> Response:
    return error(404, "not found")


def not_allowed(allowed: tuple[str, ...]) -> Response:
    return error(405, "method not allowed", (b"allow", ", ".join(allowed).encode()))


def unauthorized() -> Response:
    return error(
        401, "missing or invalid bearer token", (b"www-authenticate", b'Bearer realm="keyrotd"')
    )


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case, as ASGI gives them)."""
    return next((value for key, value in headers if key == name), None)


def too_large(headers: Headers) -> bool:
    length = header(headers, b"content-length")
    return length is not None and (not length.isdigit() or int(length) > MAX_BODY)


def etag_matches(if_none_match: bytes, etag: bytes) -> bool:
    """RFC 9110 weak comparison, as If-None-Match asks: ``*``, lists, ``W/`` forms."""
    for candidate in if_none_match.split(b","):
        candidate = candidate.strip()
        if candidate == b"*" or candidate.removeprefix(b"W/") == etag:
            return True
    return False


def read_body(scope: Scope, limit: int = MAX_BODY) -> bytes | None:
    """The request body (``http_server`` reads it whole before the app is called); None when it
    is longer than ``limit`` bytes."""
    body: bytes = scope["body"]
    return None if len(body) > limit else body
