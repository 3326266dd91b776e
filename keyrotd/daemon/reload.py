"""SIGHUP's parts that need no daemon: what a reload cannot apply, the TLS pair renewed.

``Daemon.reload`` (``service``) loads the configuration again (a bad one is logged, the running
one kept) and calls these. The admin clients and the TLS files are re-read even when the new
configuration is refused (docs/http.md; see ``admin`` and ``tls``). Changes of storage,
listeners or TLS on/off are logged as taking effect at the next restart.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from keyrotd.config import Settings
from keyrotd.daemon.listeners import Listeners
from keyrotd.daemon.tls import TlsCopies, TlsPair, check_tls_pair, tls_refused
from keyrotd.errors import KeyrotdError
from keyrotd.times import utc_now

log = logging.getLogger("keyrotd.daemon")


def restart_needed(old: Settings, new: Settings) -> None:
    """Log each change a reload cannot apply: it takes effect at the next restart."""
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


def renew_tls(
    files: tuple[Path, Path],
    served: TlsPair,
    copies: TlsCopies,
    listeners: Listeners,
    loop: asyncio.AbstractEventLoop,
) -> TlsPair:
    """Re-read the TLS ``files`` and serve a new pair that passes the checks; a broken one is
    logged and the ``served`` one kept. Returns the pair served from now on."""
    try:
        pair = check_tls_pair(*files, utc_now())
        if pair == served:
            return served
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
        return served
    for listener in listeners.tls:
        log.info(
            "TLS certificate renewed on the %s listener: %s",
            listener.name,
            pair.describe(),
            extra={"event": "tls.reloaded", "listener": listener.name},
        )
    return pair


def admin_files(settings: Settings) -> tuple[Path | None, Path | None]:
    """``server.admin_token_file`` and ``server.admin_clients_file``: the admin clients."""
    return settings.server.admin_token_file, settings.server.admin_clients_file


def adopt_library_loggers() -> None:
    """Send the event loop's (a transport's failure), APScheduler's and the AWS SDK's problems
    through keyrotd's handler, one event a line (``logs.LIBRARY_EVENTS``), never as plain
    text on stderr."""
    handlers = logging.getLogger("keyrotd").handlers
    for name, level in (
        ("asyncio", logging.ERROR),
        ("apscheduler", logging.WARNING),
        ("botocore", logging.WARNING),
        ("urllib3", logging.WARNING),
    ):
        logger = logging.getLogger(name)
        logger.handlers = list(handlers)
        logger.setLevel(level)
        logger.propagate = False
