"""Shared test helpers: every test gets a clean environment without KEYROTD_* leaking in, and a
test marked ``alone`` runs while no other pytest-xdist worker runs one."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _clean_keyrotd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KEYROTD_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _alone(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Under pytest-xdist, every test holds a shared lock for its run and a test marked
    ``@pytest.mark.alone`` (a timing-sensitive race that CPU contention starves) an exclusive
    one. The turnstile, taken first by both, lets a waiting ``alone`` test in before new ones."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent  # the run's directory, above each worker's
    alone = request.node.get_closest_marker("alone") is not None
    with open(shared / "alone.lock", "a") as lock, open(shared / "turnstile.lock", "a") as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield


from tests.support.softhsm import softhsm  # noqa: E402, F401 - a fixture of every test package
