"""SIGHUP: load the configuration again (a bad one is logged, the running one kept), renew TLS.

The admin clients and the TLS files are re-read even when the new configuration is refused
(docs/http.md; see ``admin`` and ``tls``). Changes of storage, listeners or TLS on/off
are logged as taking effect at the next restart.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from keyrotd import logs
from keyrotd.cli.preflight import check_admin_transport
from keyrotd.config import Settings, load_settings
from keyrotd.daemon.tls import check_tls_pair, tls_refused
from keyrotd.errors import KeyrotdError
from keyrotd.times import utc_now

if TYPE_CHECKING:
    from keyrotd.daemon.service import Daemon

log = logging.getLogger("keyrotd.daemon")


def reload(daemon: Daemon) -> None:
    """Load the configuration again (a bad one is logged and the running one kept), and the
    TLS pair in any case."""
    with daemon.reload_lock:  # SIGHUPs in quick succession: one reload after the other
        daemon.readiness.reloading()
        new = reload_settings(daemon)
        renew_tls(daemon, new or daemon.settings)
        daemon.readiness.reloaded()


def reload_settings(daemon: Daemon) -> Settings | None:
    """The new settings in use, or None when refused (the admin clients re-read even so)."""
    try:
        new = load_settings(daemon.config_path)
        check_admin_transport(new.server)  # a token must not enable plain HTTP admin off loopback
        public, admin = daemon.app_options(new)
    except Exception as exc:
        daemon.metrics.reloads.labels("failed").inc()
        log.error(
            "configuration reload failed, keeping the running one",
            extra={"event": "config.reload_failed", "error": str(exc)},
        )
        daemon.clients.reload(*admin_files(daemon.settings))  # re-read even so (docs/http.md)
        return None
    daemon.clients.reload(*admin_files(new))  # before the new options can enable the endpoints
    old = daemon.settings
    for part, what in (
        (old.storage != new.storage, "storage"),
        (old.server.listen != new.server.listen, "server.listen"),
        (old.server.admin_listen != new.server.admin_listen, "server.admin_listen"),
        ((old.server.tls is None) != (new.server.tls is None), "TLS on or off"),
    ):
        if part:
            log.warning(
                "reload: a change of %s takes effect at the next restart",
                what,
                extra={"event": "config.restart_needed"},
            )
    logs.configure(new.logging.format, new.logging.level)
    adopt_library_loggers()
    if (admin is None) == (daemon.admin_app is None):  # else: takes effect at the restart
        daemon.app.options = public
        if daemon.admin_app is not None and admin is not None:
            daemon.admin_app.options = admin
    daemon.rotator.configure(new.keysets, new.server.refresh_interval)
    daemon.settings = new
    daemon.metrics.reloads.labels("ok").inc()
    log.info(
        "configuration reloaded: %d keysets",
        len(new.keysets),
        extra={"event": "config.reloaded", "path": str(new.config_file or "")},
    )
    return new


def renew_tls(daemon: Daemon, settings: Settings) -> None:
    """Re-read the TLS files (``settings``' while TLS stays on, else those it started with)
    and serve a new pair that passes the checks; a broken one is logged, the old one kept."""
    copies, served, listeners = daemon.tls_copies, daemon.tls_pair, daemon.listeners
    loop = daemon.loop
    if copies is None or served is None or loop is None or listeners is None:
        return
    files = settings.server.tls or daemon.tls_files
    assert files is not None  # TLS was on at the start: tls_pair is set
    try:
        pair = check_tls_pair(*files, utc_now())
        if pair == served:
            return
        listeners.renew_tls(*copies.install(pair), loop)
    except (KeyrotdError, ssl.SSLError) as exc:
        error = str(exc) if isinstance(exc, KeyrotdError) else str(tls_refused(exc))
        for listener in listeners.tls:
            log.error(
                "TLS reload failed on the %s listener, it keeps its certificate: %s",
                listener.name,
                error,
                extra={"event": "tls.reload_failed", "listener": listener.name, "error": error},
            )
        return
    daemon.tls_pair = pair
    for listener in listeners.tls:
        log.info(
            "TLS certificate renewed on the %s listener: %s",
            listener.name,
            pair.describe(),
            extra={"event": "tls.reloaded", "listener": listener.name},
        )


def admin_files(settings: Settings) -> tuple[Path | None, Path | None]:
    """``server.admin_token_file`` and ``server.admin_clients_file``: the admin clients."""
    return settings.server.admin_token_file, settings.server.admin_clients_file


def adopt_library_loggers() -> None:
    """Send granian's, APScheduler's and the AWS SDK's problems through keyrotd's handler, one
    event a line (``logs.LIBRARY_EVENTS``), never as plain text on stderr."""
    handlers = logging.getLogger("keyrotd").handlers
    for name, level in (
        ("_granian", logging.ERROR),
        ("apscheduler", logging.WARNING),
        ("botocore", logging.WARNING),
        ("urllib3", logging.WARNING),
    ):
        logger = logging.getLogger(name)
        logger.handlers = list(handlers)
        logger.setLevel(level)
        logger.propagate = False
