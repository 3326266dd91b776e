"""The frozen models of the configuration: storage, server, logging, keysets and the whole.

``Settings()`` alone is the embedded defaults: it never reads the environment
(:func:`keyrotd.config.loading.load_settings` adds the file and the variables). Each field's own
rule is in :mod:`keyrotd.config.fields`; the rules across fields are here.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PrivateAttr,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from keyrotd.config.fields import (
    AdminListen,
    Algorithm,
    CorsOrigins,
    CustodyType,
    EndpointUrl,
    IssuerUrl,
    KeysetName,
    Listen,
    LogFormat,
    LogLevel,
    ObserveUrls,
    OptionalPath,
    PostgresTable,
    Region,
    RsaKeySize,
    SecretPrefix,
    SettingPath,
    StorageType,
    issuer_path,
    split_admin_listen,
    split_listen,
)
from keyrotd.config.kubernetes import KubernetesSettings
from keyrotd.config.storage_types import refuse_foreign_settings
from keyrotd.durations import Duration, InvalidValueError, quote
from keyrotd.errors import UsageError
from keyrotd.model import Policy

ENV_PREFIX: Final = "KEYROTD_"


class StorageSettings(BaseModel):
    """Where keysets are stored: ``file`` (a directory), ``aws`` (Secrets Manager) or
    ``postgres`` (a table)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: StorageType = "file"
    path: SettingPath = Path("./keyrotd-data")
    encryption_key_file: OptionalPath = None
    secret_prefix: SecretPrefix = "keyrotd/"  # noqa: S105 - a name prefix, not a secret
    region: Region = ""
    endpoint_url: EndpointUrl = ""
    kms_key_id: str = ""
    dsn_file: OptionalPath = None
    """postgres: the libpq connection string (keyrotd/storage/postgres/__init__.py)."""
    table: PostgresTable = "keyrotd_keysets"
    ca_file: OptionalPath = None
    revision_file: OptionalPath = None
    """Any type: the high-water marks of G8 across restarts (keyrotd/storage/revision_file.py)."""

    @model_validator(mode="after")
    def _settings_of_its_type(self) -> StorageSettings:
        fields = type(self).model_fields
        given = {
            name: getattr(self, name)
            for name in self.model_fields_set
            if getattr(self, name) != fields[name].default
        }
        refuse_foreign_settings(self.type, given)
        return self


