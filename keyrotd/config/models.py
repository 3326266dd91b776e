"""The configuration (CONTRACT section 2): a TOML file, overridden by ``KEYROTD_*`` variables.

:func:`load_settings` is the one place that reads the file and the environment. It returns frozen
models that forbid unknown fields, or raises a one-line :class:`~keyrotd.errors.ConfigError` naming
the file or the variable, the setting and the fix. ``Settings()`` alone is the embedded defaults:
it never reads the environment.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from keyrotd.durations import Duration, InvalidValueError, format_duration, quote
from keyrotd.errors import ConfigError, UsageError
from keyrotd.model import ALGORITHMS, KEYSET_NAME, Policy

ENV_PREFIX: Final = "KEYROTD_"
CONFIG_VARIABLE: Final = "KEYROTD_CONFIG"
DEFAULT_FILE: Final = "keyrotd.toml"
RSA_KEY_SIZES: Final = (2048, 3072, 4096)
SEE_EXAMPLE: Final = "see `keyrotd check-config --example`"
"""The commented example of every setting ships with the package (``keyrotd/example.toml``)."""
UNKNOWN_HINT: Final = f"remove it or check the spelling ({SEE_EXAMPLE})"

_SECRET_PREFIX: Final = re.compile(r"[A-Za-z0-9/_+=.@-]{0,256}")
_REGION: Final = re.compile(r"[a-z0-9-]{0,64}")
_BRACKETED: Final = re.compile(r"\[([^\]]+)\]:([0-9]{1,5})")
_HOST_PORT: Final = re.compile(r"([^:\[\]]+):([0-9]{1,5})")
_HOSTNAME: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")
_LISTEN_HINT: Final = 'use host:port, e.g. "127.0.0.1:8080", "0.0.0.0:8080" or "[::1]:8080"'
_TOML_POSITION: Final = re.compile(r"\s*\(at line (\d+), column \d+\)$")


def _path(value: object) -> Path:
    text = str(value) if isinstance(value, Path) else value
    if not isinstance(text, str) or not text or "\0" in text:
        raise InvalidValueError(
            f"{quote(value)} is not a path", 'use a path such as "./keyrotd-data"'
        )
    return Path(text)


def _optional_path(value: object) -> Path | None:
    """An empty string (the only way TOML and the environment can say "none") means ``None``."""
    return None if value is None or value == "" else _path(value)


def _lowercase(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _http_url(value: str, *, bare: bool = False) -> str:
    """``value`` unless it is set and not an http(s) URL (``bare``: no query or fragment)."""
    if value == "" or _is_http_url(value, bare=bare):
        return value
    example = "https://auth.example.com" if bare else "http://127.0.0.1:4566"
    raise InvalidValueError(f"{quote(value)} is not an http(s) URL", f"use e.g. {example}")


def _is_http_url(value: str, *, bare: bool) -> bool:
    if any(char.isspace() or not char.isprintable() for char in value):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        return False
    plain = not (parts.query or parts.fragment or value.endswith(("?", "#")))
    return parts.scheme in ("http", "https") and bool(parts.hostname) and (plain or not bare)


def _matching(pattern: re.Pattern[str], what: str, hint: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise InvalidValueError(f"{quote(value)} is not a valid {what}", hint)
        return value

    return AfterValidator(check)


def split_listen(listen: str) -> tuple[str, int]:
    """The host (IPv6 without brackets) and port of a ``host:port`` listen address."""
    bracketed, plain = _BRACKETED.fullmatch(listen), _HOST_PORT.fullmatch(listen)
    if bracketed and _is_ipv6(bracketed[1]):
        host, port = bracketed[1], int(bracketed[2])
    elif plain and _is_host(plain[1]):
        host, port = plain[1], int(plain[2])
    else:
        raise InvalidValueError(f"{quote(listen)} is not host:port", _LISTEN_HINT)
    if not 0 < port <= 65535:
        raise InvalidValueError(f"port {port} is out of range", "use a port from 1 to 65535")
    return host, port


def split_admin_listen(value: str) -> tuple[str, int] | Path:
    """``server.admin_listen``: a unix socket path (``unix:/PATH``) or a ``host:port``."""
    if value.startswith("unix:"):
        path = value[len("unix:") :]
        if not path.startswith("/") or "\0" in path or path.endswith("/"):
            raise InvalidValueError(
                f"{quote(value)} is not unix:/PATH",
                'use an absolute path, e.g. "unix:/run/keyrotd/admin.sock"',
            )
        return Path(path)
    return split_listen(value)


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _is_host(host: str) -> bool:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and bool(_HOSTNAME.fullmatch(host))


OptionalPath = Annotated[Path | None, BeforeValidator(_optional_path)]


class StorageSettings(BaseModel):
    """Where keysets are stored: ``file`` (a directory) or ``aws`` (Secrets Manager)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Annotated[Literal["file", "aws"], BeforeValidator(_lowercase)] = "file"
    path: Annotated[Path, BeforeValidator(_path)] = Path("./keyrotd-data")
    encryption_key_file: OptionalPath = None
    secret_prefix: Annotated[
        str, _matching(_SECRET_PREFIX, "secret name prefix", "use letters, digits and /_+=.@-")
    ] = "keyrotd/"  # noqa: S105 - a name prefix, not a secret
    region: Annotated[str, _matching(_REGION, "AWS region", 'use e.g. "eu-west-1"')] = ""
    endpoint_url: Annotated[str, AfterValidator(_http_url)] = ""
    kms_key_id: str = ""


