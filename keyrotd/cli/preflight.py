"""Every check ``keyrotd run`` makes before it binds or reads storage, shared with
``keyrotd check-config`` so that both refuse the same configuration with the same line
(CONTRACT section 2): the secret files, the admin clients file and the TLS pair."""

from __future__ import annotations

from datetime import datetime

from keyrotd.clients import load_registry
from keyrotd.config import Settings
from keyrotd.secretfiles import check_files


def preflight(settings: Settings, now: datetime) -> None:
    """Raise the first :class:`~keyrotd.errors.ConfigError` ``run`` would raise at start."""
    check_files(settings)
    server = settings.server
    if server.admin_clients_file is not None:
        load_registry(server.admin_token_file, server.admin_clients_file)
    if server.tls is not None:
        from keyrotd.daemon.tls import check_tls_pair  # cryptography's x509: only when TLS is on

        check_tls_pair(*server.tls, now)
    if settings.storage.revision_file is not None:  # its directory must exist (G8)
        from keyrotd.storage.revision_file import RevisionFile

        RevisionFile(settings.storage.revision_file)
