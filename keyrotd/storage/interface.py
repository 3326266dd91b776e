"""The storage seam: what every backend provides, its value type and its errors.

A backend stores one opaque document (bytes) per keyset under a version. Writes are atomic and
conditional: ``write`` succeeds only if the stored version is still ``expected_version`` (or, with
``expected_version=None``, if nothing is stored yet), else it raises :class:`ConflictError` and
the caller re-reads and re-plans (G6).

Errors: every failure is a :class:`StorageError`; each kind declares ``temporary``. The ones
worth retrying (unreachable, throttled, a held lock, a lost compare-and-swap) are
:class:`TemporaryStorageError` or :class:`ConflictError`; the writer re-plans after a conflict
and the daemon retries the others with :mod:`keyrotd.retries`. Everything else is permanent and
is reported, not retried: a document that cannot be read back is a :class:`CorruptDocumentError`
naming its location, and it is never overwritten.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from keyrotd.errors import (
    ConfigError,
    ConflictError,
    CorruptDocumentError,
    DocumentTooLargeError,
    KeyrotdError,
    StorageError,
    TemporaryStorageError,
)

__all__ = [
    "BaseStorage",
    "ConflictError",
    "CorruptDocumentError",
    "DocumentTooLargeError",
    "ReadResult",
    "Storage",
    "StorageError",
    "TemporaryStorageError",
    "Versioned",
    "checked_name",
    "read_each",
]


@dataclass(frozen=True)
class Versioned:
    """A stored document, the version it was read at, and where it lives (for messages)."""

    data: bytes
    version: str
    location: str


ReadResult = Versioned | None | KeyrotdError
"""What ``read`` of one keyset gives, or the error it raises, as ``read_many`` reports it."""


class Storage(Protocol):
    """One keyset document per name, read and compare-and-swapped by version."""

    max_document_size: int
    """Largest document (bytes, as given to ``write``) this backend accepts."""

    def location(self, keyset: str) -> str:
        """Where the keyset's document lives, for humans: a file path or a secret name."""
        ...

    def read(self, keyset: str) -> Versioned | None:
        """The current document, or None if the keyset was never written."""
        ...

    def read_many(self, keysets: Sequence[str]) -> dict[str, ReadResult]:
        """``read`` of every keyset in ``keysets``, in as few requests as the backend allows
        (the periodic refresh). Each keyset maps to what ``read`` would return, or to the
        :class:`KeyrotdError` it would raise: one keyset's failure never hides the others'."""
        ...

    def write(self, keyset: str, data: bytes, expected_version: str | None) -> str:
        """Atomically replace the document if its version is still ``expected_version``.

        ``expected_version=None`` creates the document and fails if one exists. Returns the new
        version. Raises :class:`ConflictError` when another writer won,
        :class:`DocumentTooLargeError` above ``max_document_size``.
        """
        ...

    def list_keysets(self) -> list[str]:
        """Names of the keysets that have a stored document."""
        ...

    def close(self) -> None:
        """Release connections and locks."""
        ...


def checked_name(keyset: str) -> str:
    """``keyset``, refused unless it is a keyset name (every backend builds a path, a secret
    name or a row key from it: nothing else may reach one)."""
    from keyrotd.model import KEYSET_NAME

    if not KEYSET_NAME.fullmatch(keyset):
        raise ConfigError(
            f"invalid keyset name {keyset!r}",
            "use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return keyset


def read_each(storage: Storage, keysets: Sequence[str]) -> dict[str, ReadResult]:
    """``read_many`` for a backend without batched reads: one ``read`` per keyset."""
    results: dict[str, ReadResult] = {}
    for keyset in keysets:
        try:
            results[keyset] = storage.read(keyset)
        except KeyrotdError as error:
            results[keyset] = error
    return results


class BaseStorage(ABC):
    """A base for backends: implement the core of :class:`Storage` (``max_document_size``,
    ``location``, ``read``, ``write``, ``list_keysets``); ``read_many`` defaults to one ``read``
    per keyset and ``close`` to nothing. A backend that can read many documents in one request
    overrides ``read_many`` (AWS: ``BatchGetSecretValue``)."""

    max_document_size: int

    @abstractmethod
    def location(self, keyset: str) -> str: ...

    @abstractmethod
    def read(self, keyset: str) -> Versioned | None: ...

    @abstractmethod
    def write(self, keyset: str, data: bytes, expected_version: str | None) -> str: ...

    @abstractmethod
    def list_keysets(self) -> list[str]: ...

    def read_many(self, keysets: Sequence[str]) -> dict[str, ReadResult]:
        return read_each(self, keysets)

    def close(self) -> None:
        return None
