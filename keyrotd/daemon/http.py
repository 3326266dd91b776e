"""The raw ASGI application: routing by hand, precomputed bodies, JSON errors.

No framework: a JWKS request costs one dict lookup, one float comparison and two ``send`` calls
(see benchmarks/). Admin actions that write storage run in a worker thread, never on the loop.
Every error is a JSON body; an unexpected exception is logged (its type, not its text) and
answered with a bare 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs

from keyrotd.daemon.admin import Admin, outcome_json
from keyrotd.daemon.metrics import CONTENT_TYPE, Metrics
from keyrotd.daemon.state import Board, Published
from keyrotd.errors import KeyNotFoundError, KeyrotdError
from keyrotd.lifecycle import Command, Revoke, Rotate

log = logging.getLogger("keyrotd.daemon")

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON: Final = (b"content-type", b"application/json")
NO_STORE: Final = (b"cache-control", b"no-store")
MAX_BODY: Final = 64 * 1024
GET: Final = ("GET", "HEAD")
POST: Final = ("POST",)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Headers
    body: bytes = b""


def respond(status: int, data: object, *extra: tuple[bytes, bytes]) -> Response:
    return Response(status, [JSON, NO_STORE, *extra], json.dumps(data).encode())


def error(status: int, message: str, *extra: tuple[bytes, bytes]) -> Response:
    return respond(status, {"error": message}, *extra)


NOT_FOUND: Final = error(404, "not found")
UNAUTHORIZED: Final = error(
    401, "missing or invalid bearer token", (b"www-authenticate", b'Bearer realm="keyrotd"')
)


def etag_matches(if_none_match: bytes, etag: bytes) -> bool:
    """RFC 9110 weak comparison, as If-None-Match asks: ``*``, lists, ``W/`` forms."""
    for candidate in if_none_match.split(b","):
        candidate = candidate.strip()
        if candidate == b"*" or candidate.removeprefix(b"W/") == etag:
            return True
    return False


@dataclass(frozen=True)
class Options:
    """What a reload can change on the HTTP side."""

    max_age: int
    admin: Admin | None = None


class App:
    """The ASGI application (``Interfaces.ASGINL``: no lifespan)."""

    def __init__(
        self,
        board: Board,
        metrics: Metrics,
        options: Options,
        executor: Executor,
        alive: Callable[[], bool],
    ) -> None:
        self.board = board
        self.metrics = metrics
        self.options = options
        self.executor = executor
        self.alive = alive
        self.stopping = False

    async def __call__(self, scope: Scope, receive: object, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            response = self.route(scope)
            if not isinstance(response, Response):
                response = await response
        except Exception as exc:
            log.error("HTTP %s %s failed: %s", scope["method"], scope["path"], type(exc).__name__)
            response = error(500, "internal error")
        body = b"" if scope["method"] == "HEAD" else response.body
        await send(
            {"type": "http.response.start", "status": response.status, "headers": response.headers}
        )
        await send({"type": "http.response.body", "body": body})

    def route(self, scope: Scope) -> Response | Awaitable[Response]:
        path: str = scope["path"]
        method: str = scope["method"]
        headers: Headers = scope["headers"]
        if path == "/.well-known/jwks.json":
            order = self.board.snapshot.order
            return self.jwks(order[0], method, headers) if order else NOT_FOUND
        if path.startswith("/keysets/"):
            return self.keyset_route(path.split("/")[2:], scope)
        handler = self.plain.get(path)
        if handler is None:
            return NOT_FOUND
        if method not in GET:
            return _not_allowed(GET)
        return handler(self)

    def jwks(self, name: str, method: str, headers: Headers) -> Response:
        if method not in GET:
            return _not_allowed(GET)
        now = time.time()
        published = self.board.current(name, now)
        if published is None:
            return self._missing(name)
        cache = (
            b"cache-control",
            b"public, max-age=%d" % published.max_age(now, self.options.max_age),
        )
        for key, value in headers:
            if key == b"if-none-match" and etag_matches(value, published.etag):
                return Response(304, [(b"etag", published.etag), cache])
        return Response(200, [JSON, (b"etag", published.etag), cache], published.body)

    def keyset_route(self, parts: list[str], scope: Scope) -> Response | Awaitable[Response]:
        method, headers = scope["method"], scope["headers"]
        if len(parts) == 2 and parts[1] == "jwks.json":
            return self.jwks(parts[0], method, headers)
        admin = self.options.admin
        if admin is None:
            return NOT_FOUND
        name = parts[0]
        if len(parts) == 2 and parts[1] == "signing-key":
            allowed: tuple[str, ...] = GET
        elif (len(parts) == 2 and parts[1] == "rotate") or (
            len(parts) == 4 and parts[1] == "keys" and parts[3] == "revoke"
        ):
            allowed = POST
        else:
            return NOT_FOUND
        if method not in allowed:
            return _not_allowed(allowed)
        if not admin.authorized(_header(headers, b"authorization")):
            return UNAUTHORIZED
        if _too_large(headers):
            return error(413, f"request bodies are ignored; send at most {MAX_BODY} bytes")
        if name not in self.board.snapshot.order:
            return error(404, f"unknown keyset {name}")
        if parts[1] == "signing-key":
            return self.signing_key(name)
        if parts[1] == "rotate":
            now = (
                parse_qs(scope["query_string"].decode("latin-1")).get("now", ["false"])[-1].lower()
            )
            if now not in ("true", "false", "1", "0"):
                return error(400, "now must be true or false")
            return self.command(admin, name, Rotate(now=now in ("true", "1")))
        return self.command(admin, name, Revoke(parts[2]))

    def signing_key(self, name: str) -> Response:
        published = self.board.current(name, time.time())
        if published is None:
            return self._missing(name)
        try:
            body = published.signing_key()
        except LookupError as exc:
            return error(503, str(exc))
        return Response(200, [JSON, NO_STORE], body)

    async def command(self, admin: Admin, name: str, command: Command) -> Response:
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(self.executor, admin.run, name, command)
        except KeyNotFoundError as exc:
            return error(404, exc.message)
        except KeyrotdError as exc:
            return error(503, str(exc))
        return respond(200, outcome_json(name, outcome))

    def _missing(self, name: str) -> Response:
        if name in self.board.snapshot.order:
            return error(503, f"keyset {name} is not loaded yet", (b"retry-after", b"1"))
        return error(404, f"unknown keyset {name}")

    # -- plain GET endpoints ----------------------------------------------------------------
    def healthz(self) -> Response:
        if not self.alive():
            return respond(503, {"status": "failing", "reason": "the scheduler stopped"})
        return respond(200, {"status": "ok"})

    def readyz(self) -> Response:
        snap = self.board.snapshot
        if self.stopping:
            return respond(503, {"status": "stopping", "reasons": ["keyrotd is shutting down"]})
        if not snap.ready:
            return respond(503, {"status": "not ready", "reasons": snap.reasons()})
        return respond(200, {"status": "ready", "keysets": list(snap.order)})

    def metrics_text(self) -> Response:
        return Response(200, [(b"content-type", CONTENT_TYPE), NO_STORE], self.metrics.render())

    def openid_configuration(self) -> Response:
        order = self.board.snapshot.order
        published: Published | None = self.board.current(order[0], time.time()) if order else None
        if published is None or not published.settings.issuer:
            return NOT_FOUND
        settings = published.settings
        document = {
            "issuer": settings.issuer,
            "jwks_uri": settings.issuer.rstrip("/") + "/.well-known/jwks.json",
            "id_token_signing_alg_values_supported": [settings.algorithm],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
        }
        cache = (b"cache-control", b"public, max-age=%d" % self.options.max_age)
        return Response(200, [JSON, cache], json.dumps(document).encode())

    plain: Final[dict[str, Callable[[App], Response]]] = {
        "/healthz": healthz,
        "/readyz": readyz,
        "/metrics": metrics_text,
        "/.well-known/openid-configuration": openid_configuration,
    }


def _header(headers: Headers, name: bytes) -> bytes | None:
    return next((value for key, value in headers if key == name), None)


def _too_large(headers: Headers) -> bool:
    length = _header(headers, b"content-length")
    return length is not None and (not length.isdigit() or int(length) > MAX_BODY)


def _not_allowed(allowed: tuple[str, ...]) -> Response:
    return error(405, "method not allowed", (b"allow", ", ".join(allowed).encode()))