class ServerSettings(BaseModel):
    """The daemon's HTTP listener and how fresh the JWKS it serves is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str = "127.0.0.1:8080"
    tls_cert_file: OptionalPath = None
    tls_key_file: OptionalPath = None
    admin_listen: str = ""
    admin_token_file: OptionalPath = None
    admin_clients_file: OptionalPath = None
    refresh_interval: Duration = timedelta(seconds=30)
    jwks_max_age: Duration = timedelta(minutes=5)

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("admin_listen")
    @classmethod
    def _valid_admin_listen(cls, value: str) -> str:
        if value:
            split_admin_listen(value)
        return value

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
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


class LoggingSettings(BaseModel):
    """Log format and threshold (both case-insensitive on input)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Annotated[Literal["json", "text"], BeforeValidator(_lowercase)] = "json"
    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_lowercase)
    ] = "info"


def _algorithm(value: str) -> str:
    """The canonical spelling of a supported JWS algorithm (input is case-insensitive)."""
    for algorithm in ALGORITHMS:
        if algorithm.lower() == value.lower():
            return algorithm
    raise InvalidValueError(f"{quote(value)} is not supported", "use " + ", ".join(ALGORITHMS))


def _issuer_url(value: str) -> str:
    return _http_url(value, bare=True)


def _observe_urls(value: tuple[str, ...]) -> tuple[str, ...]:
    """Each an http(s) URL (a query is allowed: verifiers fetch what they are given), no repeats."""
    for url in value:
        if "@" in urlsplit(url).netloc:  # not repeated: it would show the password
            raise InvalidValueError(
                "an observed URL holds a user name or password (keysets[].observe)",
                "observe public JWKS URLs, as verifiers fetch them: without credentials (they "
                "would show in logs and metrics)",
            )
        if not url or not _is_http_url(url, bare=False):
            raise InvalidValueError(
                f"{quote(url)} is not an http(s) URL (keysets[].observe)",
                "list the public JWKS URLs verifiers fetch, e.g. "
                "https://cdn.example.com/.well-known/jwks.json",
            )
    if len(set(value)) != len(value):
        raise InvalidValueError("a URL is listed twice (keysets[].observe)", "list each URL once")
    return value


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise InvalidValueError(f"{quote(value)} is not a key size", "use 2048, 3072 or 4096")
    return value


def _rsa_key_size(value: int) -> int:
    if value < RSA_KEY_SIZES[0]:
        raise InvalidValueError(f"{value} is too weak", "use 2048, 3072 or 4096")
    if value not in RSA_KEY_SIZES:
        raise InvalidValueError(f"{value} is not supported", "use 2048, 3072 or 4096")
    return value


