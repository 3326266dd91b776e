"""The application: routing by hand, precomputed bodies, JSON errors.

    GET /.well-known/jwks.json                     JWKS of the first keyset
    GET /keysets/{name}/jwks.json                  JWKS of a keyset
    GET <issuer path>/.well-known/openid-configuration   per keyset with an ``issuer``
    GET <issuer path>/.well-known/jwks.json        that keyset's JWKS (see ``discovery``)
    GET /healthz  /readyz  /metrics
    GET /signing-key   POST /sign                  the first keyset's (admin)
    GET /status                                    the status page (admin, ``status_page``)
    and the admin endpoints (see ``admin``) when ``server.admin_token_file`` or
    ``server.admin_clients_file`` is set.

No framework: a JWKS request costs a dict lookup, a float comparison and a header scan, answered
in place on the loop (a few µs of Python; docs/benchmarks.md, "HTTP hot paths").
Responses to GET also answer HEAD (``http_server`` leaves the body out).
Request bodies are used only by ``POST .../sign`` (``responses.read_body``, at most 64 KiB).
Every error has a JSON body; an unexpected exception is logged (its type, never its text) and
answered with a bare 500.
A path whose segment holds an encoded
``/`` (``%2F``) is answered 400 on every route: the server decodes ``path``, so only
``raw_path`` (as sent) tells ``/keysets/a%2Fsigning-key`` from ``/keysets/a/signing-key``
(docs/http.md, "Encoded slashes").
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Final

from keyrotd.daemon import admin as admin_endpoints
from keyrotd.daemon import status_page
from keyrotd.daemon.admin import Admin
from keyrotd.daemon.cors import Cors, with_headers
from keyrotd.daemon.discovery import Discovery, Route
from keyrotd.daemon.metrics import CONTENT_TYPE, HTTP_BUCKETS, HttpStats, Metrics, RouteStats
from keyrotd.daemon.responses import (
    GET,
    NO_STORE,
    Headers,
    Response,
    Scope,
    cacheable,
    error,
    etag_matches,
    header,
    not_allowed,
    not_found,
    respond,
    unauthorized,
)
from keyrotd.daemon.state import Board

log = logging.getLogger("keyrotd.daemon")

FIRST_KEYSET: Final = frozenset({"/signing-key", "/sign"})
"""Admin paths without a keyset: the first keyset's."""


_clock: Final = time.perf_counter
_KEYSET_ROUTES: Final = ("jwks.json", "signing-key", "rotate", "status", "sign")
"""The ``/keysets/{name}/X`` routes (an unknown X counts as ``other``)."""


class Routes:
    """Each request's route template and its counters (``metrics.HttpStats``), looked up
    without building a label: the templates and their counters are made once, here."""

    def __init__(self, stats: HttpStats, listener: str) -> None:
        def route(template: str) -> RouteStats:
            return stats.route(listener, template)

        self.exact = {
            path: route(path)
            for path in (
                "/.well-known/jwks.json",
                "/healthz",
                "/readyz",
                "/metrics",
                "/signing-key",
                "/status",
            )
        }
        self.keyset = {name: route(f"/keysets/{{name}}/{name}") for name in _KEYSET_ROUTES}
        self.revoke = route("/keysets/{name}/keys/{kid}/revoke")
        self.discovery = route("{issuer}/.well-known/openid-configuration")
        self.issuer_jwks = route("{issuer}/.well-known/jwks.json")
        self.other = route("other")

    def of(self, path: str, issuers: Mapping[str, Route]) -> RouteStats:
        found = self.exact.get(path)
        if found is not None:
            return found
        issued = issuers.get(path)
        if issued is not None:
            return self.discovery if isinstance(issued, Discovery) else self.issuer_jwks
        if path.startswith("/keysets/"):
            parts = path.split("/")
            if len(parts) == 4:
                return self.keyset.get(parts[3], self.other)
            if len(parts) == 6 and parts[3] == "keys" and parts[5] == "revoke":
                return self.revoke
        return self.other


