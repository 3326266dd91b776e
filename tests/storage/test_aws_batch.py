"""AWS batched reads (``AwsStorage.read_many``) and request counting, against moto's server.

Every test talks HTTP to a real local endpoint (moto's server, or a scripted fault server);
boto3 is never patched. Each test gets its own secret prefix on one shared moto server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from keyrotd.errors import (
    ConfigError,
    CorruptDocumentError,
    KeyrotdError,
    StorageError,
    TemporaryStorageError,
)
from keyrotd.storage.aws.batch import READERS
from keyrotd.storage.aws.storage import AwsStorage, RetryPolicy
from keyrotd.storage.interface import Versioned
from tests.storage.endpoints import ScriptedEndpoint, StageConditionProxy, closed_port_url
from tests.support.moto import REGION

FAST_FAILURE = RetryPolicy(max_attempts=2, connect_timeout=0.5, read_timeout=0.5)


pytestmark = pytest.mark.usefixtures("aws_environment")


def counted(storage: AwsStorage, action: Callable[[], object]) -> dict[str, int]:
    """The requests ``action`` sent, per operation."""
    before = storage.request_counts()
    action()
    after = storage.request_counts()
    return {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name)}


def scripted_storage(url: str, prefix: str) -> AwsStorage:
    return AwsStorage(secret_prefix=prefix, region=REGION, endpoint_url=url, retry=FAST_FAILURE)


# Reading in batches


def test_45_keysets_are_read_in_3_requests(storage: AwsStorage) -> None:
    names = [f"k{n:02d}" for n in range(45)]
    versions = {name: storage.write(name, f'{{"n": "{name}"}}'.encode(), None) for name in names}
    results: dict[str, object] = {}

    requests = counted(storage, lambda: results.update(storage.read_many(names)))

    assert requests == {"BatchGetSecretValue": 3}
    assert list(results) == names
    for name in names:
        assert results[name] == Versioned(
            data=f'{{"n": "{name}"}}'.encode(),
            version=versions[name],
            location=storage.location(name),
        )
        assert results[name] == storage.read(name)


def test_keysets_never_written_are_none(storage: AwsStorage, sm: Any) -> None:
    storage.write("alpha", b"one", None)
    sm.create_secret(Name=storage.secret_name("empty"))  # created beforehand, no value yet

    results: dict[str, object] = {}
    names = ["never", "alpha", "empty", "also-never"]

    requests = counted(storage, lambda: results.update(storage.read_many(names)))

    # moto fails the whole request for a secret without a value (AWS answers an Errors entry):
    # that request is then settled by one read each.
    assert requests in ({"BatchGetSecretValue": 1}, {"BatchGetSecretValue": 1, "GetSecretValue": 4})

    assert results["never"] is None
    assert results["also-never"] is None
    assert results["empty"] is None
    assert storage.read("empty") is None
    alpha = results["alpha"]
    assert isinstance(alpha, Versioned)
    assert alpha.data == b"one"


def test_a_corrupt_secret_fails_alone(storage: AwsStorage, sm: Any) -> None:
    storage.write("alpha", b"one", None)
    sm.create_secret(Name=storage.secret_name("beta"), SecretBinary=b"\x01 not ours")
    storage.write("gamma", b"\xff\x00", None)  # binary, with keyrotd's marker

    results = storage.read_many(["alpha", "beta", "gamma"])

    corrupt = results["beta"]
    assert isinstance(corrupt, CorruptDocumentError)
    with pytest.raises(CorruptDocumentError) as caught:
        storage.read("beta")
    assert str(corrupt) == str(caught.value)
    assert storage.secret_name("beta") in str(corrupt)
    assert results["alpha"] == storage.read("alpha")
    gamma = results["gamma"]
    assert isinstance(gamma, Versioned)
    assert gamma.data == b"\xff\x00"


def test_the_version_after_two_swaps_is_the_current_one(
    make_storage: Callable[..., AwsStorage],
) -> None:
    """keyrotd's compare-and-swap moves AWSCURRENT with UpdateSecretVersionStage; a batch read
    must still see the version that holds AWSCURRENT, as ``read`` does."""
    writer, reader = make_storage(), make_storage()
    first = writer.write("alpha", b"one", None)
    second = writer.write("alpha", b"two", first)
    third = writer.write("alpha", b"three", second)
    writer.write("beta", b"untouched", None)

    results: dict[str, object] = {}

    requests = counted(reader, lambda: results.update(reader.read_many(["alpha", "beta"])))

    assert requests["BatchGetSecretValue"] == 1
    assert requests.get("GetSecretValue", 0) <= 1  # moto's stale answer for alpha, read again
    alpha = results["alpha"]
    assert isinstance(alpha, Versioned)
    assert (alpha.data, alpha.version) == (b"three", third)
    assert alpha == reader.read("alpha")
    assert results["beta"] == reader.read("beta")


def test_moto_batch_answers_a_stale_version_after_a_stage_move(
    storage: AwsStorage, sm: Any
) -> None:
    """Why read_many checks each entry's VersionStages: moto 5.x answers BatchGetSecretValue
    from the secret's first version after UpdateSecretVersionStage moved AWSCURRENT. If this
    test fails, moto was fixed: the fallback then costs nothing and can stay."""
    first = storage.write("alpha", b"one", None)
    second = storage.write("alpha", b"two", first)

    entry = sm.batch_get_secret_value(SecretIdList=[storage.secret_name("alpha")])["SecretValues"][
        0
    ]

    assert (entry["VersionId"], entry["SecretString"]) == (first, "one")
    assert "AWSCURRENT" not in entry["VersionStages"]
    stored = storage.read("alpha")
    assert stored is not None
    assert stored.version == second


def test_per_secret_errors_read_as_read_would_raise_them(storage: AwsStorage, sm: Any) -> None:
    storage.write("alpha", b"one", None)
    storage.write("gone", b"one", None)
    sm.delete_secret(SecretId=storage.secret_name("gone"), RecoveryWindowInDays=7)

    results = storage.read_many(["alpha", "gone", "Not Valid!"])

    gone = results["gone"]
    assert isinstance(gone, StorageError)
    assert not gone.temporary
    with pytest.raises(StorageError) as caught:
        storage.read("gone")
    assert str(gone) == str(caught.value)
    assert f"restore-secret --secret-id {storage.secret_name('gone')}" in gone.hint
    assert isinstance(results["Not Valid!"], ConfigError)
    assert results["alpha"] == storage.read("alpha")


def test_duplicates_and_an_empty_list(storage: AwsStorage) -> None:
    storage.write("alpha", b"one", None)

    assert counted(storage, lambda: storage.read_many([])) == {}
    results = storage.read_many(["alpha", "alpha"])

    assert list(results) == ["alpha"]
    assert results["alpha"] == storage.read("alpha")


# A denied batch: one warning, then one read each


def test_a_denied_batch_falls_back_to_one_read_each_with_one_warning(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = ScriptedEndpoint(status=200, answers=[(400, "AccessDeniedException")])
    caplog.set_level(logging.WARNING, logger="keyrotd")
    with endpoint.serve() as url:
        storage = scripted_storage(url, prefix)
        first = storage.read_many(["alpha", "beta"])
        second = storage.read_many(["alpha", "beta", "gamma"])
        counts = storage.request_counts()
        storage.close()

    assert (
        endpoint.requests
        == ["secretsmanager.BatchGetSecretValue"] + ["secretsmanager.GetSecretValue"] * 5
    )
    assert counts == {"BatchGetSecretValue": 1, "GetSecretValue": 5}
    for results in (first, second):
        for result in results.values():
            assert isinstance(result, Versioned)
            assert result.data == b"scripted"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "secretsmanager:BatchGetSecretValue" in message
    assert '"Resource": "*"' in message
    assert "\n" not in message


def test_secrets_denied_to_a_batch_but_not_alone_fall_back_with_one_warning(
    moto_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An IAM condition on secretsmanager:VersionStage (the README's policy before batching)
    may deny each secret of a batch, which names no stage, while the reads that ask for
    AWSCURRENT pass: the refresh must still read every keyset, and say once why."""
    proxy = StageConditionProxy(moto_url)
    caplog.set_level(logging.WARNING, logger="keyrotd")
    with proxy.serve() as url:
        storage = AwsStorage(secret_prefix=prefix, region=REGION, endpoint_url=url)
        versions = {name: storage.write(name, name.encode(), None) for name in ("a", "b", "c")}
        first = storage.read_many(["a", "b", "c", "never"])
        second = storage.read_many(["a", "b", "c", "never"])
        counts = storage.request_counts()
        storage.close()

    assert proxy.denied == [f"{prefix}{name}" for name in ("a", "b", "c", "never")]
    for results in (first, second):
        assert results["never"] is None
        for name, version in versions.items():
            result = results[name]
            assert isinstance(result, Versioned)
            assert (result.data, result.version) == (name.encode(), version)
    assert counts["BatchGetSecretValue"] == 1
    assert counts["GetSecretValue"] == 8
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "secretsmanager:VersionStage" in warnings[0].getMessage()


