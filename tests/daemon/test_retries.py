"""Retries in the daemon. A permanent storage error under a real daemon is met once per refresh
and counted, never retried in a tight loop, and logged once (then once a minute while it goes
on): a tampered file document, and AWS answering AccessDenied (a scripted endpoint on 127.0.0.1,
reached by the daemon's real boto3 client). A temporary one (a held lock) is retried by the
scheduler with the backoff of the setting."""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from keyrotd.config import KeysetSettings
from keyrotd.daemon.metrics import Metrics
from keyrotd.daemon.scheduling import Rotator
from keyrotd.daemon.state import Board
from keyrotd.retries import Retry
from keyrotd.storage.file import FileStorage
from keyrotd.storage.interface import ReadResult, Versioned
from tests.storage.endpoints import ScriptedEndpoint
from tests.support.daemon import Daemon
from tests.support.moto import AWS_TEST_ENVIRONMENT, AWS_VARIABLES_TO_CLEAR
from tests.support.waiting import wait_for

from .conftest import DaemonFactory

REFRESH = 1.0
WINDOW = 5.0  # five refresh intervals
FAILED = "keyset main: storage read failed"
WRITE_FAILED = "keyset main: storage write failed"


def failure_lines(daemon: Daemon) -> int:
    return sum(1 for event in daemon.log_events() if event.get("message") == FAILED)


def storage_failures(daemon: Daemon) -> float:
    for line in daemon.get("/metrics").body.decode().splitlines():
        if line.startswith('keyrotd_storage_failures_total{keyset="main"}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no keyrotd_storage_failures_total for main")


def count_over_the_window(daemon: Daemon) -> tuple[int, float]:
    """Log lines and counter increments of the failure over ``WINDOW`` seconds."""
    wait_for(lambda: failure_lines(daemon) > 0, 10, "the first failure")
    lines, counted = failure_lines(daemon), storage_failures(daemon)
    time.sleep(WINDOW)
    return failure_lines(daemon) - lines, storage_failures(daemon) - counted


def assert_once_per_refresh(lines: int, counted: float) -> None:
    refreshes = WINDOW / REFRESH
    # one per refresh; a retry loop (0.5 s, 1 s, ... beside the refresh) would count about twice
    assert refreshes - 1 <= counted <= refreshes + 1, counted
    assert lines == 0  # logged when it started, then not again within the minute


def test_a_tampered_document_is_reported_once_per_refresh(daemon: Daemon) -> None:
    document = daemon.data / "main.json"
    damaged = bytearray(document.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    document.write_bytes(bytes(damaged))

    lines, counted = count_over_the_window(daemon)

    assert_once_per_refresh(lines, counted)
    assert daemon.get("/keysets/main/jwks.json").status == 200  # still serving what it loaded
    assert document.read_bytes() == bytes(damaged)  # never overwritten
    assert daemon.stop() == 0


def test_aws_access_denied_is_asked_once_per_refresh(daemon_factory: DaemonFactory) -> None:
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARIABLES_TO_CLEAR}
    denied = ScriptedEndpoint(status=400, code="AccessDeniedException")
    with denied.serve() as url:
        daemon = daemon_factory(
            env={**env, **AWS_TEST_ENVIRONMENT, "KEYROTD_STORAGE__TYPE": "aws"}
            | {"KEYROTD_STORAGE__ENDPOINT_URL": url, "KEYROTD_STORAGE__REGION": "us-east-1"}
        ).start(wait=False)
        asked = len(denied.requests)
        lines, counted = count_over_the_window(daemon)
        asked = len(denied.requests) - asked
        assert daemon.stop() == 0

    assert_once_per_refresh(lines, counted)
    assert counted <= asked <= counted + 2  # botocore does not retry it either: one call a refresh
    assert "AccessDeniedException" in daemon.log_text()


# -- in-process: the scheduler's retry of a temporary failure, paced by the setting ------------

PACE = Retry(attempts=4, base_delay=timedelta(milliseconds=300), max_delay=timedelta(seconds=1))
SETTINGS = KeysetSettings(name="main", algorithm="ES256")


class NotedWrites:
    """The file store, noting when each write failed: the attempts the scheduler makes (the log
    says a failure once a minute only)."""

    def __init__(self, inner: FileStorage) -> None:
        self.inner = inner
        self.max_document_size = inner.max_document_size
        self.failed: list[float] = []

    def location(self, keyset: str) -> str:
        return self.inner.location(keyset)

    def read(self, keyset: str) -> Versioned | None:
        return self.inner.read(keyset)

    def read_many(self, keysets: Sequence[str]) -> dict[str, ReadResult]:
        return self.inner.read_many(keysets)

    def write(self, keyset: str, data: bytes, expected_version: str | None) -> str:
        try:
            return self.inner.write(keyset, data, expected_version)
        except Exception:
            self.failed.append(time.monotonic())
            raise

    def list_keysets(self) -> list[str]:
        return self.inner.list_keysets()

    def close(self) -> None:
        self.inner.close()


def test_a_temporary_failure_is_retried_with_the_backoff_then_left_to_the_refresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The keyset's write lock is held by another process (a real ``flock``): every write times
    out (a temporary error). The scheduler tries again 0.3 s, 0.6 s and 1 s later (the setting's
    four attempts), then waits for the refresh (30 s away); once the lock is free, the next
    attempt succeeds."""
    (tmp_path / "store").mkdir(mode=0o700)
    storage = NotedWrites(FileStorage(tmp_path / "store", lock_timeout=0.05))
    fd = os.open(tmp_path / "store" / "main.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    board = Board()
    metrics = Metrics(lambda: board.snapshot)
    rotator = Rotator(storage, board, metrics, timedelta(seconds=30), retry=PACE)
    caplog.set_level(logging.ERROR, "keyrotd.daemon")

    def failures() -> list[float]:
        return list(storage.failed)

    try:
        rotator.start([SETTINGS])
        wait_for(lambda: len(failures()) >= 4, 10, "four attempts")
        time.sleep(2.0)  # no fifth: the setting's attempts are spent
        times = failures()
        assert len(times) == 4, times
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        for gap, expected in zip(gaps, (0.3, 0.6, 1.0), strict=True):
            assert expected - 0.02 <= gap <= expected + 0.5, gaps
        assert board.snapshot.published.get("main") is None  # nothing written
        os.close(fd)  # the lock is free: the refresh (or an admin command) now succeeds
        rotator.refresh()
        wait_for(lambda: board.snapshot.published.get("main"), 10, "the keyset served")
    finally:
        rotator.shutdown()
        storage.close()
    assert len(failures()) == 4
    assert [r.getMessage() for r in caplog.records] == [WRITE_FAILED]  # once, when it started


def test_a_permanent_failure_is_not_retried_before_the_refresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "store").mkdir(mode=0o700)
    storage = FileStorage(tmp_path / "store")
    (tmp_path / "store" / "main.json").write_bytes(b"not a keyrotd document")
    board = Board()
    rotator = Rotator(storage, board, Metrics(lambda: board.snapshot), timedelta(seconds=30))
    caplog.set_level(logging.ERROR, "keyrotd.daemon")
    try:
        rotator.start([SETTINGS])
        wait_for(lambda: caplog.records, 10, "the failure")
        time.sleep(2.0)  # the backoff of a temporary error would have tried 3 more times
    finally:
        rotator.shutdown()
        storage.close()
    assert [r.getMessage() for r in caplog.records] == [FAILED]
