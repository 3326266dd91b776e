"""The periodic refresh at scale: an unchanged store costs one batched read, not a read each.

At 10,000 keysets a refresh that re-read and re-published every keyset took longer than the
interval (the daemon never rested) and, on AWS, cost one GetSecretValue per keyset per replica
every 30 s. Now a refresh reads 20 secrets per BatchGetSecretValue and syncs only the keysets
that changed. Counted here through the daemon's own ``keyrotd_storage_requests_total``, against
moto's server; a change written by another process (the CLI) is still picked up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from keyrotd.daemon.scheduling import REPLICA_SPREAD, replica_offset
from tests.daemon.conftest import DaemonFactory
from tests.support.http import metric
from tests.support.moto import AWS_TEST_ENVIRONMENT, AWS_VARIABLES_TO_CLEAR, moto_endpoint
from tests.support.process import Daemon

KEYSETS = 45  # three batches of 20, 20 and 5


def requests(daemon: Daemon, operation: str) -> float:
    series = f'keyrotd_storage_requests_total{{operation="{operation}"}}'
    return metric(daemon, series) or 0.0


def between_refreshes(daemon: Daemon) -> tuple[float, float]:
    """(GetSecretValue, BatchGetSecretValue) counts read where no refresh is half done: the
    batch count held still for 0.2 s (a refresh sends its 3 batches within milliseconds; under
    load, a sample taken in the middle of one counted 13 batches for 4 whole refreshes)."""
    batched = requests(daemon, "BatchGetSecretValue")
    for _ in range(25):
        single = requests(daemon, "GetSecretValue")
        time.sleep(0.2)
        again = requests(daemon, "BatchGetSecretValue")
        if again == batched:
            return single, batched
        batched = again
    raise AssertionError("the batch count never held still for 0.2 s")


def test_a_refresh_of_an_unchanged_aws_store_is_one_request_per_20_keysets(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARIABLES_TO_CLEAR}
    keysets: list[dict[str, object]] = [
        {"name": f"tenant{n:02d}", "algorithm": "ES256"} for n in range(KEYSETS)
    ]
    with moto_endpoint() as url:
        aws = {**env, **AWS_TEST_ENVIRONMENT, "KEYROTD_STORAGE__TYPE": "aws"}
        aws |= {"KEYROTD_STORAGE__ENDPOINT_URL": url, "KEYROTD_STORAGE__REGION": "us-east-1"}
        daemon = daemon_factory(keysets=keysets, env=aws).start()  # refresh_interval: 1s
        time.sleep(1.5)  # the first refresh after the bootstrap
        single, batched = between_refreshes(daemon)
        started = time.monotonic()
        time.sleep(4)
        later_single, later_batched = between_refreshes(daemon)
        elapsed = time.monotonic() - started
        single, batched = later_single - single, later_batched - batched

        assert single == 0  # nothing changed: no keyset was read alone
        assert batched % 3 == 0  # each refresh: 3 requests for 45 keysets
        assert 3 <= batched / 3 <= elapsed + 1  # about one refresh a second

        # A change by another process (the CLI) is still seen at the next refresh.
        before = daemon.get("/keysets/tenant07/jwks.json").json()
        read_alone = requests(daemon, "GetSecretValue")
        cli = [sys.executable, "-m", "keyrotd.cli", "--config", str(daemon.config)]
        subprocess.run(
            [*cli, "rotate", "--now", "--force", "--keyset", "tenant07"],
            env=aws,
            check=True,
            timeout=60,
        )
        daemon.wait_for(
            lambda: daemon.get("/keysets/tenant07/jwks.json").json() != before,
            10,
            "the daemon to serve the rotation the CLI wrote",
        )
        # that keyset, read alone (and by the batch check: moto answers it stale, see aws/batch.py)
        assert requests(daemon, "GetSecretValue") - read_alone <= 4
        assert daemon.stop() == 0


def test_replica_offsets_are_stable_spread_and_bounded() -> None:
    day = timedelta(days=1)
    offsets = [replica_offset("host-a 127.0.0.1:8080", f"tenant{n}", day) for n in range(2000)]

    assert offsets == [
        replica_offset("host-a 127.0.0.1:8080", f"tenant{n}", day) for n in range(2000)
    ]
    assert all(timedelta(0) <= o < REPLICA_SPREAD for o in offsets)
    tenths = {int(o / REPLICA_SPREAD * 10) for o in offsets}
    assert tenths == set(range(10))  # spread over the whole window
    others = [replica_offset("host-b 127.0.0.1:8080", f"tenant{n}", day) for n in range(2000)]
    assert sum(a == b for a, b in zip(offsets, others, strict=True)) == 0
    # a short rotation_period (drills, tests) delays its writes by a twentieth of it at most
    assert replica_offset("host-a", "main", timedelta(seconds=4)) < timedelta(seconds=0.2)


def test_the_last_successful_read_advances_at_every_refresh(daemon: Daemon) -> None:
    """Alerts watch ``keyrotd_storage_last_success_timestamp_seconds``: a refresh that finds
    nothing new still succeeded, and says so (it publishes nothing, but the time moves)."""
    series = 'keyrotd_storage_last_success_timestamp_seconds{keyset="main"}'
    first = metric(daemon, series)
    assert first is not None
    daemon.wait_for(
        lambda: (metric(daemon, series) or 0) > first + 1,
        10,
        "the last successful read to move past the first one (refresh_interval: 1s)",
    )
    assert daemon.stop() == 0