class CustodySettings(BaseModel):
    """Where keysets with ``custody`` other than ``storage`` keep their keys (docs/custody.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pkcs11_module: OptionalPath = None
    pkcs11_token_label: str = ""
    pkcs11_pin_file: OptionalPath = None
    aws_kms_region: Region = ""
    aws_kms_endpoint_url: EndpointUrl = ""


class ServerSettings(BaseModel):
    """The daemon's HTTP listener and how fresh the JWKS it serves is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: Listen = "127.0.0.1:8080"
    tls_cert_file: OptionalPath = None
    tls_key_file: OptionalPath = None
    admin_listen: AdminListen = ""
    admin_token_file: OptionalPath = None
    admin_clients_file: OptionalPath = None
    refresh_interval: Duration = timedelta(seconds=30)
    jwks_max_age: Duration = timedelta(minutes=5)
    cors_origins: CorsOrigins = ()
    """Origins allowed to read the JWKS and discovery from a browser; ``*``: any."""
    insecure_admin: bool = False
    """Allow the admin endpoints over plain HTTP off loopback (see :attr:`plain_admin_address`)."""

    @model_validator(mode="after")
    def _tls_pair_and_listeners(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given, missing = (
                ("tls_cert_file", "tls_key_file")
                if self.tls_key_file is None
                else ("tls_key_file", "tls_cert_file")
            )
            raise InvalidValueError(
                f"{given} is set without {missing}",
                "set both server.tls_cert_file and server.tls_key_file, or neither",
            )
        admin = split_admin_listen(self.admin_listen) if self.admin_listen else None
        if isinstance(admin, tuple) and admin[1] == self.port:
            raise InvalidValueError(
                f"admin_listen ({self.admin_listen}) uses the port of listen ({self.listen})",
                'give the admin listener its own port or a "unix:/PATH" socket',
            )
        return self

    @property
    def tls(self) -> tuple[Path, Path] | None:
        """The certificate chain and key files, when the listeners speak HTTPS."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return self.tls_cert_file, self.tls_key_file

    @property
    def plain_admin_address(self) -> str | None:
        """The address where admin endpoints would be served over plain HTTP, reachable from
        other hosts: ``admin_listen`` on TCP, or ``listen`` carrying them (with an admin token or
        clients file) — without TLS, and neither loopback (127.0.0.0/8, ::1, ``localhost``) nor a
        unix socket. ``keyrotd run`` and ``check-config`` refuse it unless ``insecure_admin``."""
        if self.tls is not None:
            return None
        if self.admin_listen:
            where = split_admin_listen(self.admin_listen)
            address = None if isinstance(where, Path) else self.admin_listen
        elif self.admin_token_file is not None or self.admin_clients_file is not None:
            address = self.listen
        else:
            address = None
        if address is None or _loopback(split_listen(address)[0]):
            return None
        return address

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything


class LoggingSettings(BaseModel):
    """Log format and threshold (both case-insensitive on input)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: LogFormat = "json"
    level: LogLevel = "info"


class KeysetSettings(BaseModel):
    """One keyset: its name, algorithm and rotation policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: KeysetName = "default"
    algorithm: Algorithm = "RS256"
    rsa_key_size: RsaKeySize = 2048
    rotation_period: Duration = timedelta(hours=24)
    publish_ahead: Duration = timedelta(hours=24)
    token_lifetime: Duration = timedelta(hours=1)
    clock_skew: Duration = timedelta(minutes=5)
    issuer: IssuerUrl = ""
    verifier_cache: Duration = timedelta(seconds=30)
    """The longest a verifier keeps a JWKS without refetching on an unknown kid, whatever
    ``max-age`` says (node ``jose``: 30 s; see docs/verifiers.md)."""
    observe: ObserveUrls = ()
    """Public JWKS URLs verifiers fetch: a successor activates only once all serve it
    (docs/propagation.md)."""
    custody: CustodyType = "storage"
    """Where the private keys live: in the document, a PKCS#11 token or AWS KMS."""

    @property
    def policy(self) -> Policy:
        return Policy(
            rotation_period=self.rotation_period,
            publish_ahead=self.publish_ahead,
            token_lifetime=self.token_lifetime,
            clock_skew=self.clock_skew,
            observe=self.observe,
            # the planner holds a successor for it only when it observes URLs
            verifier_cache=self.verifier_cache if self.observe else timedelta(0),
        )


def _issuers_at_paths_of_their_own(
    keysets: tuple[KeysetSettings, ...],
) -> tuple[KeysetSettings, ...]:
    """Two issuers at one path would serve one discovery document and one JWKS for both. The
    first keyset holds the bare path even without an issuer: its JWKS is /.well-known/jwks.json."""
    holders = {"": keysets[0].name} if keysets else {}
    for keyset in keysets:
        if not keyset.issuer:
            continue
        path = issuer_path(keyset.issuer)
        holder = holders.setdefault(path, keyset.name)
        if holder != keyset.name:
            shown = quote(path) if path else "no path"
            raise InvalidValueError(
                f"keysets {quote(holder)} and {quote(keyset.name)} would serve their discovery "
                f"and JWKS at the same issuer path ({shown}) (keysets[].issuer)",
                "give each issuer a path of its own, e.g. https://auth.example.com/"
                f"{keyset.name} (an issuer without a path belongs to the first keyset)",
            )
    return keysets


def _default_keysets_if_empty(value: object) -> object:
    """No keysets (none in the file, or ``[]``) means the one keyset ``default``."""
    return (KeysetSettings(),) if isinstance(value, list | tuple) and not value else value


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    storage: StorageSettings = StorageSettings()
    custody: CustodySettings = CustodySettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    server: ServerSettings = ServerSettings()
    logging: LoggingSettings = LoggingSettings()
    keysets: Annotated[
        tuple[KeysetSettings, ...],
        BeforeValidator(_default_keysets_if_empty),
        AfterValidator(_issuers_at_paths_of_their_own),
    ] = (KeysetSettings(),)
    _config_file: Path | None = PrivateAttr(default=None)
    _overrides: tuple[str, ...] = PrivateAttr(default=())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values given: :func:`load_settings` adds the file and the environment."""
        return (init_settings,)

    @model_validator(mode="after")
    def _custody_is_configured(self) -> Settings:
        """A pkcs11 keyset needs the module, the token and the PIN: refused at load, by name."""
        if any(k.custody == "pkcs11" for k in self.keysets):
            custody = self.custody
            missing = [
                f"custody.{name}"
                for name, value in (
                    ("pkcs11_module", custody.pkcs11_module),
                    ("pkcs11_token_label", custody.pkcs11_token_label),
                    ("pkcs11_pin_file", custody.pkcs11_pin_file),
                )
                if not value
            ]
            if missing:
                user = next(k.name for k in self.keysets if k.custody == "pkcs11")
                raise InvalidValueError(
                    f"keyset {quote(user)} has custody pkcs11 but {', '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} not set",
                    "set the PKCS#11 module, token label and PIN file under [custody]",
                )
        return self

    @property
    def config_file(self) -> Path | None:
        """The file the settings were loaded from; ``None`` when there was none."""
        return self._config_file

    @property
    def source(self) -> str:
        """Where the values came from: the file (or the built-in defaults) and any variables."""
        base = "built-in defaults" if self._config_file is None else str(self._config_file)
        return f"{base}, overridden by {', '.join(self._overrides)}" if self._overrides else base

    def keyset(self, name: str | None = None) -> KeysetSettings:
        """The keyset called ``name``; the first one when ``name`` is ``None``."""
        if name is None:
            return self.keysets[0]
        for keyset in self.keysets:
            if keyset.name == name:
                return keyset
        known = ", ".join(keyset.name for keyset in self.keysets)
        raise UsageError(f"unknown keyset {quote(name)}", f"use one of: {known}")
