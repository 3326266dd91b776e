"""A permanent storage error under a real daemon is reported once per refresh and counted, never
retried in a tight loop: a tampered file document, and AWS answering AccessDenied (a scripted
endpoint on 127.0.0.1, reached by the daemon's real boto3 client)."""

from __future__ import annotations

import os
import time

from storage.moto_server import AWS_TEST_ENVIRONMENT, AWS_VARIABLES_TO_CLEAR, ScriptedEndpoint

from .conftest import DaemonFactory
from .harness import Daemon, wait_for

REFRESH = 1.0
WINDOW = 5.0  # five refresh intervals
FAILED = "keyset main: storage read failed"


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
    # one per refresh; a retry loop (0.5 s, 1 s, ... beside the refresh) would log about twice
    assert refreshes - 1 <= lines <= refreshes + 1, lines
    assert counted == lines


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
    assert lines <= asked <= lines + 2  # botocore does not retry it either: one call a refresh
    assert "AccessDeniedException" in daemon.log_text()
