"""The ``vault`` storage type: HashiCorp Vault or OpenBao, KV version 2 (docs/storage.md).

Importing this package reads no file and imports no hvac: ``VaultSettings`` validates a
configuration, :func:`check_vault` reads its credential files as ``run`` would, and
:func:`open_vault` (the only place hvac is imported) logs in lazily, at the first request.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from keyrotd.storage.registry import Backend
from keyrotd.storage.vault.settings import (
    KEYS,
    MAX_DOCUMENT_SIZE,
    SERVICE_ACCOUNT_TOKEN,
    VaultSettings,
    load_credentials,
)

if TYPE_CHECKING:
    from keyrotd.storage.vault.storage import VaultStorage

__all__ = ["BACKEND", "KEYS", "VaultSettings", "check_vault", "open_vault"]


def check_vault(settings: VaultSettings) -> None:
    """What ``check-config`` verifies without the server: the credential and key files."""
    load_credentials(settings)


def open_vault(
    settings: VaultSettings, service_account_token: Path = SERVICE_ACCOUNT_TOKEN
) -> VaultStorage:
    """The storage these settings describe; nothing is sent before the first read or write.
    ``service_account_token``: the JWT ``auth = "kubernetes"`` presents (the pod's own)."""
    from keyrotd.storage.vault.session import Session
    from keyrotd.storage.vault.storage import VaultStorage

    credentials = load_credentials(settings)
    return VaultStorage(
        Session(settings, credentials, service_account_token=service_account_token),
        url=settings.url,
        mount=settings.mount,
        path_prefix=settings.path_prefix,
        encryption_key=credentials.encryption_key,
    )


BACKEND: Final = Backend(
    settings=VaultSettings,
    open=open_vault,
    max_document_size=MAX_DOCUMENT_SIZE,
    check=check_vault,
)
"""``storage.type = "vault"`` (:mod:`keyrotd.storage.registry`)."""