@dataclass(frozen=True)
class Kept:
    """A keyset's JWKS answers for one ETag and max-age (without CORS): made once, answered to
    every request until either changes (each second, near a scheduled change)."""

    etag: bytes
    max_age: int
    ok: Response
    not_modified: Response

    @classmethod
    def of(cls, etag: bytes, max_age: int, body: bytes) -> Kept:
        ok = cacheable([], etag, max_age, body)
        not_modified = cacheable([(b"if-none-match", etag)], etag, max_age, body)
        return cls(etag, max_age, ok._replace(shared=True), not_modified._replace(shared=True))


@dataclass(frozen=True)
class Options:
    """What a reload can change on the HTTP side."""

    max_age: int
    """Cap of the JWKS ``max-age`` (whole seconds of ``server.jwks_max_age``)."""
    admin: Admin | None = None
    issuers: Mapping[str, Route] = field(default_factory=dict)
    """The issuer paths (``discovery.issuer_routes`` of the configuration)."""
    cors: Cors | None = None
    """``server.cors_origins`` for the JWKS and discovery answers (None: no CORS headers)."""


class App:
    """The application: :meth:`handle` answers one request (``http_server``'s scope)."""

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
        }
        self.routes = Routes(metrics.http, "public" if public else "admin")
        self._kept: dict[str, Kept] = {}
        """Each keyset's JWKS answers, by name (one entry a keyset: no key material)."""

    def handle(self, scope: Scope) -> Response | Awaitable[Response]:
        """One request (``http_server`` calls it on the loop): the answer itself when made
        without awaiting (every JWKS answer), else an awaitable of it. Counted either way."""
        began = _clock()
        try:
            response = self.route(scope)
        except Exception as exc:
            response = self.failed(scope, exc)
        if isinstance(response, Response):
            self.count(scope["path"], response.status, _clock() - began)
            return response
        return self._awaited(scope, response, began)

    async def _awaited(self, scope: Scope, answer: Awaitable[Response], began: float) -> Response:
        try:
            response = await answer
        except Exception as exc:
            response = self.failed(scope, exc)
        self.count(scope["path"], response.status, _clock() - began)
        return response

    @staticmethod
    def failed(scope: Scope, exc: Exception) -> Response:
        """An unexpected exception: logged (its type, never its text), answered a bare 500."""
        log.error(
            "HTTP %s %s failed: %s",
            scope["method"],
            scope["path"],
            type(exc).__name__,
            extra={"event": "http.failed"},
        )
        return error(500, "internal error")

    def count(self, path: str, status: int, elapsed: float) -> None:
        # RouteStats.count, inlined: this runs for every JWKS answer (benchmarks/http_jwks.py)
        stats = self.routes.exact.get(path) or self.routes.of(path, self.options.issuers)
        stats.codes[status // 100] += 1
        stats.buckets[bisect_left(HTTP_BUCKETS, elapsed)] += 1
        stats.total += elapsed

    def route(self, scope: Scope) -> Response | Awaitable[Response]:
        path: str = scope["path"]
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or b""
        if b"%2F" in raw_path or b"%2f" in raw_path:
            return error(400, "a path segment must not hold an encoded / (%2F)")
        if path == "/metrics":
            return self.metrics_text(scope) if method in GET else not_allowed(GET)
        if not self.public:
            return self.admin_route(path, scope)
        if path == "/.well-known/jwks.json":
            order = self.board.snapshot.order
            return self.jwks(order[0], method, scope["headers"]) if order else not_found()
        issued = self.options.issuers.get(path)
        if issued is not None:
            if isinstance(issued, Discovery):
                return self.discovery(issued, method, scope["headers"])
            return self.jwks(issued, method, scope["headers"])
        if path.startswith("/keysets/"):
            parts = path.split("/")[2:]
            if len(parts) == 2 and parts[1] == "jwks.json":
                return self.jwks(parts[0], method, scope["headers"])
            return self.admin_route(path, scope)
        if path in FIRST_KEYSET or path == "/status":  # the first keyset's; the status page
            return self.admin_route(path, scope)
        handler = self.plain.get(path)
        if handler is None:
            return not_found()
        return handler() if method in GET else not_allowed(GET)

    def admin_route(self, path: str, scope: Scope) -> Response | Awaitable[Response]:
        """The admin endpoints: ``/keysets/{name}/...`` and ``/signing-key`` (the first
        keyset's). 404 for anything else, and for all without ``options.admin``."""
        admin = self.options.admin
        if admin is None:
            return not_found()
        if path == "/status":
            return status_page.answer(admin, self.board, self.executor, scope)
        if path in FIRST_KEYSET:
            order = self.board.snapshot.order
            if not order:
                return not_found()
            parts = [order[0], path[1:]]
        elif path.startswith("/keysets/"):
            parts = path.split("/")[2:]
        else:
            return not_found()
        found = admin_endpoints.route(admin, self.board, self.executor, parts, scope)
        return not_found() if found is None else found

    def jwks(self, name: str, method: str, headers: Headers) -> Response:
        cors = self.options.cors
        if method not in GET:
            return not_allowed(GET) if cors is None else self.cross_origin(cors, method, headers)
        now = time.time()
        published = self.board.current(name, now)
        extra = () if cors is None else cors.headers(headers)
        if published is None:
            if name in self.board.snapshot.order:
                unloaded = error(503, f"keyset {name} is not loaded yet", (b"retry-after", b"1"))
                return with_headers(unloaded, extra)
            return with_headers(error(404, f"unknown keyset {name}"), extra)
        max_age = published.max_age(now, self.options.max_age)
        if cors is not None:
            return cacheable(headers, published.etag, max_age, published.body, extra)
        kept = self._kept.get(name)
        if kept is None or kept.etag != published.etag or kept.max_age != max_age:
            kept = self._kept[name] = Kept.of(published.etag, max_age, published.body)
        for key, value in headers:
            if key == b"if-none-match" and etag_matches(value, kept.etag):
                return kept.not_modified
        return kept.ok

    def discovery(self, document: Discovery, method: str, headers: Headers) -> Response:
        """A keyset's OpenID discovery document (configuration only: no keys needed)."""
        cors = self.options.cors
        if method not in GET:
            return not_allowed(GET) if cors is None else self.cross_origin(cors, method, headers)
        extra = () if cors is None else cors.headers(headers)
        return cacheable(headers, document.etag, self.options.max_age, document.body, extra)

    @staticmethod
    def cross_origin(cors: Cors, method: str, headers: Headers) -> Response:
        """A JWKS or discovery path asked with a method other than GET or HEAD, under CORS."""
        if method == "OPTIONS":
            return cors.preflight(headers)
        return with_headers(not_allowed((*GET, "OPTIONS")), cors.headers(headers))

    def healthz(self) -> Response:
        if not self.alive():
            return respond(503, {"status": "failing", "reason": "the scheduler stopped"})
        return respond(200, {"status": "ok"})

    def readyz(self) -> Response:
        """503 only while stopping or while some keyset has no JWKS to serve; a storage outage
        leaves it 200 with the keysets ``degraded``. Keyset names only: never a file, URL or
        error text (those are in the log and the systemd status)."""
        snap = self.board.snapshot
        keysets = list(snap.order)
        if self.stopping:
            return respond(503, {"status": "stopping", "keysets": keysets})
        degraded = snap.degraded()
        missing = snap.not_loaded()
        if missing:
            body = {"status": "not ready", "keysets": keysets, "not_loaded": missing}
            return respond(503, {**body, "degraded": degraded})
        return respond(200, {"status": "ready", "keysets": keysets, "degraded": degraded})

    def metrics_text(self, scope: Scope) -> Response:
        """Prometheus text. Admin client names only to a token with a ``status`` scope: on the
        public listener they are left out for anyone else (and always, when an admin listener
        exists); on the admin listener ``/metrics`` is for such a token alone (401 or 403)."""
        client = admin_endpoints.sees_client_names(self.options.admin, scope)
        if not self.public and client is None:
            admin = self.options.admin
            authenticated = admin is not None and admin.clients.registry.authenticate(
                header(scope["headers"], b"authorization")
            )
            if not authenticated:
                return unauthorized()
            return error(403, "/metrics here needs a token with a status scope")
        body = self.metrics.render(client_names=client is not None)
        return Response(200, [(b"content-type", CONTENT_TYPE), NO_STORE], body)
