"""The retry setting on real stores: a temporary error (a lost compare-and-swap, a held lock,
throttling) is retried with the configured backoff, counted with an injected sleep; a permanent
one (permission denied, a tampered document, access denied) says so and is not retried."""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keyrotd.errors import (
    ConfigError,
    CorruptDocumentError,
    StorageError,
    TemporaryStorageError,
    is_temporary,
)
from keyrotd.lifecycle.commands import Rotate
from keyrotd.retries import COMPARE_AND_SWAP, STORAGE, Retry
from keyrotd.storage import Storage
from keyrotd.storage.aws.storage import AwsStorage, RetryPolicy
from keyrotd.storage.file import FileStorage
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.support.keysets import POLICY
from tests.support.moto import REGION, fake_aws_environment, moto_endpoint

from .endpoints import ScriptedEndpoint

SPEC = KeysetSpec("default", "ES256", 2048, POLICY)
PACED = Retry(
    attempts=8, base_delay=timedelta(milliseconds=10), max_delay=timedelta(milliseconds=40)
)
"""No jitter: the waits are exactly 10, 20, 40, 40 ms."""
NO_BOTOCORE_RETRY = RetryPolicy(max_attempts=1, connect_timeout=1, read_timeout=2)


@pytest.fixture(scope="module")
def aws_environment() -> Iterator[None]:
    with fake_aws_environment():
        yield


@pytest.fixture(scope="module")
def moto_url(aws_environment: None) -> Iterator[str]:
    with moto_endpoint() as url:
        yield url


@pytest.fixture(params=["file", "aws"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "file":
        yield FileStorage(tmp_path / "store")
        return
    url = request.getfixturevalue("moto_url")
    store = AwsStorage(
        secret_prefix=f"retry-{uuid.uuid4().hex[:12]}/", region=REGION, endpoint_url=url
    )
    yield store
    store.close()


def racing_clock(storage: Storage, races: int) -> Callable[[], datetime]:
    """A clock for the writer under test that, the first ``races`` times it is read (between
    the writer's read and its write), lets a second real writer change the document first."""
    rival = KeysetWriter(storage, SPEC)
    left = [races]

    def now() -> datetime:
        if left[0] > 0:
            left[0] -= 1
            rival.apply(Rotate(now=True))
        return datetime.now(UTC)

    return now


# -- the setting -------------------------------------------------------------------------------


def test_the_delay_doubles_up_to_the_cap_and_jitter_only_shortens_it() -> None:
    assert [PACED.delay(n).total_seconds() for n in range(1, 6)] == [0.01, 0.02, 0.04, 0.04, 0.04]
    jittered = Retry(4, timedelta(seconds=1), timedelta(seconds=4), jitter=0.25)
    assert jittered.delay(3, draw=0.0) == timedelta(seconds=4)
    assert jittered.delay(3, draw=0.999) > timedelta(seconds=3)
    assert jittered.capped(timedelta(seconds=2)).delay(5, draw=0.0) == timedelta(seconds=2)
    assert COMPARE_AND_SWAP.attempts == 50 and STORAGE.base_delay == timedelta(milliseconds=500)
    with pytest.raises(ValueError, match="invalid retry setting"):
        Retry(0, timedelta(0), timedelta(0))


# -- temporary: retried with the backoff ------------------------------------------------------


def test_lost_compare_and_swaps_are_retried_with_the_backoff(storage: Storage) -> None:
    KeysetWriter(storage, SPEC).apply()
    sleeps: list[float] = []
    writer = KeysetWriter(storage, SPEC, racing_clock(storage, 6), retry=PACED, sleep=sleeps.append)

    outcome = writer.apply(Rotate(now=True))

    # race 1 lands while the writer generates its key (no write yet); races 2-6 each beat a write
    assert sleeps == [0.01, 0.02, 0.04, 0.04, 0.04]
    assert outcome.written and outcome.attempts == 7
    assert writer.load().keyset.active is not None
    assert writer.load().keyset.active.kid == outcome.keyset.active.kid  # type: ignore[union-attr]


def test_the_writer_gives_up_after_the_attempts_of_the_setting(storage: Storage) -> None:
    KeysetWriter(storage, SPEC).apply()
    sleeps: list[float] = []
    three = Retry(3, timedelta(milliseconds=5), timedelta(milliseconds=5))
    writer = KeysetWriter(
        storage, SPEC, racing_clock(storage, 99), retry=three, sleep=sleeps.append
    )

    with pytest.raises(StorageError, match="gave up after 3 conflicting writes"):
        writer.apply(Rotate(now=True))
    assert sleeps == [0.005, 0.005]  # attempt 1 generated the key; attempts 2 and 3 lost


def test_a_held_file_lock_and_aws_throttling_are_temporary(tmp_path: Path, moto_url: str) -> None:
    store = FileStorage(tmp_path / "store", lock_timeout=0.05)
    store.write("default", b"{}", None)
    fd = os.open(tmp_path / "store" / "default.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(TemporaryStorageError) as held:
            store.write("default", b"{}", "1")
    finally:
        os.close(fd)
    throttled = ScriptedEndpoint(status=400, code="ThrottlingException")
    with throttled.serve() as url:
        aws = AwsStorage(region=REGION, endpoint_url=url, retry=NO_BOTOCORE_RETRY)
        with pytest.raises(TemporaryStorageError) as slow:
            aws.read("default")
        aws.close()
    assert is_temporary(held.value) and is_temporary(slow.value)
    assert throttled.requests == ["secretsmanager.GetSecretValue"]


# -- permanent: said so, not retried ----------------------------------------------------------


def test_permission_denied_tampering_and_access_denied_are_permanent(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = FileStorage(directory)
    KeysetWriter(store, SPEC).apply()
    document = directory / "default.json"
    damaged = bytearray(document.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    document.write_bytes(bytes(damaged))
    sleeps: list[float] = []
    writer = KeysetWriter(store, SPEC, retry=PACED, sleep=sleeps.append)
    with pytest.raises(CorruptDocumentError) as tampered:
        writer.apply(Rotate(now=True))
    denied = ScriptedEndpoint(status=400, code="AccessDeniedException")
    with denied.serve() as url:
        aws = AwsStorage(region=REGION, endpoint_url=url)  # botocore's own retries as shipped
        with pytest.raises(StorageError) as refused:
            KeysetWriter(aws, SPEC, retry=PACED, sleep=sleeps.append).apply()
        aws.close()
    assert not is_temporary(tampered.value) and not is_temporary(refused.value)
    assert denied.requests == ["secretsmanager.GetSecretValue"]  # once: nobody retried it
    assert sleeps == []
    if os.geteuid() != 0:  # root reads through mode 000
        directory.chmod(0o000)
        try:
            with pytest.raises(ConfigError, match="permission denied") as unreadable:
                store.read("default")
        finally:
            directory.chmod(0o700)
        assert not is_temporary(unreadable.value)
    assert not is_temporary(ValueError("a bug")) and not ConfigError("x").temporary
