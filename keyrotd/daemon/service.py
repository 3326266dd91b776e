"""``keyrotd run``: one process, three parts sharing one :class:`Board`.

- the scheduler (APScheduler's background thread and its workers) reads and writes storage and
  publishes immutable snapshots to the board;
- granian's *embedded* server runs the raw app (RSGI) on this process's asyncio loop (main thread),
  reading the board without locks; admin writes go to a small thread pool;
- the loop also handles the signals (SIGTERM/SIGINT stop, SIGHUP reload) and sd_notify.

Start: load the admin clients (refuse bad files), open storage, start the scheduler (its first job
loads — and bootstraps — every keyset), bind. ``READY=1`` once the bind and the first load of
every keyset succeeded. Stop: ``STOPPING=1``, stop accepting, let the write in progress finish,
exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from granian.constants import Interfaces
from granian.log import LogLevels
from granian.server.embed import Server

from keyrotd import logs
from keyrotd.config import Settings, load_settings
from keyrotd.daemon.admin import Admin, Clients
from keyrotd.daemon.audit import Audit
from keyrotd.daemon.discovery import issuer_routes
from keyrotd.daemon.http import App, Options
from keyrotd.daemon.metrics import Metrics
from keyrotd.daemon.scheduling import Rotator
from keyrotd.daemon.state import Board
from keyrotd.daemon.systemd import Notifier, Readiness
from keyrotd.errors import KeyrotdError
from keyrotd.storage import open_storage

log = logging.getLogger("keyrotd.daemon")

STOP_TIMEOUT: Final = 4.0
"""Longest wait for the jobs in progress at shutdown (systemd and the contract allow 5 s)."""


class Daemon:
    def __init__(self, settings: Settings, config_path: str | None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.metrics = Metrics(lambda: self.board.snapshot)
        self.notifier = Notifier(on_drop=self.metrics.notify_dropped)
        self.readiness = Readiness(
            self.notifier, settings.server.listen, lambda: self.board.snapshot
        )
        self.board = Board(on_change=self.readiness.board_changed)
        self.storage = open_storage(settings.storage)
        self.rotator = Rotator(
            self.storage, self.board, self.metrics, settings.server.refresh_interval
        )
        self.admin_pool = ThreadPoolExecutor(2, thread_name_prefix="keyrotd-admin")
        self.clients = Clients.load(*admin_files(settings))
        self.audit = Audit(self.metrics, time.monotonic)
        self.app = App(
            self.board,
            self.metrics,
            self._options(settings),
            self.admin_pool,
            lambda: self.rotator.alive,
        )

    def _options(self, settings: Settings) -> Options:
        configured = any(path is not None for path in admin_files(settings))
        admin = Admin(self.clients, self.rotator.command, self.audit) if configured else None
        return Options(
            max_age=int(settings.server.jwks_max_age.total_seconds()),
            admin=admin,
            issuers=issuer_routes(settings.keysets),
        )

    def run(self) -> int:
        server = self.settings.server
        # until the loop takes over: remember a stop request, ignore a reload request
        early_stop: list[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda received, _frame: early_stop.append(received))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        http = Server(
            self.app,
            address=server.host,
            port=server.port,
            interface=Interfaces.RSGI,
            backlog=1024,
            log_level=LogLevels.error,
            websockets=False,
        )
        # granian's constructor re-runs logging.dictConfig: install keyrotd's handlers after it
        logs.configure(self.settings.logging.format, self.settings.logging.level)
        adopt_library_loggers()
        http.on_startup(self.readiness.bound)
        log.info(
            "keyrotd starting: %d keysets, listening on %s",
            len(self.settings.keysets),
            server.listen,
            extra={"event": "daemon.starting"},
        )
        check_port_free(server.host, server.port, server.listen)
        self.rotator.start(self.settings.keysets)
        clean = False
        try:
            asyncio.run(self._serve(http, early_stop))
            clean = True
        except RuntimeError as exc:  # granian reports a failed bind as a RuntimeError
            if self.readiness.is_bound:
                raise
            raise _cannot_listen(server.listen, str(exc)) from None
        finally:
            # The loop's handlers are gone: a second SIGTERM must not cut the last write short
            # (_stop_jobs is bounded by STOP_TIMEOUT anyway).
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_IGN)
            self.audit.flush()  # the refusals its timer had yet to report
            self._stop_jobs(clean)
        log.info("keyrotd stopped", extra={"event": "daemon.stopped"})
        return 0

    async def _serve(self, http: Server, early_stop: list[int]) -> None:
        loop = asyncio.get_running_loop()

        def stop(signum: int) -> None:
            log.info(
                "%s: stopping", signal.Signals(signum).name, extra={"event": "daemon.stopping"}
            )
            self.app.stopping = True
            self.notifier.notify("STOPPING=1", "STATUS=stopping")
            http.stop()  # type: ignore[no-untyped-call]

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop, signum)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: loop.run_in_executor(self.admin_pool, self.reload)
        )
        if early_stop:
            loop.call_soon(stop, early_stop[0])
        watchdog = loop.create_task(self._watchdog()) if self.notifier.watchdog_interval else None
        try:
            await http.serve()
        finally:
            if watchdog is not None:
                watchdog.cancel()

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval or 1.0
        while True:
            if self.rotator.alive:  # a dead scheduler stops the pings: systemd restarts us
                self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def _stop_jobs(self, clean: bool) -> None:
        """Wait (bounded) for the admin and scheduled writes in progress, then close storage."""
        done = threading.Event()

        def finish() -> None:
            self.admin_pool.shutdown(wait=True, cancel_futures=True)
            self.rotator.shutdown()
            self.storage.close()
            done.set()

        threading.Thread(target=finish, name="keyrotd-stop", daemon=True).start()
        if not done.wait(STOP_TIMEOUT) and clean:
            log.warning("a job is still running after %.0fs; exiting without it", STOP_TIMEOUT)
            for handler in logging.getLogger("keyrotd").handlers:
                handler.flush()
            os._exit(0)

    # -- SIGHUP ----------------------------------------------------------------------------
    def reload(self) -> None:
        """Load the configuration again; a bad one is logged and the running one kept."""
        self.readiness.reloading()
        try:
            new = load_settings(self.config_path)
            options = self._options(new)
        except Exception as exc:
            self.metrics.reloads.labels("failed").inc()
            log.error(
                "configuration reload failed, keeping the running one", extra={"error": str(exc)}
            )
            self.clients.reload(*admin_files(self.settings))  # re-read even so (CONTRACT 8)
            self.readiness.reloaded()
            return
        self.clients.reload(*admin_files(new))  # before the new options can enable the endpoints
        old = self.settings
        for part, what in (
            (old.storage != new.storage, "storage"),
            (old.server.listen != new.server.listen, "server.listen"),
        ):
            if part:
                log.warning("reload: a change of %s takes effect at the next restart", what)
        logs.configure(new.logging.format, new.logging.level)
        adopt_library_loggers()
        self.app.options = options
        self.rotator.configure(new.keysets, new.server.refresh_interval)
        self.settings = new
        self.metrics.reloads.labels("ok").inc()
        log.info(
            "configuration reloaded: %d keysets",
            len(new.keysets),
            extra={"event": "config.reloaded", "path": str(new.config_file or "")},
        )
        self.readiness.reloaded()


def admin_files(settings: Settings) -> tuple[Path | None, Path | None]:
    """``server.admin_token_file`` and ``server.admin_clients_file``: the admin clients."""
    return settings.server.admin_token_file, settings.server.admin_clients_file


def check_port_free(host: str, port: int, listen: str) -> None:
    """Refuse a port in use, even by another keyrotd: granian binds with SO_REUSEPORT, which
    would let two daemons share one port silently."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise _cannot_listen(listen, exc.strerror or str(exc)) from None


def _cannot_listen(listen: str, reason: str) -> KeyrotdError:
    return KeyrotdError(
        f"cannot listen on {listen} ({reason})",
        "stop the process using it (another keyrotd?) or change server.listen",
    )


def adopt_library_loggers() -> None:
    """Send granian's and APScheduler's problems through keyrotd's handler, one event a line."""
    handlers = logging.getLogger("keyrotd").handlers
    for name, level in (("_granian", logging.ERROR), ("apscheduler", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.handlers = list(handlers)
        logger.setLevel(level)
        logger.propagate = False
