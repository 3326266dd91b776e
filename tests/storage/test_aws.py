"""AWS Secrets Manager storage: the shared contract and the AWS specifics, against moto's server.

Every test talks HTTP to a real local endpoint (moto's server, or a scripted fault server); boto3
is never patched. Each test gets its own secret prefix, so one server serves the whole session.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from keyrotd.errors import (
    ConfigError,
    ConflictError,
    CorruptDocumentError,
    DocumentTooLargeError,
    StorageError,
    TemporaryStorageError,
)
from keyrotd.lifecycle.commands import TICK, Rotate
from keyrotd.model import Policy, from_json
from keyrotd.storage.aws.backend import BACKEND, AwsSettings
from keyrotd.storage.aws.storage import MAX_DOCUMENT_SIZE, AwsStorage, RetryPolicy
from keyrotd.storage.aws.swap import STAGING_LABEL
from keyrotd.testing.storage import StorageContract, StorageFactory
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.storage.endpoints import LossyProxy, ScriptedEndpoint, closed_port_url
from tests.support.moto import (
    REGION,
)

FAST_FAILURE = RetryPolicy(max_attempts=2, connect_timeout=0.5, read_timeout=0.5)
"""Two attempts and short timeouts: the fault tests finish in about a second."""

EVERY_CALL_KEYROTD_MAKES = {
    "GetSecretValue",
    "CreateSecret",
    "PutSecretValue",
    "UpdateSecretVersionStage",
    "DescribeSecret",
    "ListSecrets",
}
"""The README's IAM policy grants these (and TagResource, which CreateSecret's tags need)."""


pytestmark = pytest.mark.usefixtures("aws_environment")


class TestAwsStorage(StorageContract):
    @pytest.fixture
    def storage_factory(self, moto_url: str, prefix: str) -> StorageFactory:
        return functools.partial(
            AwsStorage, secret_prefix=prefix, region=REGION, endpoint_url=moto_url
        )


class ApiCalls:
    """Records the Secrets Manager API calls a client makes (a botocore event hook)."""

    def __init__(self, storage: AwsStorage) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        storage.client.meta.events.register("before-parameter-build.secrets-manager", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    def take(self) -> list[str]:
        """The operations called since the last ``take``."""
        names = [name for name, _ in self.calls]
        self.calls.clear()
        return names


# Reads, versions and the compare-and-swap


def test_reads_ask_for_the_current_stage_and_see_the_latest_write(storage: AwsStorage) -> None:
    """moto answers a read without VersionStage from a stale default after a stage move."""
    calls = ApiCalls(storage)
    version = storage.write("alpha", b"one", None)
    for data in (b"two", b"three", b"four"):
        version = storage.write("alpha", data, version)
    calls.take()

    stored = storage.read("alpha")

    assert stored is not None
    assert (stored.data, stored.version) == (b"four", version)
    assert calls.calls == [
        ("GetSecretValue", {"SecretId": storage.secret_name("alpha"), "VersionStage": "AWSCURRENT"})
    ]


def test_a_stale_version_conflicts_and_the_loser_rereads(
    make_storage: Callable[..., AwsStorage],
) -> None:
    winner, loser = make_storage(), make_storage()
    first = winner.write("alpha", b"one", None)
    seen = loser.read("alpha")
    assert seen is not None
    second = winner.write("alpha", b"two", seen.version)

    with pytest.raises(ConflictError) as caught:
        loser.write("alpha", b"lost", seen.version)

    message = str(caught.value)
    assert loser.secret_name("alpha") in message
    assert f"expected version {first}, found {second}" in message
    reread = loser.read("alpha")
    assert reread is not None
    assert (reread.data, reread.version) == (b"two", second)
    assert loser.write("alpha", b"three", reread.version) != second


def test_the_version_is_the_secret_version_id(storage: AwsStorage, sm: Any) -> None:
    version = storage.write("alpha", b"one", None)

    described = sm.describe_secret(SecretId=storage.secret_name("alpha"))

    assert described["VersionIdsToStages"][version] == ["AWSCURRENT"]


def test_a_version_from_another_store_conflicts_without_a_call(storage: AwsStorage) -> None:
    storage.write("alpha", b"one", None)
    calls = ApiCalls(storage)

    with pytest.raises(ConflictError, match="not a Secrets Manager version id"):
        storage.write("alpha", b"two", "7")

    assert calls.take() == []


def test_labels_do_not_pile_up(make_storage: Callable[..., AwsStorage], sm: Any) -> None:
    storage, other = make_storage(), make_storage()
    versions = [storage.write("alpha", b"0", None)]
    for n in range(1, 6):
        versions.append(storage.write("alpha", str(n).encode(), versions[-1]))
        with pytest.raises(ConflictError):
            other.write("alpha", b"stale", versions[-2])

    stages = sm.describe_secret(SecretId=storage.secret_name("alpha"))["VersionIdsToStages"]

    labelled = {version: sorted(labels) for version, labels in stages.items() if labels}
    assert len(stages) == 11  # 6 documents and 5 losers, unlabelled ones are left to AWS
    assert len(labelled) == 3
    assert labelled[versions[-1]] == ["AWSCURRENT"]
    assert labelled[versions[-2]] == ["AWSPREVIOUS"]
    assert list(labelled.values()).count([STAGING_LABEL]) == 1  # the last loser's version


def test_a_move_retried_after_a_lost_answer_is_not_a_conflict(moto_url: str, prefix: str) -> None:
    """The stage move succeeded but its answer was lost: botocore's retry is refused (the
    label already moved), and the write must still report its own success."""
    proxy = LossyProxy(moto_url, lose={"UpdateSecretVersionStage", "CreateSecret"})
    with proxy.serve() as url:
        storage = AwsStorage(secret_prefix=prefix, region=REGION, endpoint_url=url)
        calls = ApiCalls(storage)
        first = storage.write("alpha", b"one", None)
        second = storage.write("alpha", b"two", first)
        stored = storage.read("alpha")
        storage.close()

    assert proxy.lost == ["CreateSecret", "UpdateSecretVersionStage"]
    assert stored is not None
    assert (stored.data, stored.version) == (b"two", second)
    assert calls.take() == [
        "CreateSecret",
        "PutSecretValue",
        "UpdateSecretVersionStage",
        "DescribeSecret",
        "GetSecretValue",
    ]


# Creating secrets


def test_a_new_secret_is_named_tagged_and_described(storage: AwsStorage, sm: Any) -> None:
    storage.write("alpha", b"{}", None)

    described = sm.describe_secret(SecretId=storage.secret_name("alpha"))

    assert described["Name"] == storage.secret_name("alpha")
    assert storage.secret_name("alpha").startswith("test-")
    tags = {tag["Key"]: tag["Value"] for tag in described["Tags"]}
    assert tags == {"managed-by": "keyrotd", "keyrotd:keyset": "alpha"}
    assert "keyrotd" in described["Description"]
    assert "KmsKeyId" not in described


def test_the_kms_key_is_passed_through(
    make_storage: Callable[..., AwsStorage], moto_url: str, sm: Any
) -> None:
    kms = boto3.session.Session().client("kms", endpoint_url=moto_url)
    key_id = kms.create_key(Description="keyrotd test")["KeyMetadata"]["KeyId"]
    kms.close()
    storage = make_storage(kms_key_id=key_id)
    calls = ApiCalls(storage)

    version = storage.write("alpha", b"one", None)
    storage.write("alpha", b"two", version)

    described = sm.describe_secret(SecretId=storage.secret_name("alpha"))
    assert described["KmsKeyId"] == key_id
    assert calls.calls[0][1]["KmsKeyId"] == key_id


def test_a_secret_created_empty_beforehand_is_filled(storage: AwsStorage, sm: Any) -> None:
    """Operators may create the secret themselves (Terraform: KMS key, resource policy)."""
    sm.create_secret(Name=storage.secret_name("alpha"))
    assert storage.read("alpha") is None
    assert storage.list_keysets() == []

    version = storage.write("alpha", b"one", None)

    stored = storage.read("alpha")
    assert stored is not None
    assert (stored.data, stored.version) == (b"one", version)
    with pytest.raises(ConflictError):
        storage.write("alpha", b"two", None)
    assert storage.list_keysets() == ["alpha"]


def test_secrets_are_never_deleted(storage: AwsStorage, sm: Any) -> None:
    calls = ApiCalls(storage)
    version = storage.write("alpha", b"one", None)
    with pytest.raises(ConflictError):
        storage.write("alpha", b"again", None)
    version = storage.write("alpha", b"two", version)
    with pytest.raises(ConflictError):
        storage.write("alpha", b"stale", "0" * 36)
    storage.write("beta", b"", None)
    storage.read("alpha")
    storage.list_keysets()
    storage.close()

    assert set(calls.take()) == EVERY_CALL_KEYROTD_MAKES
    for name in ("alpha", "beta"):
        described = sm.describe_secret(SecretId=storage.secret_name(name))
        assert "DeletedDate" not in described


def test_a_secret_deleted_by_force_between_read_and_write(storage: AwsStorage, sm: Any) -> None:
    version = storage.write("alpha", b"one", None)
    sm.delete_secret(SecretId=storage.secret_name("alpha"), ForceDeleteWithoutRecovery=True)

    with pytest.raises(ConflictError, match="found none"):
        storage.write("alpha", b"two", version)

    assert storage.read("alpha") is None
    storage.write("alpha", b"again", None)


def test_a_secret_scheduled_for_deletion_names_the_restore_command(
    storage: AwsStorage, sm: Any
) -> None:
    storage.write("alpha", b"one", None)
    sm.delete_secret(SecretId=storage.secret_name("alpha"), RecoveryWindowInDays=7)

    with pytest.raises(StorageError) as caught:
        storage.read("alpha")

    assert not caught.value.temporary
    assert f"restore-secret --secret-id {storage.secret_name('alpha')}" in str(caught.value)
    assert storage.list_keysets() == []


# What is stored


def test_text_is_stored_as_the_secret_string(storage: AwsStorage, sm: Any) -> None:
    document = '{"name": "alpha", "note": "é ✓"}'.encode()
    storage.write("alpha", document, None)

    value = sm.get_secret_value(SecretId=storage.secret_name("alpha"), VersionStage="AWSCURRENT")

    assert value["SecretString"].encode() == document
    assert "SecretBinary" not in value


def test_binary_documents_are_marked(storage: AwsStorage, sm: Any) -> None:
    storage.write("alpha", b"\xff\x00", None)
    storage.write("beta", b"", None)

    def binary(name: str) -> bytes:
        secret = storage.secret_name(name)
        return bytes(
            sm.get_secret_value(SecretId=secret, VersionStage="AWSCURRENT")["SecretBinary"]
        )

    assert binary("alpha") == b"\x00\xff\x00"
    assert binary("beta") == b"\x00"


def test_a_binary_value_keyrotd_did_not_write_is_corrupt(storage: AwsStorage, sm: Any) -> None:
    sm.create_secret(Name=storage.secret_name("alpha"), SecretBinary=b"\x01 not ours")

    with pytest.raises(CorruptDocumentError) as caught:
        storage.read("alpha")

    assert storage.secret_name("alpha") in str(caught.value)
    assert not caught.value.temporary


def test_a_hand_edited_value_is_reported_corrupt_by_the_parser(
    storage: AwsStorage, sm: Any
) -> None:
    sm.create_secret(Name=storage.secret_name("alpha"), SecretString="edited by hand")

    stored = storage.read("alpha")
    assert stored is not None
    with pytest.raises(CorruptDocumentError) as caught:
        from_json(stored.data, stored.location)

    assert str(caught.value).startswith(
        f"AWS secret {storage.secret_name('alpha')} ({REGION}): not a valid keyrotd keyset"
    )


# The size limit


def test_a_document_over_the_limit_is_refused_before_any_call(storage: AwsStorage) -> None:
    calls = ApiCalls(storage)

    with pytest.raises(DocumentTooLargeError) as caught:
        storage.write("alpha", b"x" * (MAX_DOCUMENT_SIZE + 1), None)

    assert calls.take() == []
    message = str(caught.value)
    assert f"{storage.secret_name('alpha')} is 65537 bytes" in message
    assert "limit of 65536 bytes" in message
    assert "README" in message


def test_binary_documents_are_one_byte_shorter(storage: AwsStorage) -> None:
    storage.write("alpha", b"\xff" * (MAX_DOCUMENT_SIZE - 1), None)

    with pytest.raises(DocumentTooLargeError, match="binary documents: 65535"):
        storage.write("beta", b"\xff" * MAX_DOCUMENT_SIZE, None)

    stored = storage.read("alpha")
    assert stored is not None
    assert stored.data == b"\xff" * (MAX_DOCUMENT_SIZE - 1)


# Counting the API calls


def test_api_calls_per_storage_operation(make_storage: Callable[..., AwsStorage]) -> None:
    storage, other = make_storage(), make_storage()
    calls = ApiCalls(storage)

    assert storage.read("alpha") is None
    assert calls.take() == ["GetSecretValue"]
    version = storage.write("alpha", b"one", None)
    assert calls.take() == ["CreateSecret"]
    storage.read("alpha")
    assert calls.take() == ["GetSecretValue"]
    version = storage.write("alpha", b"two", version)
    assert calls.take() == ["PutSecretValue", "UpdateSecretVersionStage"]
    other.write("alpha", b"three", version)
    with pytest.raises(ConflictError):
        storage.write("alpha", b"lost", version)
    assert calls.take() == ["PutSecretValue", "UpdateSecretVersionStage", "DescribeSecret"]
    with pytest.raises(ConflictError):
        storage.write("alpha", b"lost", None)
    assert calls.take() == ["CreateSecret", "PutSecretValue"]
    storage.list_keysets()
    assert calls.take() == ["ListSecrets"]


def test_api_calls_per_rotation(storage: AwsStorage) -> None:
    """A daemon's life on AWS, measured: one read per step (generating keys reuses it)."""
    now = datetime(2030, 1, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    policy = Policy(
        rotation_period=24 * hour,
        publish_ahead=6 * hour,
        token_lifetime=hour,
        clock_skew=timedelta(minutes=5),
    )
    manager = KeysetWriter(storage, KeysetSpec("alpha", "ES256", 2048, policy), clock=lambda: now)
    calls = ApiCalls(storage)

    bootstrap = manager.apply(TICK)
    assert bootstrap.written
    assert calls.take() == ["GetSecretValue", "CreateSecret"]

    assert not manager.apply(TICK).written  # nothing due: one read
    assert calls.take() == ["GetSecretValue"]

    now += 18 * hour  # the successor is due for publication
    assert manager.apply(TICK).written
    assert calls.take() == ["GetSecretValue", "PutSecretValue", "UpdateSecretVersionStage"]

    now += 6 * hour  # it activates: no key to generate
    assert manager.apply(TICK).written
    assert calls.take() == ["GetSecretValue", "PutSecretValue", "UpdateSecretVersionStage"]

    assert manager.apply(Rotate(now=True)).written
    assert calls.take() == ["GetSecretValue", "PutSecretValue", "UpdateSecretVersionStage"]


# Faults: temporary (retried, then TemporaryStorageError) or not


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "ThrottlingException"),
        (429, "TooManyRequestsException"),
        (500, "InternalServiceError"),
        (503, "ServiceUnavailable"),
    ],
)
def test_throttling_and_5xx_are_retried_then_temporary(prefix: str, status: int, code: str) -> None:
    endpoint = ScriptedEndpoint(status=status, code=code)
    with endpoint.serve() as url:
        storage = AwsStorage(
            secret_prefix=prefix, region=REGION, endpoint_url=url, retry=FAST_FAILURE
        )
        with pytest.raises(TemporaryStorageError) as caught:
            storage.read("alpha")
        storage.close()

    assert caught.value.temporary
    assert f"GetSecretValue on AWS secret {prefix}alpha ({REGION})" in str(caught.value)
    assert "after 2 attempts" in str(caught.value)
    assert endpoint.requests == ["secretsmanager.GetSecretValue"] * 2


