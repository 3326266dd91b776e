"""Which storage backends exist: the built-in ones and those installed as packages.

``storage.type`` names one. A backend is a :class:`Backend`: the pydantic model of its own
``[storage]`` keys and the function that opens it from them. The built-in ones are listed in
:data:`BUILT_IN`, each as ``"module:attribute"`` of its :class:`Backend`; a backend installed as a
package declares the same thing in its ``pyproject.toml`` under the entry-point group
``keyrotd.storage`` (docs/storage.md, Writing a backend)::

    [project.entry-points."keyrotd.storage"]
    mystore = "mystore:BACKEND"

Nothing is imported until a type is asked for, and then only that type's module: its own
libraries (boto3 for ``aws``) load when it opens. Every key's owners are looked up only to word an
error, or to set aside another type's key (:mod:`keyrotd.config.storage_types`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

from keyrotd.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from keyrotd.storage.interface import Storage

__all__ = [
    "BUILT_IN",
    "COMMON_KEYS",
    "ENTRY_POINT_GROUP",
    "Backend",
    "StorageChoice",
    "chosen_backend",
    "find",
    "known",
    "owners",
    "require_store",
]

ENTRY_POINT_GROUP: Final = "keyrotd.storage"

BUILT_IN: Final[Mapping[str, str]] = {
    "file": "keyrotd.storage.file:BACKEND",
    "aws": "keyrotd.storage.aws.backend:BACKEND",
    "vault": "keyrotd.storage.vault:BACKEND",
    "postgres": "keyrotd.storage.postgres:BACKEND",
}
"""The built-in backends, by ``storage.type``: where each one's :class:`Backend` is. A new one is
one line here; its module defines ``BACKEND = Backend(settings=..., open=...)``."""

COMMON_KEYS: Final = frozenset({"type", "revision_file"})
"""``[storage]`` keys of every type, kept by keyrotd itself (``revision_file``: G8, for all)."""

S = TypeVar("S", bound="BaseModel")


@dataclass(frozen=True)
class Backend(Generic[S]):
    """One storage backend: its settings and how to open it."""

    settings: type[S]
    """The pydantic model of its ``[storage]`` keys (all but ``type`` and ``revision_file``),
    each with a default unless required. Unknown keys are refused whatever the model says; two
    backends may declare the same key (``encryption_key_file``, ``ca_file``)."""
    open: Callable[[S], Storage]
    """The opened store. Heavy imports belong inside it, so that choosing another type, or
    ``keyrotd --help``, never loads them. It reads nothing; refuses bad settings with a
    :class:`~keyrotd.errors.ConfigError`."""
    max_document_size: int
    """The largest document it accepts: ``check-config`` refuses a policy whose documents would
    not fit, without opening the store."""
    check: Callable[[S], None] | None = None
    """What ``run`` and ``check-config`` check before reading the store (the AWS region, a
    credential file); raises a :class:`~keyrotd.errors.ConfigError`. ``None``: nothing."""
    require_store: Callable[[S, str], None] | None = None
    """For the commands that read but never create a store: refuse when none is where the
    settings point (the second argument says where the settings came from). ``None``: a store
    that cannot tell missing from empty reads as empty."""
    store_owner: Callable[[S], Path | None] | None = None
    """A directory whose owner ``revision_file`` takes (the file store's); ``None``: none."""


class StorageChoice(Protocol):
    """The ``[storage]`` settings (:class:`keyrotd.config.StorageSettings`) as storage needs
    them: the type, the G8 revision file and the backend's own settings model."""

    @property
    def type(self) -> str: ...

    @property
    def revision_file(self) -> Path | None: ...

    @property
    def options(self) -> BaseModel: ...


def chosen_backend(kind: str) -> Backend[Any]:
    """The backend of validated settings' ``storage.type``."""
    backend = find(kind)
    if backend is None:  # validated settings name a known type: only a package removed since
        raise ConfigError(f"unknown storage type {kind!r}", "check storage.type")
    return backend


def require_store(choice: StorageChoice, source: str) -> None:
    """For a command that reads but never creates a store: the backend refuses when none is
    where the settings point (:attr:`Backend.require_store`); ``source`` says where they came
    from."""
    backend = chosen_backend(choice.type)
    if backend.require_store is not None:
        backend.require_store(choice.options, source)


def known() -> tuple[str, ...]:
    """Every type's name: the built-in ones, then the installed packages' (none loaded)."""
    plugins = sorted({entry.name.lower() for entry in entry_points(group=ENTRY_POINT_GROUP)})
    return (*BUILT_IN, *(name for name in plugins if name not in BUILT_IN))


def find(kind: str) -> Backend[Any] | None:
    """The backend called ``kind`` (already lowercased), loaded now; ``None`` if none is."""
    if kind in BUILT_IN:
        return _load(BUILT_IN[kind], kind)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name.lower() == kind:
            return _load(entry.value, kind)
    return None


def owners(key: str, besides: str) -> tuple[str, ...]:
    """The types other than ``besides`` that declare ``key`` (only to word a refusal: this
    loads every backend's module; one that fails to load is passed over)."""
    found = []
    for kind in known():
        if kind == besides:
            continue
        try:
            backend = find(kind)
        except ConfigError:
            continue
        if backend is not None and key in backend.settings.model_fields:
            found.append(kind)
    return tuple(found)


def _load(reference: str, kind: str) -> Backend[Any]:
    module_name, _, attribute = reference.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"storage type {kind!r} ({reference}) cannot be loaded: {error}",
            "reinstall the package that provides it, or choose another storage.type",
        ) from None
    from pydantic import BaseModel

    if not isinstance(target, Backend) or not (
        isinstance(target.settings, type) and issubclass(target.settings, BaseModel)
    ):
        raise ConfigError(
            f"storage type {kind!r} ({reference}) is not a keyrotd.storage.registry.Backend",
            "the package must point its entry point at a Backend(settings=..., open=...)",
        )
    return target
