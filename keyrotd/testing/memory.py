"""The smallest complete storage backend: documents in a dict, in one process.

Read it to write a backend (docs/storage.md, Writing a backend). It passes the whole contract
(tests/storage/test_memory.py runs :class:`~keyrotd.testing.storage.StorageContract` on it), but a
daemon and a CLI are two processes that would each see their own dict: it is not a built-in
``storage.type``. A real backend keeps the same shape and puts the documents where every replica
and CLI reaches them.

What a backend must get right, each marked below:

1. Names: refuse a keyset name that is not one (``KEYSET_NAME``), before it reaches a path, a
   URL or a query.
2. Size: refuse a document above ``max_document_size`` with :class:`DocumentTooLargeError`,
   before anything is written.
3. The compare-and-swap: ``write`` replaces the document only if its version is still the one the
   caller read (``None``: only if there is none yet), atomically; otherwise
   :class:`ConflictError`, and the writer re-reads and re-plans.
4. Versions: every write gives a new version, never one used before for that keyset.
5. Errors: a failure worth retrying is a :class:`TemporaryStorageError` (here: none can happen).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Final

from pydantic import BaseModel, ConfigDict

from keyrotd.storage.interface import (
    BaseStorage,
    ConflictError,
    DocumentTooLargeError,
    Versioned,
    checked_name,
)
from keyrotd.storage.registry import Backend

__all__ = ["BACKEND", "MemorySettings", "MemoryStorage", "MemoryStore"]


@dataclass
class MemoryStore:
    """What several :class:`MemoryStorage` share, as replicas share a server: the documents,
    by keyset, with their versions; one lock makes each compare-and-swap atomic."""

    documents: dict[str, Versioned] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


class MemorySettings(BaseModel):
    """Its ``[storage]`` keys: a backend's settings are a frozen pydantic model that forbids
    unknown keys. keyrotd validates them, refuses another type's keys, and keeps ``type`` and
    ``revision_file`` for itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_document_size: int = 1024 * 1024


class MemoryStorage(BaseStorage):
    """Documents in a :class:`MemoryStore`. :class:`BaseStorage` gives ``read_many`` (one
    ``read`` per keyset) and ``close``; a backend that can read many in one request overrides
    ``read_many``."""

    def __init__(self, store: MemoryStore | None = None, max_document_size: int = 1024 * 1024):
        self.store = MemoryStore() if store is None else store
        self.max_document_size = max_document_size

    @classmethod
    def from_settings(cls, settings: MemorySettings) -> MemoryStorage:
        """The opener keyrotd calls with the validated settings (``Backend.open``)."""
        return cls(max_document_size=settings.max_document_size)

    def location(self, keyset: str) -> str:
        """Where the document lives, for people: error messages and ``status`` show it."""
        return f"memory:{checked_name(keyset)}"

    def read(self, keyset: str) -> Versioned | None:
        name = checked_name(keyset)  # 1
        with self.store.lock:
            return self.store.documents.get(name)

    def write(self, keyset: str, data: bytes, expected_version: str | None) -> str:
        name = checked_name(keyset)  # 1
        if len(data) > self.max_document_size:  # 2
            raise DocumentTooLargeError(
                f"the document for {name} is {len(data)} bytes, above this store's limit of "
                f"{self.max_document_size}; nothing was written",
                "keep fewer keys in the keyset",
            )
        with self.store.lock:  # 3: read the version and replace under one lock
            current = self.store.documents.get(name)
            if (None if current is None else current.version) != expected_version:
                raise ConflictError(
                    f"{self.location(name)} changed since it was read",
                    "re-read the keyset and try again",
                )
            version = str(next(self.store.counter))  # 4: a counter never repeats
            self.store.documents[name] = Versioned(data, version, self.location(name))
        return version

    def list_keysets(self) -> list[str]:
        with self.store.lock:
            return sorted(self.store.documents)


BACKEND: Final = Backend(
    settings=MemorySettings, open=MemoryStorage.from_settings, max_document_size=1024 * 1024
)
"""How a backend declares itself: its settings model and its opener. A package points its
``keyrotd.storage`` entry point at such an object (docs/storage.md)."""
