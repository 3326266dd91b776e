"""The raw RSGI/ASGI application: routing by hand, precomputed bodies, JSON errors.

    GET /.well-known/jwks.json                 JWKS of the first keyset
    GET /keysets/{name}/jwks.json              JWKS of a keyset
    GET /.well-known/openid-configuration      when the first keyset has an ``issuer``
    GET /healthz  /readyz  /metrics
    and the admin endpoints (see ``admin``) when ``server.admin_token_file`` is set.

No framework: a JWKS request costs a dict lookup, a float comparison, a header scan and one
``response_bytes`` call (about 2 µs of Python; see benchmarks/). Responses to GET also answer HEAD.
Request bodies are never read. Every error has a JSON body; an unexpected exception is logged
(its type, never its text) and answered with a bare 500.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote

from keyrotd.daemon import admin as admin_endpoints
from keyrotd.daemon.admin import Admin
from keyrotd.daemon.metrics import CONTENT_TYPE, Metrics
from keyrotd.daemon.responses import (
    GET,
    JSON,
    NO_STORE,
    Headers,
    Response,
    Scope,
    Send,
    error,
    etag_matches,
    not_allowed,
    not_found,
    respond,
)
from keyrotd.daemon.state import Board

if TYPE_CHECKING:
    from granian._granian import RSGIHTTPProtocol as HTTPProtocol
    from granian.rsgi import Scope as RSGIScope

log = logging.getLogger("keyrotd.daemon")


@dataclass(frozen=True)
class Options:
    """What a reload can change on the HTTP side."""

    max_age: int
    """Cap of the JWKS ``max-age`` (whole seconds of ``server.jwks_max_age``)."""
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
        *,
        public: bool = True,
    ) -> None:
        self.board = board
        # public=False: the admin listener's app, 404 but for the admin endpoints (the public
        # listener's app then runs without options.admin, so it answers 404 for those)
        self.public = public
        self.metrics = metrics
        self.options = options
        self.executor = executor
        self.alive = alive
        self.stopping = False
        self.plain: Final[dict[str, Callable[[], Response]]] = {
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/metrics": self.metrics_text,
            "/.well-known/openid-configuration": self.openid_configuration,
        }

    async def __call__(self, scope: Scope, receive: object, send: Send) -> None:
        """ASGI: what the tests and other servers can run."""
        if scope["type"] != "http":
            return
        response = await self.answer(scope)
        body = b"" if scope["method"] == "HEAD" else response.body
        start = {"type": "http.response.start", "status": response.status}
        await send({**start, "headers": response.headers})
        await send({"type": "http.response.body", "body": body})

    async def __rsgi__(self, scope: RSGIScope, protocol: HTTPProtocol) -> None:
        """RSGI, granian's own interface, which ``keyrotd run`` uses: the same answers as ASGI
        (its scope rebuilt as ASGI gives it), for less work per request than ASGI's messages."""
        if scope.proto != "http":
            return
        path = scope.path
        request = {
            "method": scope.method,
            "path": unquote(path) if "%" in path else path,
            "query_string": scope.query_string.encode("latin-1"),
            "headers": [
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()
            ],
        }
        response = await self.answer(request)
        body = b"" if scope.method == "HEAD" else response.body
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers]
        protocol.response_bytes(response.status, headers, body)

    async def answer(self, scope: Scope) -> Response:
        try:
            response = self.route(scope)
            if not isinstance(response, Response):
                response = await response
        except Exception as exc:
            log.error("HTTP %s %s failed: %s", scope["method"], scope["path"], type(exc).__name__)
            response = error(500, "internal error")
        return response

    def route(self, scope: Scope) -> Response | Awaitable[Response]:
        path: str = scope["path"]
        method: str = scope["method"]
        if not self.public:
            return self.admin_route(path, scope)
        if path == "/.well-known/jwks.json":
            order = self.board.snapshot.order
            return self.jwks(order[0], method, scope["headers"]) if order else not_found()
        if path.startswith("/keysets/"):
            parts = path.split("/")[2:]
            if len(parts) == 2 and parts[1] == "jwks.json":
                return self.jwks(parts[0], method, scope["headers"])
            return self.admin_route(path, scope)
        handler = self.plain.get(path)
        if handler is None:
            return not_found()
        return handler() if method in GET else not_allowed(GET)

    def admin_route(self, path: str, scope: Scope) -> Response | Awaitable[Response]:
        """The admin endpoints (404 for anything else, and for all without ``options.admin``)."""
        admin = self.options.admin
        if admin is None or not path.startswith("/keysets/"):
            return not_found()
        parts = path.split("/")[2:]
        found = admin_endpoints.route(admin, self.board, self.executor, parts, scope)
        return not_found() if found is None else found

    def jwks(self, name: str, method: str, headers: Headers) -> Response:
        if method not in GET:
            return not_allowed(GET)
        now = time.time()
        published = self.board.current(name, now)
        if published is None:
            if name in self.board.snapshot.order:
                return error(503, f"keyset {name} is not loaded yet", (b"retry-after", b"1"))
            return error(404, f"unknown keyset {name}")
        max_age = published.max_age(now, self.options.max_age)
        cache = (b"cache-control", b"public, max-age=%d" % max_age)
        for key, value in headers:
            if key == b"if-none-match" and etag_matches(value, published.etag):
                return Response(304, [(b"etag", published.etag), cache])
        return Response(200, [JSON, (b"etag", published.etag), cache], published.body)

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
        """OpenID discovery for the first keyset, whose JWKS is ``/.well-known/jwks.json``."""
        order = self.board.snapshot.order
        published = self.board.current(order[0], time.time()) if order else None
        if published is None or not published.settings.issuer:
            return not_found()
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
