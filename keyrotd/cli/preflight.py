"""Every check ``keyrotd run`` makes before it binds or reads storage, shared with
``keyrotd check-config`` so that both refuse the same configuration with the same line
(README.md, Configuration): the secret files, the admin clients file, the TLS pair, the storage's
own settings (an AWS region, found as boto3 finds it), the directory of an admin unix socket,
where the admin endpoints are served, custody and the Kubernetes signer's socket, and the size of
the JWKS and documents a policy makes (:mod:`keyrotd.config.capacity`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Final

from keyrotd.config import ServerSettings, Settings, missing_socket_directory, split_admin_listen
from keyrotd.config.capacity import MANY_KEYS, capacity
from keyrotd.config.kubernetes import check_signer_socket
from keyrotd.errors import ConfigError
from keyrotd.secretfiles import check_files
from keyrotd.storage.registry import chosen_backend


def preflight(settings: Settings, now: datetime) -> list[str]:
    """Raise the first :class:`~keyrotd.errors.ConfigError` ``run`` would raise at start; the
    warnings both give (one line each)."""
    check_files(settings)
    warnings = check_capacity(settings)
    check_signer_socket(settings)
    if any(keyset.custody != "storage" for keyset in settings.keysets):
        from keyrotd.custody import check_custody

        check_custody(settings)
    server = settings.server
    check_admin_transport(server)
    if server.admin_clients_file is not None:
        from keyrotd.admin_clients import load_registry  # only where clients are configured

        load_registry(server.admin_token_file, server.admin_clients_file)
    if server.tls is not None:
        from keyrotd.daemon.tls import check_tls_pair  # cryptography's x509: only when TLS is on

        check_tls_pair(*server.tls, now)
    admin = split_admin_listen(server.admin_listen) if server.admin_listen else None
    if isinstance(admin, Path) and not admin.parent.is_dir():
        raise missing_socket_directory("server.admin_listen", admin)
    backend = chosen_backend(settings.storage.type)
    if backend.check is not None:  # the backend's own: the AWS region, a credential file
        backend.check(settings.storage.options)
    if settings.storage.revision_file is not None:  # its directory must exist (G8)
        from keyrotd.storage.revision_file import RevisionFile

        RevisionFile(settings.storage.revision_file)
    return warnings


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


def check_capacity(settings: Settings) -> list[str]:
    """Refuse a keyset whose largest document would not fit its storage; a warning for each
    that keeps more than :data:`MANY_KEYS` keys in its JWKS at once."""
    limit = chosen_backend(settings.storage.type).max_document_size
    label = "configuration" if settings.config_file is None else str(settings.config_file)
    warnings: list[str] = []
    for index, keyset in enumerate(settings.keysets):
        where = f"keysets[{index}] ({keyset.name})"
        estimate = capacity(keyset)
        algorithm = keyset.algorithm
        if algorithm.startswith(("RS", "PS")):
            algorithm += f" {keyset.rsa_key_size}-bit"
        if estimate.document_bytes > limit:
            raise ConfigError(
                f"{label}: {where} would store documents of about {estimate.document_bytes} bytes "
                f"({estimate.keys} {algorithm} keys in its JWKS at once), above the "
                f"{settings.storage.type} storage limit of {limit} bytes",
                _FEWER_KEYS,
            )
        if estimate.keys > MANY_KEYS:
            warnings.append(
                f"{where} keeps about {estimate.keys} keys in its JWKS at once (more than "
                f"{MANY_KEYS}; (publish_ahead + token_lifetime + clock_skew) / rotation_period "
                f"+ 2): verifiers fetch and scan them all; {_FEWER_KEYS}"
            )
    return warnings


_FEWER_KEYS: Final = (
    "raise rotation_period, or lower token_lifetime or publish_ahead (a smaller algorithm, "
    "ES256 or EdDSA, makes each key smaller)"
)