def test_a_quota_is_retried_then_permanent(prefix: str) -> None:
    """botocore retries LimitExceededException as throttling; it is a quota (versions)."""
    endpoint = ScriptedEndpoint(status=400, code="LimitExceededException")
    with endpoint.serve() as url:
        storage = AwsStorage(
            secret_prefix=prefix, region=REGION, endpoint_url=url, retry=FAST_FAILURE
        )
        with pytest.raises(StorageError) as caught:
            storage.write("alpha", b"doc", "0" * 36)
        storage.close()

    assert not caught.value.temporary
    assert f"PutSecretValue on AWS secret {prefix}alpha" in caught.value.message
    assert "lengthen rotation_period" in caught.value.hint
    assert len(endpoint.requests) == 2


def test_a_retry_that_succeeds_is_invisible(prefix: str) -> None:
    endpoint = ScriptedEndpoint(answers=[(503, "ServiceUnavailable"), (200, "")])
    with endpoint.serve() as url:
        storage = AwsStorage(
            secret_prefix=prefix, region=REGION, endpoint_url=url, retry=FAST_FAILURE
        )
        stored = storage.read("alpha")
        storage.close()

    assert stored is not None
    assert stored.data == b"scripted"
    assert len(endpoint.requests) == 2


@pytest.mark.parametrize(
    ("operation", "code", "fix"),
    [
        ("read", "AccessDeniedException", "allow secretsmanager:GetSecretValue on the secret"),
        ("create", "AccessDeniedException", "allow secretsmanager:CreateSecret on the secret"),
        ("swap", "AccessDeniedException", "allow secretsmanager:PutSecretValue on the secret"),
        ("read", "DecryptionFailure", "allow kms:Decrypt and kms:GenerateDataKey"),
        ("create", "EncryptionFailure", "check the KMS key of the secret (alias/keyrotd)"),
        ("read", "UnrecognizedClientException", "credentials keyrotd runs with are invalid"),
        ("read", "ValidationException", "see the AWS message"),
    ],
)
def test_other_errors_are_not_retried_and_name_the_fix(
    prefix: str, operation: str, code: str, fix: str
) -> None:
    endpoint = ScriptedEndpoint(status=400, code=code, message="scripted refusal")
    with endpoint.serve() as url:
        storage = AwsStorage(
            secret_prefix=prefix,
            region=REGION,
            endpoint_url=url,
            kms_key_id="alias/keyrotd",
            retry=FAST_FAILURE,
        )
        attempt = {
            "read": lambda: storage.read("alpha"),
            "create": lambda: storage.write("alpha", b"doc", None),
            "swap": lambda: storage.write("alpha", b"doc", "0" * 36),
        }[operation]
        with pytest.raises(StorageError) as caught:
            attempt()
        storage.close()

    error = caught.value
    assert type(error) is StorageError
    assert not error.temporary
    assert f"AWS secret {prefix}alpha ({REGION}) failed: {code}: scripted refusal" in error.message
    assert fix in error.hint
    assert len(endpoint.requests) == 1


