"""Shared test helpers: every test gets a clean environment without KEYROTD_* leaking in, and a
test marked ``alone`` runs while no other pytest-xdist worker runs one."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _clean_keyrotd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KEYROTD_"):
            monkeypatch.delenv(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[object]:
    """Under pytest-xdist, every test holds a shared lock from its setup (module fixtures
    included) to its teardown, and a test marked ``@pytest.mark.alone`` (a timing-sensitive race
    that CPU contention starves) an exclusive one. The turnstile, taken first by both, lets a
    waiting ``alone`` test in before new ones start (docs/architecture.md)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        return (yield)
    shared = Path(tempfile.gettempdir()) / f"keyrotd-tests-{run}"
    shared.mkdir(exist_ok=True)
    alone = item.get_closest_marker("alone") is not None
    with open(shared / "alone.lock", "a") as lock, open(shared / "turnstile.lock", "a") as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        return (yield)


from tests.support.softhsm import softhsm  # noqa: E402, F401 - a fixture of every test package
