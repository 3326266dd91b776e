"""Vault or OpenBao KV version 2 storage: one secret per keyset, swapped with ``cas``.

The keyset ``K`` lives at ``mount/path_prefix + K`` (``secret/data/keyrotd/K`` in the API). Its
data is the keyrotd envelope (:mod:`keyrotd.storage.sealing`), field by field: plain with a
SHA-256 digest, or AES-256-GCM sealed with ``encryption_key_file``. The envelope's revision is the
KV version it was written as, so a value copied from another version or keyset is refused. The
version of a document is the KV version (``"3"``).

- Read: ``GET mount/data/path``; none stored (404) is ``None``; a current version that was
  deleted is an error naming it (keyrotd never writes over a deleted keyset by itself).
- Write (compare-and-swap): ``POST mount/data/path`` with ``options.cas`` = the version read, or
  0 to create; Vault refuses it when another writer won, which is a :class:`ConflictError`.
- List: ``LIST mount/metadata/`` of the prefix's folder.

Old versions stay in KV (``max_versions``, 10 by default) with the private keys they held:
docs/storage.md says how to limit them and which policy keyrotd needs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import hvac
from hvac import exceptions as vault_errors

from keyrotd.model import KEYSET_NAME
from keyrotd.storage.interface import (
    ConflictError,
    CorruptDocumentError,
    DocumentTooLargeError,
    ReadResult,
    StorageError,
    Versioned,
    checked_name,
    read_each,
)
from keyrotd.storage.sealing import EnvelopeError, seal, unseal
from keyrotd.storage.vault.session import Session
from keyrotd.storage.vault.settings import MAX_DOCUMENT_SIZE

__all__ = ["MAX_DOCUMENT_SIZE", "VaultStorage"]

"""Bytes of a document: its envelope (base64, about 700 KiB) stays under the 1 MiB entry limit
of Vault's integrated (raft) storage."""
_CORRUPT_HINT: Final = (
    "inspect its versions (bao kv metadata get), then roll back to a good version "
    "(bao kv rollback); keyrotd never writes over it"
)


class VaultStorage:
    """Keyset documents as KV version 2 secrets (see the module docstring)."""

    max_document_size: int = MAX_DOCUMENT_SIZE

    def __init__(
        self,
        session: Session,
        *,
        url: str,
        mount: str = "secret",
        path_prefix: str = "keyrotd/",
        encryption_key: bytes | None = None,
    ) -> None:
        self._session = session
        self._url = url
        self._mount = mount.strip("/")
        self._prefix = path_prefix
        self._key = encryption_key

    def request_counts(self) -> dict[str, int]:
        """HTTP requests sent to the server so far, by method and kind of path."""
        return dict(self._session.requests)

    def path(self, keyset: str) -> str:
        """The secret's path under the mount."""
        return self._prefix + checked_name(keyset)

    def location(self, keyset: str) -> str:
        return f"Vault secret {self._mount}/{self.path(keyset)} at {self._url}"

    def read(self, keyset: str) -> Versioned | None:
        path = self.path(keyset)
        answer = self._session.call("read", self.location(keyset), lambda c: self._get(c, path))
        if answer is None:
            return None
        return self._open(keyset, answer)

    def read_many(self, keysets: Sequence[str]) -> dict[str, ReadResult]:
        return read_each(self, keysets)  # KV has no batched read: one GET per keyset

    def write(self, keyset: str, data: bytes, expected_version: str | None) -> str:
        path = self.path(keyset)
        location = self.location(keyset)
        if len(data) > self.max_document_size:
            raise DocumentTooLargeError(
                f"the document for {location} is {len(data)} bytes, above the vault storage "
                f"limit of {self.max_document_size}",
                "keep fewer keys at once (a longer rotation_period or a smaller algorithm)",
            )
        if expected_version is None:
            cas = 0
        elif expected_version.isdigit() and expected_version.isascii():
            cas = int(expected_version)
        else:
            raise ConflictError(f"{location} is not at version {expected_version!r}", "re-read")
        envelope = json.loads(seal(keyset, cas + 1, data, self._key))

        def post(client: hvac.Client) -> Any:
            return client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=envelope, cas=cas, mount_point=self._mount
            )

        answer = self._session.call("write", location, post)
        version = answer["data"]["version"]
        if version != cas + 1:
            raise StorageError(
                f"Vault wrote {location} as version {version}, not {cas + 1}",
                "check that nothing else writes keyrotd's secrets",
            )
        return str(version)

    def list_keysets(self) -> list[str]:
        folder, _, stem = self._prefix.rpartition("/")
        folder = f"{folder}/" if folder else ""

        def listing(client: hvac.Client) -> Any:
            try:
                return client.secrets.kv.v2.list_secrets(path=folder, mount_point=self._mount)
            except vault_errors.InvalidPath:
                return None

        answer = self._session.call("list", f"{self._mount}/{folder}", listing)
        keys = [] if answer is None else answer["data"]["keys"]
        names = [key[len(stem) :] for key in keys if key.startswith(stem)]
        return sorted(name for name in names if KEYSET_NAME.fullmatch(name))

    def close(self) -> None:
        self._session.close()

    def _get(self, client: hvac.Client, path: str) -> Any:
        try:
            return client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self._mount, raise_on_deleted_version=False
            )
        except vault_errors.InvalidPath:
            return None

    def _open(self, keyset: str, answer: Any) -> Versioned:
        location = self.location(keyset)
        metadata = answer["data"].get("metadata") or {}
        version = metadata.get("version")
        data = answer["data"].get("data")
        if metadata.get("deletion_time") or metadata.get("destroyed") or data is None:
            raise CorruptDocumentError(
                f"the current version ({version}) of {location} was deleted", _CORRUPT_HINT
            )
        try:
            opened = unseal(keyset, json.dumps(data).encode(), self._key)
        except EnvelopeError as error:
            raise CorruptDocumentError(
                f"{location} (version {version}) cannot be read: {error}", _CORRUPT_HINT
            ) from None
        if opened.revision != version:
            raise CorruptDocumentError(
                f"{location} holds at version {version} a value written as version "
                f"{opened.revision} (copied back by hand?)",
                _CORRUPT_HINT,
            )
        return Versioned(opened.data, str(version), location)
