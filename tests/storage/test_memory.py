"""The in-memory example backend passes the whole storage contract (keyrotd/testing/memory.py)."""

from __future__ import annotations

import functools

import pytest

from keyrotd.testing.memory import MemoryStorage, MemoryStore
from keyrotd.testing.storage import StorageContract, StorageFactory


class TestMemoryStorage(StorageContract):
    concurrent_writers = 0  # one process's dict: no writer processes to share it

    @pytest.fixture
    def storage_factory(self) -> StorageFactory:
        return functools.partial(MemoryStorage, MemoryStore())
