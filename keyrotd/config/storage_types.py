"""The ``[storage]`` table split by type: keyrotd's own keys, and those of the chosen backend.

Each backend declares its keys in its own settings model (:mod:`keyrotd.storage.registry`);
``type`` and ``revision_file`` are keyrotd's. A key of another type set to anything but that
type's default is refused, naming the type(s) it belongs to (docs/cli.md); one that no type
declares is an unknown setting, whatever the backend's model would allow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from keyrotd.durations import InvalidValueError, quote
from keyrotd.storage import registry
from keyrotd.storage.registry import COMMON_KEYS, Backend

OPTIONS = "options"
"""The field of :class:`~keyrotd.config.models.StorageSettings` holding the backend's settings."""


def unknown_type(kind: object) -> InvalidValueError:
    """``storage.type`` names no backend: say which ones there are."""
    return InvalidValueError(f"{quote(kind)} is not allowed", f"use {_either(registry.known())}")


def _either(kinds: tuple[str, ...] | list[str]) -> str:
    """``"a"``, ``"a" or "b"``, ``"a", "b" or "c"``."""
    names = [quote(kind) for kind in kinds]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def split(values: Mapping[str, Any]) -> dict[str, Any]:
    """``type``, ``revision_file`` and the chosen backend's validated settings model (under
    :data:`OPTIONS`) from a flat ``[storage]`` table. An unknown type is left for the ``type``
    field to refuse; a key of another type raises :class:`InvalidValueError`; the backend's own
    validation raises its :class:`ValidationError` (whose locations are the keys)."""
    if OPTIONS in values:
        return dict(values)  # already split: a copy of a validated model
    kind = values.get("type", "file")
    result = {key: values[key] for key in COMMON_KEYS if key in values}
    backend = registry.find(kind.lower()) if isinstance(kind, str) else None
    if backend is None:
        return result
    result["type"] = kind.lower()
    own = {key: value for key, value in values.items() if key not in COMMON_KEYS}
    result[OPTIONS] = validated(backend, kind.lower(), own)
    return result


def validated(backend: Backend[Any], kind: str, own: Mapping[str, Any]) -> BaseModel:
    """The backend's settings from its keys; another type's keys at their defaults are dropped,
    set otherwise they are refused naming their type; unknown keys are refused."""
    declared = backend.settings.model_fields
    unknown: list[str] = []
    for key in sorted(own):
        if key in declared:
            continue
        belongs = registry.owners(key, besides=kind)
        if not belongs:
            unknown.append(key)
        elif not _default_everywhere(key, own[key], belongs):
            types = _either(belongs)
            raise InvalidValueError(
                f"{key} is a setting of storage type {types}, not of {quote(kind)}",
                f"remove it, or set storage.type = {quote(belongs[0])}",
            )
    if unknown:
        raise ValidationError.from_exception_data(
            backend.settings.__name__,
            [{"type": "extra_forbidden", "loc": (key,), "input": own[key]} for key in unknown],
        )
    settings: BaseModel = backend.settings.model_validate(
        {key: value for key, value in own.items() if key in declared}
    )
    return settings


def _default_everywhere(key: str, value: object, kinds: tuple[str, ...]) -> bool:
    """Whether ``value`` is the default of ``key`` in every type declaring it (the commented
    example sets every key of every type to its default)."""
    for kind in kinds:
        backend = registry.find(kind)
        field = None if backend is None else backend.settings.model_fields[key]
        if field is None or field.is_required():
            return False
        kind_of: Any = (
            Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
        )
        try:
            given = TypeAdapter(kind_of).validate_python(value)
        except ValidationError:
            return False
        if given != field.get_default(call_default_factory=True):
            return False
    return True


def for_the_files_type(file_storage: object, env_storage: Any) -> Any:
    """The ``KEYROTD_STORAGE__*`` values less those of another type than the one the file
    chooses: an image's default for the file store (config/Containerfile sets
    ``KEYROTD_STORAGE__PATH``) must not stop a configuration file that chooses ``aws``. A
    variable that sets the type itself keeps every value (and each is checked against it)."""
    if not isinstance(file_storage, Mapping) or not isinstance(env_storage, Mapping):
        return env_storage
    kind = file_storage.get("type")
    if not isinstance(kind, str) or "type" in env_storage:
        return env_storage
    backend = registry.find(kind.lower())
    if backend is None:
        return env_storage
    return {
        key: value
        for key, value in env_storage.items()
        if key in COMMON_KEYS
        or key in backend.settings.model_fields
        or not registry.owners(str(key), besides=kind.lower())
    }