class KeysetSettings(BaseModel):
    """One keyset: its name, algorithm and rotation policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[
        str,
        _matching(
            KEYSET_NAME,
            "keyset name",
            "use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        ),
    ] = "default"
    algorithm: Annotated[str, AfterValidator(_algorithm)] = "RS256"
    rsa_key_size: Annotated[int, BeforeValidator(_not_bool), AfterValidator(_rsa_key_size)] = 2048
    rotation_period: Duration = timedelta(hours=24)
    publish_ahead: Duration = timedelta(hours=24)
    token_lifetime: Duration = timedelta(hours=1)
    clock_skew: Duration = timedelta(minutes=5)
    issuer: Annotated[str, AfterValidator(_issuer_url)] = ""
    verifier_cache: Duration = timedelta(seconds=30)
    """The longest a verifier keeps a JWKS without refetching on an unknown kid, whatever
    ``max-age`` says (node ``jose``: 30 s; see docs/verifiers.md)."""
    observe: Annotated[tuple[str, ...], AfterValidator(_observe_urls)] = ()
    """Public JWKS URLs verifiers fetch: a successor activates only once all serve it
    (CONTRACT section 9, docs/propagation.md)."""

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


def issuer_path(issuer: str) -> str:
    """The path an issuer's discovery lives under (OIDC Discovery §4): ``/t1`` for
    ``https://a.example/t1/``, ``""`` for ``https://a.example``; decoded, as HTTP paths arrive."""
    return unquote(urlsplit(issuer).path).rstrip("/")


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


# --- loading -------------------------------------------------------------------------------------

_SECTIONS: Final[Mapping[str, type[BaseModel] | None]] = {
    "storage": StorageSettings,
    "server": ServerSettings,
    "logging": LoggingSettings,
    "keysets": None,
}
Location = tuple[str | int, ...]


