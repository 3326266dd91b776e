"""What belongs to each storage type: its settings, and how a reader tells that its store is there.

:data:`TYPE_SETTINGS` is the one declaration of which ``[storage]`` keys belong to which type; a
key of another type set to anything but its default is refused, naming the type(s) it belongs to
(docs/cli.md). A new backend adds its keys here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from keyrotd.durations import InvalidValueError, quote
from keyrotd.errors import KeyrotdError

TYPE_SETTINGS: Final[Mapping[str, frozenset[str]]] = {
    "file": frozenset({"path", "encryption_key_file"}),
    "aws": frozenset({"secret_prefix", "region", "endpoint_url", "kms_key_id"}),
    "postgres": frozenset({"dsn_file", "table", "ca_file", "encryption_key_file"}),
}
"""Per ``storage.type``, the ``[storage]`` keys of that type (``type`` itself belongs to all)."""


def owners(key: str) -> tuple[str, ...]:
    """The storage types ``key`` belongs to; empty for a key of every type."""
    return tuple(kind for kind, keys in TYPE_SETTINGS.items() if key in keys)


def refuse_foreign_settings(kind: str, given: Mapping[str, object]) -> None:
    """Refuse a key of another storage type among ``given`` (the keys set to a non-default
    value): ``region`` with ``type = "file"`` would silently do nothing."""
    for key in sorted(given):
        belongs = owners(key)
        if belongs and kind not in belongs:
            types = " or ".join(quote(owner) for owner in belongs)
            raise InvalidValueError(
                f"{key} is a setting of storage type {types}, not of {quote(kind)}",
                f"remove it, or set storage.type = {quote(belongs[0])}",
            )


def for_the_files_type(file_storage: object, env_storage: Any) -> Any:
    """The ``KEYROTD_STORAGE__*`` values less those of another type than the one the file
    chooses: an image's default for the file store (config/Containerfile sets
    ``KEYROTD_STORAGE__PATH``) must not stop a configuration file that chooses ``aws``. A
    variable that sets the type itself keeps every value (and each is checked against it)."""
    if not isinstance(file_storage, Mapping) or not isinstance(env_storage, Mapping):
        return env_storage
    kind = file_storage.get("type")
    if not isinstance(kind, str) or kind.lower() not in TYPE_SETTINGS or "type" in env_storage:
        return env_storage
    return {
        key: value
        for key, value in env_storage.items()
        if not owners(str(key)) or kind.lower() in owners(str(key))
    }


def require_store(kind: str, path: Path, source: str) -> None:
    """For a command that reads but never creates a store: refuse, naming where it looked, when
    no store is where the configuration points. It never advises creating keys there: that would
    start a second store beside the real one. (A file store is a directory; other types cannot
    tell a missing store from an empty one, and read as empty.)"""
    if kind == "file" and not path.is_dir():
        raise KeyrotdError(
            f"no key store at {path} (storage.path, from {source})",
            "point --config (or KEYROTD_CONFIG) at the configuration the daemon runs with; a "
            "relative storage.path counts from the configuration file's directory",
        )