def test_an_unreachable_endpoint_is_temporary_and_quick(prefix: str) -> None:
    storage = AwsStorage(
        secret_prefix=prefix, region=REGION, endpoint_url=closed_port_url(), retry=FAST_FAILURE
    )
    started = time.monotonic()
    outcomes = []
    for attempt in (
        lambda: storage.read("alpha"),
        lambda: storage.write("alpha", b"doc", None),
        lambda: storage.write("alpha", b"doc", "0" * 36),
        storage.list_keysets,
    ):
        with pytest.raises(TemporaryStorageError) as caught:
            attempt()
        outcomes.append(str(caught.value))
    storage.close()

    assert time.monotonic() - started < 5
    for outcome in outcomes[:3]:
        assert f"AWS secret {prefix}alpha ({REGION})" in outcome
        assert "Could not connect to the endpoint URL" in outcome
    assert f"ListSecrets on AWS secret {prefix}*" in outcomes[3]


def test_a_silent_endpoint_times_out_as_temporary(prefix: str) -> None:
    endpoint = ScriptedEndpoint(silent=True)
    with endpoint.serve() as url:
        storage = AwsStorage(
            secret_prefix=prefix,
            region=REGION,
            endpoint_url=url,
            retry=RetryPolicy(max_attempts=2, connect_timeout=0.5, read_timeout=0.2),
        )
        started = time.monotonic()
        with pytest.raises(TemporaryStorageError, match=f"{prefix}alpha.*Read timeout"):
            storage.read("alpha")
        elapsed = time.monotonic() - started
        storage.close()

    assert elapsed < 3
    assert len(endpoint.requests) == 2


