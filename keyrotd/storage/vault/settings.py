"""The settings of the ``vault`` storage type and the credential files they name.

Nothing here imports hvac: ``check-config`` validates a vault configuration (the URL, the auth
mode's settings, the credential files and their modes) without talking to the server.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, model_validator

from keyrotd.config.fields import OptionalPath
from keyrotd.errors import ConfigError
from keyrotd.secretfiles import load_encryption_key, read_secret_file

__all__ = [
    "KEYS",
    "MAX_DOCUMENT_SIZE",
    "SERVICE_ACCOUNT_TOKEN",
    "Credentials",
    "VaultSettings",
    "load_credentials",
]

KEYS: Final = frozenset(
    {
        "url",
        "mount",
        "path_prefix",
        "auth",
        "token_file",
        "role_id_file",
        "secret_id_file",
        "kubernetes_role",
        "ca_file",
        "encryption_key_file",
    }
)
"""The ``[storage]`` keys of the vault type (``revision_file`` belongs to every type)."""

MAX_DOCUMENT_SIZE: Final = 512 * 1024
"""The largest document: well under the 1 MiB entry limit of raft storage."""

SERVICE_ACCOUNT_TOKEN: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
"""The pod's service-account token, presented to Vault's Kubernetes auth method."""
_CREDENTIAL_SIZE: Final = 64 * 1024
_AUTH_FILES: Final = {
    "token": ("token_file",),
    "approle": ("role_id_file", "secret_id_file"),
    "kubernetes": (),
}


class VaultSettings(BaseModel):
    """Where the keysets live in Vault or OpenBao (KV version 2), and how keyrotd logs in."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = ""
    mount: str = "secret"
    path_prefix: str = "keyrotd/"
    auth: Literal["token", "approle", "kubernetes"] = "token"
    token_file: OptionalPath = None
    role_id_file: OptionalPath = None
    secret_id_file: OptionalPath = None
    kubernetes_role: str = ""
    ca_file: OptionalPath = None
    encryption_key_file: OptionalPath = None

    @model_validator(mode="after")
    def _consistent(self) -> VaultSettings:
        check_url(self.url)
        if not self.mount.strip("/") or any(c.isspace() for c in self.mount):
            raise ConfigError(
                f"storage.mount = {self.mount!r} is not a mount path",
                'name the KV version 2 mount, e.g. "secret"',
            )
        if self.path_prefix.startswith("/") or "//" in self.path_prefix:
            raise ConfigError(
                f"storage.path_prefix = {self.path_prefix!r} is not a relative path",
                'use e.g. "keyrotd/" (secrets are at mount/path_prefix + keyset name)',
            )
        for mode, keys in _AUTH_FILES.items():
            for key in keys:
                if mode != self.auth and getattr(self, key) is not None:
                    raise ConfigError(
                        f'storage.{key} is a setting of auth = "{mode}", not of "{self.auth}"',
                        f'remove it, or set storage.auth = "{mode}"',
                    )
                if mode == self.auth and getattr(self, key) is None:
                    raise ConfigError(
                        f'storage.auth = "{mode}" needs storage.{key}',
                        f"set storage.{key} to the file holding it (mode 0600)",
                    )
        if (self.auth == "kubernetes") != bool(self.kubernetes_role):
            if self.kubernetes_role:
                raise ConfigError(
                    f'storage.kubernetes_role is a setting of auth = "kubernetes", not of '
                    f'"{self.auth}"',
                    'remove it, or set storage.auth = "kubernetes"',
                )
            raise ConfigError(
                'storage.auth = "kubernetes" needs storage.kubernetes_role',
                "set it to the Vault role bound to this pod's service account",
            )
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ConfigError(
                f"storage.ca_file {self.ca_file} does not exist",
                "give the PEM bundle of the CA that signed the Vault server's certificate",
            )
        return self

    @property
    def verify(self) -> str | bool:
        """What ``requests`` verifies the server with: the CA bundle, or the system's."""
        return True if self.ca_file is None else str(self.ca_file)


def check_url(url: str) -> None:
    """Refuse anything but ``https://HOST[:PORT]``, or ``http://`` to a loopback host."""
    hint = "use https://HOST:8200 (http:// only to 127.0.0.1, ::1 or localhost)"
    if not url:
        raise ConfigError("storage.url is not set (the Vault or OpenBao address)", hint)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"storage.url = {url!r} is not a URL", hint) from None
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.query:
        raise ConfigError(f"storage.url = {url!r} is not an http(s) URL of a server", hint)
    if parts.scheme == "http" and not _loopback(host):
        raise ConfigError(
            f"storage.url = {url!r} would send the Vault token and keys unencrypted to "
            "another host",
            "use https:// (with storage.ca_file for a private CA)",
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, repr=False)
class Credentials:
    """What the configured auth mode logs in with (never logged, never in a message)."""

    token: str = ""
    role_id: str = ""
    secret_id: str = ""
    encryption_key: bytes | None = None


def load_credentials(settings: VaultSettings) -> Credentials:
    """Read the credential and encryption key files, each under the secret file rule."""
    key = None
    if settings.encryption_key_file is not None:
        key = load_encryption_key(settings.encryption_key_file)
    if settings.auth == "token":
        assert settings.token_file is not None
        return Credentials(token=_read(settings.token_file, "token_file"), encryption_key=key)
    if settings.auth == "approle":
        assert settings.role_id_file is not None
        assert settings.secret_id_file is not None
        return Credentials(
            role_id=_read(settings.role_id_file, "role_id_file"),
            secret_id=_read(settings.secret_id_file, "secret_id_file"),
            encryption_key=key,
        )
    return Credentials(encryption_key=key)


def read_token(path: Path) -> str:
    """The token in ``token_file`` (re-read when Vault refuses the one in use: an agent may
    have written a new one)."""
    return _read(path, "token_file")


def _read(path: Path, key: str) -> str:
    setting = f"storage.{key}"
    data = read_secret_file(path, setting, max_size=_CREDENTIAL_SIZE)
    text = data.decode("utf-8", "replace").strip()
    if not text:
        raise ConfigError(f"{setting} {path} is empty", f"write the credential into {path}")
    return text
