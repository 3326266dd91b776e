"""The one exception root of keyrotd.

Every error a user can meet is a :class:`KeyrotdError` with a human message and a hint saying
what to do. ``main()`` catches it once and prints ``message`` and ``hint`` on one line.
Exit codes: :class:`ConfigError` and :class:`UsageError` exit 2, everything else 1.

Each kind declares ``temporary``: true when the same call may well succeed if tried again later
(unreachable or throttled storage, a held lock, a lost compare-and-swap). The retries read it
(:mod:`keyrotd.retries`): a temporary error is retried with a backoff; a permanent one (bad
configuration, permission denied, a tampered document) is reported and left to an operator.
"""

from __future__ import annotations

from typing import ClassVar


class KeyrotdError(Exception):
    """Base of every keyrotd error: ``message`` says what happened, ``hint`` how to fix it."""

    exit_code = 1
    temporary: ClassVar[bool] = False
    """Worth trying again later, unchanged (see the module docstring)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class ConfigError(KeyrotdError):
    """The configuration or the policy is invalid, or a file is not accessible (exit 2)."""

    exit_code = 2
    temporary = False


class UsageError(KeyrotdError):
    """The command line is invalid (exit 2)."""

    exit_code = 2
    temporary = False


class StorageError(KeyrotdError):
    """A storage backend failed; permanent unless a subclass says otherwise (access denied,
    bad credentials, an unexpected answer)."""

    temporary = False


class TemporaryStorageError(StorageError):
    """Unreachable, throttled or slow storage: retry later, keep serving what was loaded."""

    temporary = True


class ConflictError(StorageError):
    """The compare-and-swap lost: the document changed since it was read. Re-read and re-plan."""

    temporary = True


class CorruptDocumentError(StorageError):
    """A stored document cannot be read back (truncated, not JSON, tampered, wrong key).

    It is never overwritten: an operator must look at it.
    """

    temporary = False


class RollbackError(StorageError):
    """A keyset document older than one already accepted (G8, docs/threat-model.md): a lower
    revision, the same revision with other content, or a revoked kid back in it. Permanent: the
    reader keeps what it accepted and nothing is written on top until an operator acts."""

    temporary = False

    def __init__(self, keyset: str, accepted: int, found: int, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.keyset, self.accepted, self.found = keyset, accepted, found


class DocumentTooLargeError(StorageError):
    """A document exceeds the backend's size limit."""

    temporary = False


class KeyNotFoundError(KeyrotdError):
    """A kid that the keyset does not hold."""

    temporary = False


class RefusedError(KeyrotdError):
    """A command refused as given, changing nothing, that could be forced (exit 1; HTTP 409).
    ``http_hint`` says what to do in the words of the HTTP API."""

    temporary = False

    def __init__(self, message: str, hint: str = "", http_hint: str = "") -> None:
        super().__init__(message, hint)
        self.http_hint = http_hint or hint


class TokenError(KeyrotdError):
    """An issuer refused to mint a token (for example a lifetime above ``token_lifetime``)."""

    temporary = False


def is_temporary(error: BaseException) -> bool:
    """Whether ``error`` is worth retrying: a keyrotd error that says so; anything else (a bug,
    an untranslated library error) is permanent."""
    return isinstance(error, KeyrotdError) and error.temporary