def test_missing_credentials_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    storage = AwsStorage(secret_prefix="x/", region=REGION, endpoint_url=closed_port_url())

    with pytest.raises(StorageError, match="no usable AWS credentials") as caught:
        storage.read("alpha")

    assert "AWS_ACCESS_KEY_ID" in caught.value.hint
    storage.close()


def test_a_missing_region_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")

    with pytest.raises(ConfigError, match="no AWS region") as caught:
        AwsStorage(secret_prefix="x/")

    assert "storage.region" in caught.value.hint
    assert caught.value.exit_code == 2


# Names, listing, settings


def test_location_names_the_secret_and_the_region(storage: AwsStorage, prefix: str) -> None:
    assert storage.location("alpha") == f"AWS secret {prefix}alpha ({REGION})"


def test_list_keysets_sees_only_this_prefix_with_a_value(
    storage: AwsStorage, sm: Any, prefix: str
) -> None:
    storage.write("alpha", b"a", None)
    sm.create_secret(Name=f"{prefix}empty")
    sm.create_secret(Name=f"{prefix}sub/dir", SecretString="x")
    sm.create_secret(Name=f"other-{prefix}beta", SecretString="x")
    sm.create_secret(Name=f"{prefix}gone", SecretString="x")
    sm.delete_secret(SecretId=f"{prefix}gone", RecoveryWindowInDays=7)

    assert storage.list_keysets() == ["alpha"]


