"""The daemon's HTTP application in the test's own process: no listener, no subprocess.

- :func:`running_app` builds what ``keyrotd run`` serves from a configuration file: the real
  board, metrics, admin clients, audit and rotator (its scheduler started, storage written),
  and the public and admin apps over them, wired as ``keyrotd.daemon.service`` wires them.
- :func:`ask` sends one request to an app and returns its :class:`~tests.support.http.Reply`.

:func:`ask` is the one place that knows how the server calls the app (``App.handle`` with the
scope keyrotd/daemon/http_server.py builds); if that interface changes, only it changes. The
subprocess tests (tests/daemon/test_http.py, test_admin.py, test_scopes.py, ...) check the same
answers through a real listener.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from keyrotd.config import Settings, load_settings
from keyrotd.config.policy import rotate_times
from keyrotd.daemon.admin import Admin, Clients
from keyrotd.daemon.audit import Audit
from keyrotd.daemon.cors import Cors
from keyrotd.daemon.discovery import issuer_routes
from keyrotd.daemon.http import App, Options
from keyrotd.daemon.metrics import Metrics
from keyrotd.daemon.reload import admin_files
from keyrotd.daemon.responses import Response
from keyrotd.daemon.scheduling import Rotator
from keyrotd.daemon.state import Board
from keyrotd.storage import open_storage

from .http import Reply
from .waiting import wait_for

PEER = ("127.0.0.1", 40000)
"""The client address the requests come from (the audit log names it)."""


@dataclass
class Running:
    """The apps of one configuration and what they serve."""

    settings: Settings
    board: Board
    rotator: Rotator
    public: App
    admin: App | None
    """The admin listener's app, when ``server.admin_listen`` is set."""


@contextmanager
def running_app(config: Path, environ: Mapping[str, str] | None = None) -> Iterator[Running]:
    """The apps of ``config``, once every keyset is loaded (bounded wait); stopped afterwards."""
    settings = load_settings(str(config), dict(environ or {}))
    board = Board()
    metrics = Metrics(lambda: board.snapshot)
    storage = open_storage(settings.storage)
    rotator = Rotator(storage, board, metrics, settings.server.refresh_interval)
    pool = ThreadPoolExecutor(2, thread_name_prefix="test-admin")
    token_file, clients_file = admin_files(settings)
    admin = (
        None
        if token_file is None and clients_file is None
        else Admin(
            Clients.load(token_file, clients_file),
            rotator.command,
            Audit(metrics, time.monotonic),
            rotate_times={ks.name: rotate_times(settings.server, ks) for ks in settings.keysets},
        )
    )
    options = Options(
        max_age=int(settings.server.jwks_max_age.total_seconds()),
        admin=admin,
        issuers=issuer_routes(settings.keysets),
        cors=Cors.of(settings.server.cors_origins),
    )
    alive = lambda: rotator.alive  # noqa: E731
    if settings.server.admin_listen:
        public = App(board, metrics, dataclasses.replace(options, admin=None), pool, alive)
        admin_app: App | None = App(board, metrics, options, pool, alive, public=False)
    else:
        public, admin_app = App(board, metrics, options, pool, alive), None
    rotator.start(settings.keysets)
    try:
        wait_for(lambda: board.snapshot.ready, 15, "every keyset loaded")
        yield Running(settings, board, rotator, public, admin_app)
    finally:
        rotator.shutdown()
        pool.shutdown(wait=True)
        storage.close()


def ask(
    app: App,
    method: str,
    target: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> Reply:
    """One request (``target``: the path as sent, with its query) and the app's answer."""
    raw_path, _, query = target.partition("?")
    scope: dict[str, Any] = {
        "method": method,
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": PEER,
        "body": body,
    }

    async def answered() -> Response:
        answer = app.handle(scope)
        return answer if isinstance(answer, Response) else await answer

    response = asyncio.run(answered())
    answered_headers = {k.decode().lower(): v.decode() for k, v in response.headers}
    shown = b"" if method == "HEAD" else response.body  # the server leaves it out
    return Reply(response.status, answered_headers, shown)
