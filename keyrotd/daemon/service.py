"""``keyrotd run``: one process, three parts sharing one :class:`Board`.

- the scheduler (APScheduler's background thread and its workers) reads and writes storage and
  publishes immutable snapshots to the board;
- the HTTP listeners (``listeners``: the public one, and the admin one when
  ``server.admin_listen`` is set) parse and answer every request on this process's event loop
  (main thread, ``http_server``), reading the board without locks; admin writes go to a small
  thread pool;
- the loop also handles the signals (SIGTERM/SIGINT stop, SIGHUP reload) and sd_notify.

The loop is uvloop's (libuv): its transports and its TLS cost less per request than asyncio's
own (docs/benchmarks.md, "HTTP hot paths").

Start: check the TLS pair and load the admin clients (refuse bad files), open storage, start the
scheduler (its start-up pool, not a job each, loads — and bootstraps — every keyset), bind.
``READY=1`` once every listener is bound and the first load of every keyset succeeded. Stop:
``STOPPING=1``, stop accepting, let the write in progress finish, exit 0. SIGHUP runs
:meth:`Daemon.reload` on the admin pool: it re-reads the TLS files and the admin clients even
when the new configuration is refused (the parts that need no daemon are in ``reload``).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import functools
import logging
import os
import signal
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import uvloop

from keyrotd import logs
from keyrotd.cli.preflight import check_admin_transport
from keyrotd.config import Settings, load_settings
from keyrotd.config.kubernetes import signer_keyset
from keyrotd.config.policy import rotate_times
from keyrotd.custody import open_custody
from keyrotd.daemon.admin import Admin, Clients
from keyrotd.daemon.audit import Audit
from keyrotd.daemon.cors import Cors
from keyrotd.daemon.custody_calls import CustodyCalls
from keyrotd.daemon.discovery import issuer_routes
from keyrotd.daemon.http import App, Options
from keyrotd.daemon.listeners import ADMIN, PUBLIC, Listeners, make_listener
from keyrotd.daemon.metrics import Metrics
from keyrotd.daemon.reload import admin_files, adopt_library_loggers, renew_tls, restart_needed
from keyrotd.daemon.scheduling import Rotator
from keyrotd.daemon.signer_source import Signers
from keyrotd.daemon.state import Board
from keyrotd.daemon.systemd import Notifier, Readiness
from keyrotd.daemon.tls import TlsCopies, TlsPair, check_tls_pair, tls_refused
from keyrotd.errors import KeyrotdError
from keyrotd.storage import open_storage
from keyrotd.times import utc_now

log = logging.getLogger("keyrotd.daemon")

STOP_TIMEOUT: Final = 4.0
"""Longest wait for the jobs in progress at shutdown (systemd and the contract allow 5 s)."""


PR_SET_DUMPABLE: Final = 4


def make_non_dumpable() -> None:
    """No core file, and no ptrace or /proc/PID/mem by other processes of the same uid: the
    process holds private keys and tokens (systemd's ``LimitCORE=0`` only covers the first, and
    only under systemd). Linux only; elsewhere a warning."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        failed = libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0
    except (OSError, AttributeError):
        failed = True
    if failed:
        log.warning(
            "could not make the process non-dumpable (prctl PR_SET_DUMPABLE)",
            extra={"event": "daemon.dumpable"},
        )