def test_list_keysets_pages_through_many_secrets(storage: AwsStorage) -> None:
    names = [f"k{n:03d}" for n in range(105)]
    for name in names:
        storage.write(name, b"{}", None)

    assert storage.list_keysets() == names


def test_from_settings(moto_url: str, prefix: str) -> None:
    settings = AwsSettings(secret_prefix=prefix, region=REGION, endpoint_url=moto_url)
    storage = BACKEND.open(settings)
    assert isinstance(storage, AwsStorage)

    storage.write("alpha", b"one", None)

    assert storage.secret_name("alpha") == f"{prefix}alpha"
    assert storage.region == REGION
    storage.close()


def test_botocore_never_logs_secret_values(
    storage: AwsStorage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    version = storage.write("alpha", b'{"d": "PRIVATE-MARKER"}', None)
    storage.write("alpha", b'{"d": "PRIVATE-MARKER-2"}', version)
    storage.read("alpha")

    assert "PRIVATE-MARKER" not in caplog.text


# boto3 is loaded by the AWS backend (and only by it: see tests/test_cli.py)


PROBE = """
import json, sys
import keyrotd.cli
code = keyrotd.cli.main(sys.argv[1:])
aws = sorted(m for m in ("boto3", "botocore") if m in sys.modules)
print(json.dumps({"code": code, "aws": aws}))
"""


def run_cli_probe(*args: str, cwd: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )
    assert done.stdout, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_aws_storage_imports_boto3_and_works_from_the_cli(
    tmp_path: Path, moto_url: str, prefix: str, storage: AwsStorage
) -> None:
    """The control for tests/test_cli.py::test_file_backend_commands_import_nothing_heavy (the
    file backend never loads boto3), and the path from the configuration to AwsStorage."""
    config = tmp_path / "keyrotd.toml"
    config.write_text(
        f'[storage]\ntype = "aws"\nsecret_prefix = "{prefix}"\nregion = "{REGION}"\n'
        f'endpoint_url = "{moto_url}"\n'
    )

    probe = run_cli_probe("rotate", "--config", str(config), cwd=tmp_path)

    assert probe == {"code": 0, "aws": ["boto3", "botocore"]}
    assert storage.list_keysets() == ["default"]
