"""PostgreSQL storage on a real server: the shared contract (G8 included), the table, the
one-query refresh, sealing, LISTEN/NOTIFY, errors and what messages show (docs/storage.md)."""

from __future__ import annotations

import functools

import pytest

from keyrotd.storage.postgres.backend import PostgresStorage

from .contract import StorageContract, StorageFactory


class TestPostgresStorage(StorageContract):
    @pytest.fixture
    def storage_factory(self, postgres_dsn: str) -> StorageFactory:
        return functools.partial(PostgresStorage, postgres_dsn)


class TestEncryptedPostgresStorage(StorageContract):
    concurrent_writers = 10  # the compare-and-swap does not depend on sealing: the plain run has 50

    @pytest.fixture
    def storage_factory(self, postgres_dsn: str, encryption_key: bytes) -> StorageFactory:
        return functools.partial(PostgresStorage, postgres_dsn, encryption_key=encryption_key)
