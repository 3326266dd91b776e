"""``keyrotd run``: the daemon (docs/http.md).

The heavy modules (uvloop, httptools, APScheduler, prometheus_client) load only here, when the
daemon runs: ``keyrotd --help`` and the operator commands never import them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keyrotd.config import Settings

__all__ = ["run_daemon"]


def run_daemon(settings: Settings, config_path: str | None) -> int:
    """Run until SIGTERM or SIGINT; 0 on a clean stop. Bad settings raise ``ConfigError``."""
    from keyrotd import logs

    logs.configure(settings.logging.format, settings.logging.level)
    from keyrotd.daemon.service import Daemon

    return Daemon(settings, config_path).run()
