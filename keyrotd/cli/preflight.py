"""Every check ``keyrotd run`` makes before it binds or reads storage, shared with
``keyrotd check-config`` so that both refuse the same configuration with the same line
(docs/configuration.md): the secret files, the admin clients file, the TLS pair, the storage's
own settings (an AWS region, found as boto3 finds it) and the directory of an admin unix socket."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from keyrotd.clients import load_registry
from keyrotd.config import Settings, missing_socket_directory, split_admin_listen
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
    admin = split_admin_listen(server.admin_listen) if server.admin_listen else None
    if isinstance(admin, Path) and not admin.parent.is_dir():
        raise missing_socket_directory("server.admin_listen", admin)
    if settings.storage.type == "aws":
        # Opening reads nothing: it finds the region (settings, environment, AWS config files)
        # and refuses without one, exactly as `run` would.
        from keyrotd.storage import open_storage

        open_storage(settings.storage).close()