# Whole requests failing: the error for every keyset of the request


def test_an_unreachable_endpoint_is_temporary_for_each_keyset(prefix: str) -> None:
    storage = scripted_storage(closed_port_url(), prefix)
    names = [f"k{n:02d}" for n in range(25)]

    results = storage.read_many(names)
    counts = storage.request_counts()
    storage.close()

    assert counts == {"BatchGetSecretValue": 4}  # 2 requests of 20 and 5, 2 attempts each
    for name in names:
        error = results[name]
        assert isinstance(error, TemporaryStorageError)
        assert f"AWS secret {prefix}{name} ({REGION})" in error.message
        assert "Could not connect to the endpoint URL" in error.message


def test_an_outage_fails_the_requests_not_sent_yet_without_sending_them(prefix: str) -> None:
    """10,000 keysets are 500 requests: one refresh in an outage must not wait out 500 rounds of
    timeouts. The first whole-request failure fails the rest of that refresh, unsent."""
    endpoint = ScriptedEndpoint(status=400, code="ThrottlingException")
    names = [f"k{n:03d}" for n in range(400)]  # 20 requests
    with endpoint.serve() as url:
        storage = scripted_storage(url, prefix)
        results = storage.read_many(names)
        counts = storage.request_counts()
        storage.close()

    assert counts["BatchGetSecretValue"] <= READERS * 2  # those in flight at once, 2 attempts
    for name in names:
        error = results[name]
        assert isinstance(error, TemporaryStorageError)
        assert f"AWS secret {prefix}{name} ({REGION})" in error.message


