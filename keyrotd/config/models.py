"""The frozen models of the configuration: storage, server, logging, keysets and the whole.

``Settings()`` alone is the embedded defaults: it never reads the environment
(:func:`keyrotd.config.loading.load_settings` adds the file and the variables). Each field's own
rule is in :mod:`keyrotd.config.fields`; the rules across fields are here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
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
    Region,
    RsaKeySize,
    issuer_path,
    split_admin_listen,
    split_listen,
)
from keyrotd.config.storage_types import split, unknown_type
from keyrotd.durations import Duration, InvalidValueError, quote
from keyrotd.errors import UsageError
from keyrotd.model import Policy
from keyrotd.storage import registry

ENV_PREFIX: Final = "KEYROTD_"


def _defaults_of(kind: str) -> BaseModel:
    backend = registry.find(kind)
    if backend is None:
        raise unknown_type(kind)
    defaults: BaseModel = backend.settings()
    return defaults


def _known_storage_type(kind: str) -> str:
    if registry.find(kind.lower()) is None:
        raise unknown_type(kind)
    return kind.lower()


class StorageSettings(BaseModel):
    """Where keysets are stored: ``type`` picks a backend (:mod:`keyrotd.storage.registry`),
    whose own model holds its keys (:attr:`options`); the table stays flat, as operators write it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Annotated[str, AfterValidator(_known_storage_type)] = "file"
    revision_file: OptionalPath = None
    """Any type: the high-water marks of G8 across restarts (keyrotd/storage/revision_file.py)."""
    options: BaseModel = Field(default_factory=lambda: _defaults_of("file"))
    """The chosen backend's settings (a :class:`~keyrotd.storage.file.FileSettings` for
    ``file``): its own pydantic model."""

    @model_validator(mode="before")
    @classmethod
    def _split_by_type(cls, values: object) -> object:
        return split(values) if isinstance(values, Mapping) else values

    @model_serializer(mode="wrap")
    def _flat(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, object]:
        """Dumped flat, as the table is written: ``type``, ``revision_file``, the backend's keys."""
        data: dict[str, object] = handler(self)
        data.pop("options", None)
        return {**data, **self.options.model_dump(mode=info.mode)}

    def setting(self, name: str) -> object:
        """The backend's setting ``name``; ``None`` when its type has no such key."""
        return getattr(self.options, name, None)

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> object:
            """``settings.storage.path`` reads the backend's key (tests and scripts); keyrotd's
            own code asks :meth:`setting` or :attr:`options`."""
            if not name.startswith("_") and name in type(self.options).model_fields:
                return getattr(self.options, name)
            return super().__getattr__(name)


class CustodySettings(BaseModel):
    """Where keysets with ``custody`` other than ``storage`` keep their keys (docs/issuers.md)."""

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
    ``max-age`` says (node ``jose``: 30 s; see docs/guarantees.md)."""
    observe: ObserveUrls = ()
    """Public JWKS URLs verifiers fetch: a successor activates only once all serve it
    (docs/guarantees.md)."""
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


class KubernetesSettings(BaseModel):
    """``[kubernetes]``: serve the API server's ExternalJWTSigner on a unix socket
    (docs/kubernetes.md; checked by ``config.kubernetes``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    signer_socket: OptionalPath = None
    signer_keyset: str = ""


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    storage: StorageSettings = Field(default_factory=StorageSettings)  # built when first used
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