class Daemon:
    def __init__(self, settings: Settings, config_path: str | None) -> None:
        make_non_dumpable()  # before any key or token is read
        self.settings = settings
        self.config_path = config_path
        self.tls_files = settings.server.tls
        """The TLS files it started with: they stay in use while a reload is refused."""
        self.tls_pair: TlsPair | None = (
            None if self.tls_files is None else check_tls_pair(*self.tls_files, utc_now())
        )
        self.tls_copies: TlsCopies | None = None
        self.listeners: Listeners | None = None
        self.signer_server: Any = None
        """The Kubernetes signer's gRPC server, when ``kubernetes.signer_socket`` is set."""
        self.reload_lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.metrics = Metrics(lambda: self.board.snapshot)
        self.notifier = Notifier(on_drop=self.metrics.notify_dropped)
        self.readiness = Readiness(
            self.notifier, settings.server.listen, lambda: self.board.snapshot
        )
        self.board = Board(on_change=self.readiness.board_changed)
        self.storage = open_storage(settings.storage, on_rollback=self.metrics.storage_rollback)
        self.rotator = Rotator(
            self.storage,
            self.board,
            self.metrics,
            settings.server.refresh_interval,
            replica=f"{socket.gethostname()} {settings.server.listen}",
            custody=functools.partial(open_custody, settings),
        )
        self.signers = Signers(self.board, self.rotator.custody, self.rotator.resync)
        self.custody_calls = CustodyCalls(8)
        """Signatures made in a token or KMS: off the event loop, beside the admin pool."""
        self.metrics.count_requests(getattr(self.storage, "backend", self.storage))
        self.admin_pool = ThreadPoolExecutor(2, thread_name_prefix="keyrotd-admin")
        self.clients = Clients.load(*admin_files(settings))
        self.audit = Audit(self.metrics, time.monotonic)
        public, admin = self.app_options(settings)
        alive = lambda: self.rotator.alive  # noqa: E731
        self.app = App(self.board, self.metrics, public, self.admin_pool, alive)
        self.admin_app = (
            None
            if admin is None
            else App(self.board, self.metrics, admin, self.admin_pool, alive, public=False)
        )

    def app_options(self, settings: Settings) -> tuple[Options, Options | None]:
        """The public app's options, and the admin app's when ``admin_listen`` is set."""
        configured = any(path is not None for path in admin_files(settings))
        run = self.rotator.command
        times = {ks.name: rotate_times(settings.server, ks) for ks in settings.keysets}
        admin = (
            Admin(
                self.clients,
                run,
                self.audit,
                self.where,
                self.signers,
                self.custody_calls,
                rotate_times=times,
            )
            if configured
            else None
        )
        listed = {keyset.name for keyset in settings.keysets}
        dropped = self.rotator.unconfigured.values()
        running = (*self.settings.keysets, *(runner.settings for runner in dropped))
        kept = [keyset for keyset in running if keyset.name not in listed]  # served till restart
        both = Options(
            max_age=int(settings.server.jwks_max_age.total_seconds()),
            admin=admin,
            issuers={**issuer_routes(kept), **issuer_routes(settings.keysets)},
            cors=Cors.of(settings.server.cors_origins),
        )
        if not settings.server.admin_listen:
            return both, None
        return dataclasses.replace(both, admin=None), both

    # -- SIGHUP ------------------------------------------------------------------------------
    def reload(self) -> None:
        """Load the configuration again (a bad one is logged and the running one kept), and the
        TLS pair in any case."""
        with self.reload_lock:  # SIGHUPs in quick succession: one reload after the other
            self.readiness.reloading()
            new = self._reload_settings()
            self._renew_tls(new or self.settings)
            self.readiness.reloaded()

    def _reload_settings(self) -> Settings | None:
        """The new settings in use, or None when refused (the admin clients re-read even so)."""
        try:
            new = load_settings(self.config_path)
            # a token must not enable plain HTTP admin off loopback
            check_admin_transport(new.server)
            public, admin = self.app_options(new)
        except Exception as exc:
            self.metrics.reloads.labels("failed").inc()
            log.error(
                "configuration reload failed, keeping the running one",
                extra={"event": "config.reload_failed", "error": str(exc)},
            )
            self.clients.reload(*admin_files(self.settings))  # even so (docs/http.md)
            return None
        self.clients.reload(*admin_files(new))  # before the new options can enable the endpoints
        restart_needed(self.settings, new)
        logs.configure(new.logging.format, new.logging.level)
        adopt_library_loggers()
        if (admin is None) == (self.admin_app is None):  # else: takes effect at the restart
            self.app.options = public
            if self.admin_app is not None and admin is not None:
                self.admin_app.options = admin
        self.rotator.configure(new.keysets, new.server.refresh_interval)
        self.settings = new
        self.metrics.reloads.labels("ok").inc()
        log.info(
            "configuration reloaded: %d keysets",
            len(new.keysets),
            extra={"event": "config.reloaded", "path": str(new.config_file or "")},
        )
        return new

    def _renew_tls(self, settings: Settings) -> None:
        """Re-read the TLS files (``settings``' while TLS stays on, else those it started with)."""
        copies, served, listeners, loop = self.tls_copies, self.tls_pair, self.listeners, self.loop
        if copies is None or served is None or loop is None or listeners is None:
            return
        files = settings.server.tls or self.tls_files
        assert files is not None  # TLS was on at the start: tls_pair is set
        self.tls_pair = renew_tls(files, served, copies, listeners, loop)

    def where(self, name: str) -> tuple[str, str | None]:
        """A keyset's storage location and the version last read (memory only: for status)."""
        runner = self.rotator.runners.get(name)
        return self.storage.location(name), None if runner is None else runner.manager.version

    def _listeners(self, tls: tuple[Path, Path] | None) -> Listeners:
        server = self.settings.server
        made = [make_listener(PUBLIC, server.listen, self.app, tls)]
        if self.admin_app is not None:
            made.append(make_listener(ADMIN, server.admin_listen, self.admin_app, tls))
        return Listeners(made, on_bound=self.readiness.bound)

    def run(self) -> int:
        # until the loop takes over: remember a stop request, ignore a reload request
        early_stop: list[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda received, _frame: early_stop.append(received))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        tls = None
        if self.tls_pair is not None:
            self.tls_copies = TlsCopies()
            tls = self.tls_copies.install(self.tls_pair)
        try:
            listeners = self._listeners(tls)
        except ssl.SSLError as exc:  # OpenSSL's own load of the (checked) copies
            self._close_tls()
            raise tls_refused(exc) from None
        adopt_library_loggers()
        addresses = " and ".join(f"{x.name} {x.address}" for x in listeners.all)
        log.info(
            "keyrotd starting: %d keysets, listening on %s%s",
            len(self.settings.keysets),
            addresses,
            " (HTTPS)" if tls else "",
            extra={"event": "daemon.starting"},
        )
        if self.settings.server.insecure_admin:
            log.warning(
                "server.insecure_admin = true: admin endpoints (bearer tokens, private keys) %s",
                f"are served over plain HTTP on {address}"
                if (address := self.settings.server.plain_admin_address)
                else "may be served over plain HTTP off loopback",
                extra={"event": "server.insecure_admin"},
            )
        try:
            listeners.check_free()
        except KeyrotdError:
            self._close_tls()
            raise
        self.listeners = listeners
        self.rotator.start(self.settings.keysets)
        watch = getattr(getattr(self.storage, "backend", self.storage), "watch", None)
        if callable(watch):  # a backend that hears of changes (postgres: LISTEN)
            watch(self.rotator.changed)
        self._start_signer()
        clean = False
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self._serve(listeners, early_stop))
            clean = True
        finally:
            # The loop's handlers are gone: a second SIGTERM must not cut the last write short
            # (_stop_jobs is bounded by STOP_TIMEOUT anyway).
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_IGN)
            self._stop_signer()
            self.audit.flush()  # the refusals its timer had yet to report
            self._close_tls()
            self._stop_jobs(clean)
        log.info("keyrotd stopped", extra={"event": "daemon.stopped"})
        return 0

    def _start_signer(self) -> None:
        """The Kubernetes ExternalJWTSigner on ``kubernetes.signer_socket``, when configured
        (grpcio loads only then). A change of these settings takes a restart."""
        keyset = signer_keyset(self.settings)
        socket_path = self.settings.kubernetes.signer_socket
        if keyset is None or socket_path is None:
            return
        from keyrotd.daemon.signer_source import BoardKeys
        from keyrotd.kubernetes.signer import Signer, serve

        source = BoardKeys(self.signers, keyset.name)
        signer = Signer(
            source,
            int(keyset.token_lifetime.total_seconds()),
            self.settings.server.jwks_max_age.total_seconds(),
            utc_now,
        )
        self.signer_server = serve(socket_path, signer)
        log.info(
            "serving the Kubernetes ExternalJWTSigner for keyset %s on %s",
            keyset.name,
            socket_path,
            extra={"event": "signer.serving", "keyset": keyset.name},
        )

    def _stop_signer(self) -> None:
        server, self.signer_server = self.signer_server, None
        if server is not None:
            server.stop(grace=1)  # returns at once; calls in progress get a second

    def _close_tls(self) -> None:
        if self.tls_copies is not None:
            self.tls_copies.close()

    async def _serve(self, listeners: Listeners, early_stop: list[int]) -> None:
        loop = self.loop = asyncio.get_running_loop()

        def stop(signum: int) -> None:
            log.info(
                "%s: stopping", signal.Signals(signum).name, extra={"event": "daemon.stopping"}
            )
            self.app.stopping = True
            self.notifier.notify("STOPPING=1", "STATUS=stopping")
            listeners.stop()
            self._stop_signer()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop, signum)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: loop.run_in_executor(self.admin_pool, self.reload)
        )
        if early_stop:
            loop.call_soon(stop, early_stop[0])
        watchdog = loop.create_task(self._watchdog()) if self.notifier.watchdog_interval else None
        try:
            await listeners.serve()
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
            log.warning(
                "a job is still running after %.0fs; exiting without it",
                STOP_TIMEOUT,
                extra={"event": "daemon.stop_timeout"},
            )
            for handler in logging.getLogger("keyrotd").handlers:
                handler.flush()
            os._exit(0)
