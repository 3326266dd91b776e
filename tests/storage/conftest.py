"""Fixtures shared by the storage backend tests."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def encryption_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def key_file(tmp_path: Path, encryption_key: bytes) -> Path:
    """A key file as an operator makes it: ``head -c32 /dev/urandom | base64 > FILE``."""
    path = tmp_path / "storage.key"
    path.write_text(base64.b64encode(encryption_key).decode() + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def set_umask() -> Iterator[Callable[[int], int]]:
    """Set the process umask for one test; the original is restored afterwards."""
    original = os.umask(0o022)
    os.umask(original)
    yield os.umask
    os.umask(original)
