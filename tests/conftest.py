"""Shared test helpers: every test gets a clean environment without KEYROTD_* leaking in."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_keyrotd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KEYROTD_"):
            monkeypatch.delenv(name)


from tests.support.softhsm import softhsm  # noqa: E402, F401 - a fixture of every test package
