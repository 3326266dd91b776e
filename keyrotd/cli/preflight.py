"""Every check ``keyrotd run`` makes before it binds or reads storage, shared with
``keyrotd check-config`` so that both refuse the same configuration with the same line
(docs/cli.md, ``check-config``): the secret files, the admin clients file, the TLS pair and where
the admin endpoints are served."""

from __future__ import annotations

from datetime import datetime

from keyrotd.clients import load_registry
from keyrotd.config import ServerSettings, Settings
from keyrotd.errors import ConfigError
from keyrotd.secretfiles import check_files


def preflight(settings: Settings, now: datetime) -> None:
    """Raise the first :class:`~keyrotd.errors.ConfigError` ``run`` would raise at start."""
    check_files(settings)
    server = settings.server
    check_admin_transport(server)
    if server.admin_clients_file is not None:
        load_registry(server.admin_token_file, server.admin_clients_file)
    if server.tls is not None:
        from keyrotd.daemon.tls import check_tls_pair  # cryptography's x509: only when TLS is on

        check_tls_pair(*server.tls, now)


def check_admin_transport(server: ServerSettings) -> None:
    """Refuse admin endpoints (bearer tokens, private keys) over plain HTTP off loopback, unless
    ``server.insecure_admin`` says so (``keyrotd run`` then warns at every start)."""
    address = server.plain_admin_address
    if address is None or server.insecure_admin:
        return
    setting = "server.admin_listen" if server.admin_listen else "server.listen"
    raise ConfigError(
        f"{setting} = {address!r} would serve the admin endpoints (bearer tokens, private keys) "
        "over plain HTTP to other hosts",
        'set server.tls_cert_file and server.tls_key_file, or admin_listen = "unix:/PATH" or a '
        "loopback address; server.insecure_admin = true allows it (behind a TLS proxy only)",
    )