def find_config_file(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """``--config``, else ``$KEYROTD_CONFIG``, else ``./keyrotd.toml`` if present, else ``None``."""
    if explicit is not None:
        return _existing_file(explicit, "--config")
    if environ.get(CONFIG_VARIABLE):
        return _existing_file(environ[CONFIG_VARIABLE], CONFIG_VARIABLE)
    default = Path(DEFAULT_FILE)
    return default if os.path.lexists(default) else None


def _existing_file(value: str, given_by: str) -> Path:
    path = Path(value)
    if not value or not path.exists():
        raise _error(
            f"{given_by}: no configuration file {quote(value, limit=None)}",
            "check the path, or leave it out to use ./keyrotd.toml or the defaults",
        )
    if path.is_dir():
        shown = quote(value, limit=None)
        raise _error(f"{given_by}: {shown} is a directory", "give the path of a TOML file")
    return path


def load_settings(
    explicit: str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, validate and policy-check the configuration; any failure is a :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
    path = find_config_file(explicit, environ)
    label = "configuration" if path is None else str(path)
    file_values = {} if path is None else _read_file(path)
    env_values, variables = _read_environ(environ)
    try:
        settings = Settings(**_merged(file_values, env_values))
    except ValidationError as exc:
        raise _invalid(exc.errors()[0], label, env_values, variables) from None
    settings._config_file = path  # the one place that records them: not user settings
    settings._overrides = tuple(sorted(variables.values()))
    check_policy(settings)
    return settings


def _read_file(path: Path) -> dict[str, Any]:
    """The file's tables, refused when it is unreadable, not TOML or has unknown sections."""
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _error(f"{path}: not UTF-8 text (byte {exc.start})", "save it as UTF-8") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise _error(
            f"{path}: cannot read it ({reason})", "check the path and permissions"
        ) from None
    except (ValueError, RecursionError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise _toml_error(path, exc) from None
    for key in data:
        if key not in _SECTIONS:
            raise _error(f"{path}: unknown setting {_dotted((key,))}", UNKNOWN_HINT)
    return data


def _toml_error(path: Path, exc: Exception) -> ConfigError:
    reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
    position = _TOML_POSITION.search(reason)
    where = f"{path}:{position[1]}" if position else str(path)
    reason = _TOML_POSITION.sub("", reason)
    return _error(f"{where}: invalid TOML: {reason}", f"fix the syntax ({SEE_EXAMPLE})")


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' reading of ``KEYROTD_*`` variables, from a given mapping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._environ.items()}


def _read_environ(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[Location, str]]:
    """The ``KEYROTD_*`` values as nested settings, and the variable behind each location."""
    variables: dict[Location, str] = {}
    for name, value in environ.items():
        location = _variable_location(name)
        if location is not None:
            variables[location] = name
            if len(location) == 1:
                _check_json(name, str(location[0]), value)
    try:
        values = _EnvironSource({name: environ[name] for name in variables.values()})()
    except SettingsError as exc:
        raise _error(f"environment: {exc}", SEE_EXAMPLE) from None
    return values, variables


def _variable_location(name: str) -> Location | None:
    """``("server", "listen")`` for ``KEYROTD_SERVER__LISTEN``; ``None`` for other variables."""
    if not name.upper().startswith(ENV_PREFIX) or name == CONFIG_VARIABLE:
        return None
    section, *rest = name[len(ENV_PREFIX) :].lower().split("__")
    if section == "keysets" and rest:
        raise _error(f"{name}: unknown setting", "set KEYROTD_KEYSETS to a JSON list of keysets")
    model = _SECTIONS.get(section)
    known = section in _SECTIONS and (not rest or (len(rest) == 1 and _has_field(model, rest[0])))
    if not known:
        raise _error(f"{name}: unknown setting {'.'.join((section, *rest))}", UNKNOWN_HINT)
    return (section, *rest)


def _has_field(model: type[BaseModel] | None, name: str) -> bool:
    return model is not None and name in model.model_fields


def _check_json(name: str, section: str, value: str) -> None:
    expected, example = (list, '[{"name": "default"}]') if section == "keysets" else (dict, "{}")
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        decoded = None
    if not isinstance(decoded, expected):
        kind = "list" if expected is list else "object"
        raise _error(f"{name}: not a JSON {kind}", f"use e.g. {example}")


def _merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` on top, tables merged key by key."""
    result = dict(base)
    for key, value in override.items():
        below = result.get(key)
        both_tables = isinstance(value, Mapping) and isinstance(below, Mapping)
        result[key] = _merged(below, value) if both_tables else value  # type: ignore[arg-type]
    return result


# --- errors --------------------------------------------------------------------------------------


def _invalid(
    error: ErrorDetails, label: str, env_values: Mapping[str, Any], variables: dict[Location, str]
) -> ConfigError:
    """One line for pydantic's first error, naming the variable or the file that set the value."""
    location: Location = tuple(error["loc"])
    source, named = _source(location, label, env_values, variables)
    setting = _dotted(location)
    if error["type"] == "extra_forbidden":
        return _error(f"{source}: unknown setting {setting}", UNKNOWN_HINT)
    problem, hint = _problem(error)
    return _error(f"{source}: {problem}" if named else f"{source}: {setting}: {problem}", hint)


def _source(
    location: Location, label: str, env_values: Mapping[str, Any], variables: dict[Location, str]
) -> tuple[str, bool]:
    """Who set ``location``: a variable or ``label``, and whether that name says the setting."""
    if not _holds(env_values, location):
        return label, False
    for size in range(len(location), 0, -1):
        if location[:size] in variables:
            return variables[location[:size]], size == len(location)
    return label, False


def _holds(values: object, location: Location) -> bool:
    """Whether ``values`` (nested tables and lists) has something at ``location``."""
    for step in location:
        in_table = isinstance(values, Mapping) and step in values
        in_list = isinstance(values, list) and isinstance(step, int) and step < len(values)
        if not (in_table or in_list):
            return False
        values = values[step]  # type: ignore[index]
    return True


def _problem(error: ErrorDetails) -> tuple[str, str]:
    kind, value, context = error["type"], error["input"], error.get("ctx", {})
    cause = context.get("error")
    if isinstance(cause, InvalidValueError):
        return cause.problem, cause.hint
    if kind == "literal_error":
        expected = str(context["expected"]).replace("'", '"')
        return f"{quote(value)} is not allowed", f"use {expected}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a table", f"write it as a [section] ({SEE_EXAMPLE})"
    if kind in ("tuple_type", "list_type"):
        return "must be a list of keysets", "write each keyset as a [[keysets]] section"
    if kind == "string_type":
        return f"{quote(value)} is not a string", "put the value in double quotes"
    if kind.startswith("int_"):
        return f"{quote(value)} is not a whole number", "use e.g. 2048"
    return f"{quote(value)} is invalid ({error['msg']})", SEE_EXAMPLE


def _dotted(location: Location) -> str:
    """``keysets[0].rsa_key_size``; odd keys are quoted."""
    text = ""
    for step in location:
        if isinstance(step, int):
            text += f"[{step}]"
        else:
            part = step if re.fullmatch(r"[A-Za-z0-9_-]+", step) else quote(step)
            text += f".{part}" if text else part
    return text


def _error(message: str, hint: str) -> ConfigError:
    """A :class:`ConfigError` whose message and hint are one line each."""
    return ConfigError(_one_line(message), _one_line(hint))


def _one_line(text: str) -> str:
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode() for char in text
    )


# --- policy --------------------------------------------------------------------------------------


def check_policy(settings: Settings) -> None:
    """Refuse a policy that cannot keep the guarantees (CONTRACT section 2 and 3)."""
    label = "configuration" if settings.config_file is None else str(settings.config_file)
    server = settings.server
    _at_least(label, "server.refresh_interval", server.refresh_interval, above_zero=True)
    _at_least(label, "server.jwks_max_age", server.jwks_max_age, above_zero=False)
    first_index: dict[str, int] = {}
    for index, keyset in enumerate(settings.keysets):
        if keyset.name in first_index:
            raise _error(
                f"{label}: keysets[{index}].name {quote(keyset.name)} is already the name of "
                f"keysets[{first_index[keyset.name]}]",
                "give every keyset its own name",
            )
        first_index[keyset.name] = index
        _check_keyset(label, f"keysets[{index}]", keyset, server)


def _check_keyset(label: str, where: str, keyset: KeysetSettings, server: ServerSettings) -> None:
    _at_least(label, f"{where}.rotation_period", keyset.rotation_period, above_zero=True)
    _at_least(label, f"{where}.publish_ahead", keyset.publish_ahead, above_zero=True)
    _at_least(label, f"{where}.token_lifetime", keyset.token_lifetime, above_zero=True)
    _at_least(label, f"{where}.clock_skew", keyset.clock_skew, above_zero=False)
    _at_least(label, f"{where}.verifier_cache", keyset.verifier_cache, above_zero=False)
    ahead, period = keyset.publish_ahead, keyset.rotation_period
    if ahead > period:
        raise _error(
            f"{label}: {where}.publish_ahead ({format_duration(ahead)}) is longer than "
            f"{where}.rotation_period ({format_duration(period)})",
            "a key is published at most one rotation period ahead: "
            "lower publish_ahead or raise rotation_period",
        )
    refresh, max_age, cache = server.refresh_interval, server.jwks_max_age, keyset.verifier_cache
    propagation = refresh + max(max_age, cache)
    if ahead <= propagation:
        raise _error(
            f"{label}: {where}.publish_ahead ({format_duration(ahead)}) is not above "
            f"server.refresh_interval + max(server.jwks_max_age, {where}.verifier_cache) "
            f"({format_duration(refresh)} + max({format_duration(max_age)}, "
            f"{format_duration(cache)}) = {format_duration(propagation)})",
            f"verifiers could miss a new key before it signs: raise publish_ahead above "
            f"{format_duration(propagation)}, or lower refresh_interval or jwks_max_age "
            "(verifier_cache only if every verifier refetches sooner: see docs/verifiers.md)",
        )


def _at_least(label: str, setting: str, value: timedelta, *, above_zero: bool) -> None:
    if value < timedelta(0) or (above_zero and value == timedelta(0)):
        bound, hint = ("above 0s", "use e.g. 30s") if above_zero else ("0s or more", "use e.g. 0s")
        raise _error(f"{label}: {setting} ({format_duration(value)}) must be {bound}", hint)