def test_a_throttled_batch_is_temporary_and_every_attempt_is_counted(prefix: str) -> None:
    endpoint = ScriptedEndpoint(status=400, code="ThrottlingException")
    with endpoint.serve() as url:
        storage = scripted_storage(url, prefix)
        results = storage.read_many(["alpha", "beta"])
        counts = storage.request_counts()
        storage.close()

    assert endpoint.requests == ["secretsmanager.BatchGetSecretValue"] * 2
    assert counts == {"BatchGetSecretValue": 2}
    for name in ("alpha", "beta"):
        error = results[name]
        assert isinstance(error, TemporaryStorageError)
        assert f"{prefix}{name}" in error.message
        assert "after 2 attempts" in error.message


# Counting requests


def test_request_counts_per_operation(make_storage: Callable[..., AwsStorage]) -> None:
    storage, other = make_storage(), make_storage()

    assert storage.request_counts() == {}
    version = storage.write("alpha", b"one", None)
    storage.read("alpha")
    version = storage.write("alpha", b"two", version)
    other.write("alpha", b"three", version)
    with pytest.raises(KeyrotdError):
        storage.write("alpha", b"lost", version)
    storage.list_keysets()

    assert storage.request_counts() == {
        "CreateSecret": 1,
        "GetSecretValue": 1,
        "PutSecretValue": 2,
        "UpdateSecretVersionStage": 2,
        "DescribeSecret": 1,
        "ListSecrets": 1,
    }


def test_request_counts_are_thread_safe(storage: AwsStorage) -> None:
    storage.write("alpha", b"one", None)
    before = storage.request_counts()["CreateSecret"]
    threads = [
        threading.Thread(target=lambda: [storage.read("alpha") for _ in range(10)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert storage.request_counts() == {"CreateSecret": before, "GetSecretValue": 40}
