"""Fixtures shared by the podman tests (test_container, test_systemd_boot)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.containers import Podman


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    """One podman store for the session, removed with every container in it at the end."""
    root = Path(tempfile.mkdtemp(prefix="keyrotd-podman-", dir="/var/tmp"))
    try:
        yield Podman(root)
    finally:
        subprocess.run(
            Podman(root).argv("rm", "--all", "--force", "--time", "0"),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)
