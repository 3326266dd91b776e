"""CORS for browser verifiers (``server.cors_origins``, docs/http.md), on the JWKS and discovery
answers only: the admin endpoints never carry a CORS header.

Every header is built once per configuration (start and SIGHUP): an answer costs one scan of the
request headers for ``Origin`` and a set lookup. Every JWKS and discovery answer, 304s included,
carries ``Vary: Origin`` (a cache must not give one origin's answer to another);
``Access-Control-Allow-Origin`` names a listed origin, or is ``*`` when any origin is allowed.
An ``OPTIONS`` preflight is answered 204 with the allowed methods.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from keyrotd.daemon.responses import Headers, Response, header

ANY: Final = "*"
VARY: Final = (b"vary", b"Origin")
ALLOW_METHODS: Final = (b"access-control-allow-methods", b"GET, HEAD, OPTIONS")
ALLOW_HEADERS: Final = (b"access-control-allow-headers", b"If-None-Match")
"""What a browser asks to send on a conditional fetch (not a CORS-safelisted header)."""
MAX_AGE: Final = (b"access-control-max-age", b"86400")
EXPOSE: Final = (b"access-control-expose-headers", b"ETag")
_NONE: Final[tuple[tuple[bytes, bytes], ...]] = (VARY,)


@dataclass(frozen=True)
class Cors:
    """The answer headers for each allowed origin, precomputed."""

    allowed: dict[bytes, tuple[tuple[bytes, bytes], ...]]
    """Origin (as sent) → the headers of an answer to it."""
    anyone: tuple[tuple[bytes, bytes], ...] | None
    """The headers when every origin is allowed (``*``)."""

    @classmethod
    def of(cls, origins: Iterable[str]) -> Cors | None:
        """None when no origin is listed: no CORS header at all, as before."""
        listed = tuple(origins)
        if not listed:
            return None

        def answer(value: bytes) -> tuple[tuple[bytes, bytes], ...]:
            return ((b"access-control-allow-origin", value), EXPOSE, VARY)

        anyone = answer(b"*") if ANY in listed else None
        allowed = {o.encode("latin-1"): answer(o.encode("latin-1")) for o in listed if o != ANY}
        return cls(allowed, anyone)

    def headers(self, request: Headers) -> tuple[tuple[bytes, bytes], ...]:
        """The CORS headers of an answer to ``request``: ``Vary`` always, the origin if allowed."""
        if self.anyone is not None:
            return self.anyone
        origin = header(request, b"origin")
        return _NONE if origin is None else self.allowed.get(origin, _NONE)

    def preflight(self, request: Headers) -> Response:
        """204 to an ``OPTIONS`` request; allowed methods only for an allowed origin."""
        answer = self.headers(request)
        if answer is _NONE:
            return Response(204, [VARY])
        return Response(204, [*answer, ALLOW_METHODS, ALLOW_HEADERS, MAX_AGE])


def with_headers(response: Response, extra: tuple[tuple[bytes, bytes], ...]) -> Response:
    """``response`` with ``extra`` headers added."""
    return Response(response.status, [*response.headers, *extra], response.body)
