"""Loading: find the TOML file, read it and the ``KEYROTD_*`` variables, validate, check the policy.

:func:`load_settings` is the one place that reads the file and the environment. It returns frozen
models that forbid unknown fields, or raises a one-line :class:`~keyrotd.errors.ConfigError` naming
the file or the variable, the setting and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import EnvSettingsSource, SettingsError

from keyrotd.config.messages import (
    SEE_EXAMPLE,
    UNKNOWN_HINT,
    Location,
    config_error,
    dotted,
    holds,
    invalid_setting,
    toml_error,
)
from keyrotd.config.models import (
    ENV_PREFIX,
    Settings,
)
from keyrotd.config.policy import check_policy
from keyrotd.config.storage_types import for_the_files_type
from keyrotd.durations import quote

CONFIG_VARIABLE: Final = "KEYROTD_CONFIG"
DEFAULT_FILE: Final = "keyrotd.toml"

_SECTIONS: Final[Mapping[str, type[BaseModel] | None]] = {
    name: field.annotation
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    else None  # keysets: a list, set as a whole
    for name, field in Settings.model_fields.items()
}


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
        raise config_error(
            f"{given_by}: no configuration file {quote(value, limit=None)}",
            "check the path, or leave it out to use ./keyrotd.toml or the defaults",
        )
    if path.is_dir():
        shown = quote(value, limit=None)
        raise config_error(f"{given_by}: {shown} is a directory", "give the path of a TOML file")
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
    if "storage" in env_values:
        kept = for_the_files_type(file_values.get("storage"), env_values["storage"])
        for key in set(env_values["storage"]) - set(kept):
            variables.pop(("storage", key), None)
        env_values = {**env_values, "storage": kept}
    try:
        settings = Settings(**_merged(file_values, env_values))
    except ValidationError as exc:
        raise invalid_setting(_innermost(exc.errors()[0]), label, env_values, variables) from None
    settings = _absolute_paths(settings, path, file_values, env_values)
    settings._config_file = path  # the one place that records them: not user settings
    settings._overrides = tuple(sorted(variables.values()))
    check_policy(settings)
    return settings


def _absolute_paths(
    settings: Settings,
    config: Path | None,
    file_values: Mapping[str, Any],
    env_values: Mapping[str, Any],
) -> Settings:
    """Every relative path made absolute: one the file set against the file's directory, one
    from the environment or the defaults against the working directory (README.md, Configuration).
    """

    def absolute(model: BaseModel, section: str) -> BaseModel:
        changed: dict[str, object] = {}
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):  # a storage backend's settings: keys of the table
                changed[name] = absolute(value, section)
            if not isinstance(value, Path):
                continue
            by_file = holds(file_values, (section, name)) and not holds(env_values, (section, name))
            base = config.parent if config is not None and by_file else Path()
            changed[name] = Path(os.path.abspath(base / value))
        return model.model_copy(update=changed)

    updates = {
        section: absolute(getattr(settings, section), section)
        for section, kind in _SECTIONS.items()
        if kind is not None  # keysets hold no paths
    }
    return settings.model_copy(update=updates)


def _innermost(error: ErrorDetails) -> ErrorDetails:
    """A storage backend's own validation error, at its key in ``[storage]``: its settings
    model is validated inside the table's (:mod:`keyrotd.config.storage_types`)."""
    cause = error.get("ctx", {}).get("error")
    if error["type"] != "value_error" or not isinstance(cause, ValidationError):
        return error
    inner = cause.errors()[0]
    return _innermost({**inner, "loc": (*error["loc"][:1], *inner["loc"])})


def _read_file(path: Path) -> dict[str, Any]:
    """The file's tables, refused when it is unreadable, not TOML or has unknown sections."""
    import tomllib  # only with a file: a configuration of KEYROTD_* variables needs no parser

    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise config_error(
            f"{path}: not UTF-8 text (byte {exc.start})", "save it as UTF-8"
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise config_error(
            f"{path}: cannot read it ({reason})", "check the path and permissions"
        ) from None
    except (ValueError, RecursionError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise toml_error(path, exc) from None
    for key in data:
        if key not in _SECTIONS:
            raise config_error(f"{path}: unknown setting {dotted((key,))}", UNKNOWN_HINT)
    return data


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
        raise config_error(f"environment: {exc}", SEE_EXAMPLE) from None
    return values, variables


def _variable_location(name: str) -> Location | None:
    """``("server", "listen")`` for ``KEYROTD_SERVER__LISTEN``; ``None`` for other variables."""
    if not name.upper().startswith(ENV_PREFIX) or name == CONFIG_VARIABLE:
        return None
    section, *rest = name[len(ENV_PREFIX) :].lower().split("__")
    if section == "keysets" and rest:
        raise config_error(
            f"{name}: unknown setting", "set KEYROTD_KEYSETS to a JSON list of keysets"
        )
    model = _SECTIONS.get(section)
    known = section in _SECTIONS and (
        not rest or (len(rest) == 1 and (section == "storage" or _has_field(model, rest[0])))
    )  # a storage key is checked against the chosen type's, once the type is known
    if not known:
        raise config_error(f"{name}: unknown setting {'.'.join((section, *rest))}", UNKNOWN_HINT)
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
        raise config_error(f"{name}: not a JSON {kind}", f"use e.g. {example}")


def _merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` on top, tables merged key by key."""
    result = dict(base)
    for key, value in override.items():
        below = result.get(key)
        both_tables = isinstance(value, Mapping) and isinstance(below, Mapping)
        result[key] = _merged(below, value) if both_tables else value  # type: ignore[arg-type]
    return result
