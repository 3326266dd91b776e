"""Fixtures that run ``keyrotd run`` as a real subprocess on a free port with a temp config."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon, make_daemon

DaemonFactory = Callable[..., Daemon]


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[DaemonFactory]:
    """``daemon_factory(**make_daemon options)``: a configured, not yet started daemon."""
    made: list[Daemon] = []

    def factory(name: str = "daemon", **options: Any) -> Daemon:
        daemon = make_daemon(tmp_path / name, **options)
        made.append(daemon)
        return daemon

    yield factory
    for daemon in made:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


@pytest.fixture
def daemon(daemon_factory: DaemonFactory) -> Daemon:
    """A running daemon: one ES256 keyset ``main``, admin endpoints enabled, ready."""
    return daemon_factory().start()
