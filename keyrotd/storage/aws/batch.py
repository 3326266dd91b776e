"""The periodic refresh's read: ``BatchGetSecretValue``, 20 keyset secrets a request.

Each keyset maps to what :meth:`AwsStorage.read` would give (see ``ReadResult``):

- A value is decoded exactly as ``read`` decodes it, and must carry ``AWSCURRENT`` in its
  ``VersionStages``; one that does not (moto 5.x answers a batch from the secret's first
  version after ``UpdateSecretVersionStage``) is read again alone, with the stage asked for.
- An ``Errors`` entry: ``ResourceNotFoundException`` is a keyset never written (None); any other
  code is the error ``read`` raises for it, naming the secret and the fix.
- A whole request failing: temporary (unreachable, throttled after botocore's retries) or
  permanent, that error for each keyset of the request; but a refusal that one secret can cause
  (not found, a KMS failure, a secret being deleted) is settled by one read each for that
  request, so that one keyset's failure never hides the others'.
- ``AccessDeniedException`` on the request itself: the principal lacks
  ``secretsmanager:BatchGetSecretValue`` (or a VPC endpoint policy denies one of the secrets).
  Or on a secret of the batch that then reads alone with ``VersionStage="AWSCURRENT"``: an IAM
  condition on ``secretsmanager:VersionStage`` (a batch names no stage). Either way one warning
  is logged, and from then on this storage reads one keyset a request (``GetSecretValue``),
  never trying the batch again until it is opened anew.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from keyrotd.errors import KeyrotdError
from keyrotd.storage.aws.errors import ACCESS_DENIED, NOT_FOUND, REFUSED, SecretErrors, code
from keyrotd.storage.aws.swap import CURRENT
from keyrotd.storage.interface import ReadResult, Versioned

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager.client import SecretsManagerClient
    from mypy_boto3_secretsmanager.type_defs import APIErrorTypeTypeDef, SecretValueEntryTypeDef

__all__ = ["BATCH_SIZE", "BatchReads"]

BATCH_SIZE: Final = 20
"""The most secrets one ``BatchGetSecretValue`` request may name."""
READERS: Final = 4
"""Batch requests in flight at once: 500 requests for 10,000 keysets take about a second, not
the 20 s they take one after the other (boto3 clients are thread-safe; botocore keeps 10
connections per client)."""
BATCH: Final = "BatchGetSecretValue"
_SETTLED_ONE_BY_ONE: Final = REFUSED | {"DecryptionFailure"}
"""Codes of a whole request that one of its secrets can cause: read that request's keysets
one by one rather than fail them all."""
_POLICY: Final = (
    '{"Effect": "Allow", "Action": "secretsmanager:BatchGetSecretValue", "Resource": "*"}'
)

log = logging.getLogger("keyrotd.storage")


class Secrets(Protocol):
    """What the batch reader needs of the secrets it reads: their names, their decoding, and
    one keyset read alone (the AWS store gives itself; the reader never imports it)."""

    def secret_name(self, keyset: str) -> str: ...

    def location(self, keyset: str) -> str: ...

    def decode(self, name: str, text: str | None, binary: bytes | None) -> bytes: ...

    def read(self, keyset: str) -> Versioned | None: ...


@dataclass
class BatchReads:
    """``read_many`` for the AWS store (see the module docstring)."""

    storage: Secrets
    client: SecretsManagerClient
    errors: SecretErrors
    denied: bool = False
    """The batch request was refused once: read one keyset a request from then on."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def read_many(self, keysets: Sequence[str]) -> dict[str, ReadResult]:
        wanted = list(dict.fromkeys(keysets))
        results: dict[str, ReadResult] = {}
        names: dict[str, str] = {}  # secret name -> keyset
        for keyset in wanted:
            try:
                names[self.storage.secret_name(keyset)] = keyset
            except KeyrotdError as error:
                results[keyset] = error
        secrets = list(names)
        chunks = [
            {name: names[name] for name in secrets[start : start + BATCH_SIZE]}
            for start in range(0, len(secrets), BATCH_SIZE)
        ]
        outage: list[ClientError | BotoCoreError] = []
        if len(chunks) == 1:
            results.update(self._read_chunk(chunks[0], outage))
        else:
            with ThreadPoolExecutor(READERS, thread_name_prefix="keyrotd-batch") as pool:
                for answered in pool.map(lambda chunk: self._read_chunk(chunk, outage), chunks):
                    results.update(answered)
        return {keyset: results[keyset] for keyset in wanted}

    def _read_chunk(
        self, chunk: dict[str, str], outage: list[ClientError | BotoCoreError]
    ) -> dict[str, ReadResult]:
        """One request (or more, if Secrets Manager pages) for up to 20 secrets. Once a request
        of this refresh failed as a whole on a temporary error (unreachable, throttled, after
        botocore's retries), the requests not sent yet fail with it, unsent: 500 requests of
        timeouts would make one refresh of 10,000 keysets last an hour (the next refresh tries
        again)."""
        if self.denied:
            return _one_by_one(self.storage, list(chunk.values()))
        if outage:
            return self._whole_request_failed(chunk, outage[0])
        try:
            entries, failures = self._fetch(list(chunk))
        except (ClientError, BotoCoreError) as error:
            failed = self._whole_request_failed(chunk, error)
            if all(isinstance(r, KeyrotdError) and r.temporary for r in failed.values()):
                outage.append(error)
            return failed
        results: dict[str, ReadResult] = {}
        for name, keyset in chunk.items():
            if name in entries:
                results[keyset] = self._value(keyset, name, entries[name])
            elif failures.get(name, {}).get("ErrorCode") in ACCESS_DENIED:
                results[keyset] = self._denied_in_batch(keyset)
            elif name in failures:
                results[keyset] = self._failure(name, failures[name])
            else:  # not answered at all: ask for it alone
                results[keyset] = self._read_alone(keyset)
        return results

    def _whole_request_failed(
        self, chunk: dict[str, str], error: ClientError | BotoCoreError
    ) -> dict[str, ReadResult]:
        if isinstance(error, ClientError):
            return self._request_refused(chunk, error)
        return {k: self.errors.botocore_failure(BATCH, n, error) for n, k in chunk.items()}

    def _fetch(
        self, names: list[str]
    ) -> tuple[dict[str, SecretValueEntryTypeDef], dict[str, APIErrorTypeTypeDef]]:
        entries: dict[str, SecretValueEntryTypeDef] = {}
        failures: dict[str, APIErrorTypeTypeDef] = {}
        page = self.client.batch_get_secret_value(SecretIdList=names)
        for _ in range(len(names)):  # a page holds at least one answer: bounded
            for entry in page.get("SecretValues", []):
                entries[entry.get("Name", "")] = entry
            for failure in page.get("Errors", []):
                failures[failure.get("SecretId", "")] = failure
            token = page.get("NextToken")
            if not token:
                break
            page = self.client.batch_get_secret_value(SecretIdList=names, NextToken=token)
        return entries, failures

    def _value(self, keyset: str, name: str, entry: SecretValueEntryTypeDef) -> ReadResult:
        if CURRENT not in entry.get("VersionStages", []):  # not the current version: stale
            return self._read_alone(keyset)
        try:
            data = self.storage.decode(name, entry.get("SecretString"), entry.get("SecretBinary"))
        except KeyrotdError as error:
            return error
        return Versioned(
            data=data, version=entry["VersionId"], location=self.storage.location(keyset)
        )

    def _failure(self, name: str, failure: APIErrorTypeTypeDef) -> ReadResult:
        error_code = failure.get("ErrorCode", "")
        if error_code == NOT_FOUND:
            return None
        refusal = ClientError(
            {"Error": {"Code": error_code, "Message": failure.get("Message", "")}}, BATCH
        )
        # Secrets Manager authorizes (and logs) each secret of a batch as a GetSecretValue.
        return self.errors.client_failure("GetSecretValue", name, refusal)

    def _request_refused(self, chunk: dict[str, str], error: ClientError) -> dict[str, ReadResult]:
        if code(error) in ACCESS_DENIED:
            self._request_denied(error)
        if self.denied or code(error) in _SETTLED_ONE_BY_ONE:
            return _one_by_one(self.storage, list(chunk.values()))
        return {k: self.errors.client_failure(BATCH, n, error) for n, k in chunk.items()}

    def _denied_in_batch(self, keyset: str) -> ReadResult:
        """A secret denied within a batch: read alone, asking for AWSCURRENT. If that passes,
        the policy allows only reads that name the stage: stop batching."""
        alone = self._read_alone(keyset)
        if not isinstance(alone, KeyrotdError):
            self._fall_back(
                "GetSecretValue is allowed only with a secretsmanager:VersionStage condition, "
                "which batch reads (they name no stage) do not meet: replace the condition by "
                "the Deny statements of docs/storage.md",
                "",
            )
        return alone

    def _request_denied(self, error: ClientError) -> None:
        self._fall_back(
            f"allow secretsmanager:BatchGetSecretValue to keyrotd's IAM principal ({_POLICY}; "
            "each secret stays guarded by its GetSecretValue permission), or check the VPC "
            "endpoint policy",
            str(error),
        )

    def _fall_back(self, fix: str, error: str) -> None:
        with self._lock:
            if self.denied:
                return
            self.denied = True
        log.warning(
            "batch reads of the keyset secrets were denied, so keyrotd now reads each keyset "
            "with its own GetSecretValue request (20 times as many requests) until it "
            f"restarts: {fix}; see docs/storage.md",
            extra={"event": "storage.batch_read_denied", "error": error or None},
        )

    def _read_alone(self, keyset: str) -> ReadResult:
        return _one_by_one(self.storage, [keyset])[keyset]


def _one_by_one(secrets: Secrets, keysets: Sequence[str]) -> dict[str, ReadResult]:
    results: dict[str, ReadResult] = {}
    for keyset in keysets:
        try:
            results[keyset] = secrets.read(keyset)
        except KeyrotdError as error:
            results[keyset] = error
    return results
