"""Shared test helpers: every test gets a clean environment without KEYROTD_* leaking in, and
the groups pytest-xdist keeps on one worker (``xdist_groups``)."""

from __future__ import annotations

import os

import pytest

SHARED_SESSION_FIXTURES = frozenset({"podman"})
"""Session fixtures too costly to build once per xdist worker: the podman store and the Debian
base images debootstrap makes in it (tests/ops/conftest.py). Their users share one worker."""
CHEAP_MODULE_FIXTURES = frozenset({"aws_environment"})
"""Module fixtures that only set the environment: each worker may run its own."""


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns the marks into groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``--dist loadgroup`` (pyproject.toml) spreads tests one by one over the workers, except
    those marked ``xdist_group``: each group runs on one worker, one test after another. This
    marks the tests of a module-scoped fixture with their module (a fixture such as a cluster of
    daemons or a recorded store is built once, not once per worker) and the users of the
    ``SHARED_SESSION_FIXTURES``. docs/test-harness.md has the rules."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        module = getattr(item, "module", None)
        if info is None or module is None:
            continue
        scopes = {name: defs[-1].scope for name, defs in info.name2fixturedefs.items() if defs}
        shared = sorted(SHARED_SESSION_FIXTURES & {n for n, s in scopes.items() if s == "session"})
        if shared:  # one group only: two marks would make a third group of their own
            item.add_marker(pytest.mark.xdist_group(f"session-{shared[0]}"))
        elif any(s == "module" and n not in CHEAP_MODULE_FIXTURES for n, s in scopes.items()):
            item.add_marker(pytest.mark.xdist_group(module.__name__))


@pytest.fixture(autouse=True)
def _clean_keyrotd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KEYROTD_"):
            monkeypatch.delenv(name)


from tests.support.softhsm import softhsm  # noqa: E402, F401 - a fixture of every test package
