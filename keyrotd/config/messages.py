"""One-line configuration errors: which file or variable, which setting, and the fix."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic_core import ErrorDetails

from keyrotd.durations import InvalidValueError, quote
from keyrotd.errors import ConfigError

SEE_EXAMPLE: Final = "see `keyrotd check-config --example`"
"""The commented example of every setting ships with the package (``keyrotd/example.toml``)."""
UNKNOWN_HINT: Final = f"remove it or check the spelling ({SEE_EXAMPLE})"

_TOML_POSITION: Final = r"\s*\(at line (\d+), column \d+\)$"
"""A pattern: ``re`` compiles it when a TOML error is phrased (and keeps it), never before."""

Location = tuple[str | int, ...]
"""Where a value sits in the settings: ``("keysets", 0, "rsa_key_size")``."""


def config_error(message: str, hint: str) -> ConfigError:
    """A :class:`ConfigError` whose message and hint are one line each."""
    return ConfigError(_one_line(message), _one_line(hint))


def _one_line(text: str) -> str:
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode() for char in text
    )


def toml_error(path: Path, exc: Exception) -> ConfigError:
    """``path:LINE: invalid TOML: ...`` for a decoding error (or a file nested too deeply)."""
    reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
    position = re.search(_TOML_POSITION, reason)
    where = f"{path}:{position[1]}" if position else str(path)
    reason = re.sub(_TOML_POSITION, "", reason)
    return config_error(f"{where}: invalid TOML: {reason}", f"fix the syntax ({SEE_EXAMPLE})")


def invalid_setting(
    error: ErrorDetails, label: str, env_values: Mapping[str, Any], variables: dict[Location, str]
) -> ConfigError:
    """One line for pydantic's first error, naming the variable or the file that set the value."""
    location: Location = tuple(error["loc"])
    source, named = _source(location, label, env_values, variables)
    setting = dotted(location)
    if error["type"] == "extra_forbidden":
        return config_error(f"{source}: unknown setting {setting}", UNKNOWN_HINT)
    problem, hint = _problem(error)
    return config_error(
        f"{source}: {problem}" if named else f"{source}: {setting}: {problem}", hint
    )


def _source(
    location: Location, label: str, env_values: Mapping[str, Any], variables: dict[Location, str]
) -> tuple[str, bool]:
    """Who set ``location``: a variable or ``label``, and whether that name says the setting."""
    if not holds(env_values, location):
        return label, False
    for size in range(len(location), 0, -1):
        if location[:size] in variables:
            return variables[location[:size]], size == len(location)
    return label, False


def holds(values: object, location: Location) -> bool:
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


def dotted(location: Location) -> str:
    """``keysets[0].rsa_key_size``; odd keys are quoted."""
    text = ""
    for step in location:
        if isinstance(step, int):
            text += f"[{step}]"
        else:
            part = step if re.fullmatch(r"[A-Za-z0-9_-]+", step) else quote(step)
            text += f".{part}" if text else part
    return text


def missing_socket_directory(setting: str, socket: Path) -> ConfigError:
    """A unix socket cannot be bound in a directory that does not exist (``run`` and
    ``check-config`` refuse it before binding, the listener if it vanished since)."""
    return config_error(
        f"{setting}: the directory {socket.parent} of the socket {socket} does not exist",
        f"create it (mkdir -p {socket.parent}, owned by the daemon's user; under systemd, "
        f"RuntimeDirectory= creates it under /run) or change {setting}",
    )
