"""File storage: one envelope per keyset, ``<path>/<keyset>.json``, swapped under a file lock.

Layout: the directory (and any parent it creates) is mode 0700, documents and lock files 0600,
whatever the umask. A write takes ``fcntl.flock`` on ``<path>/<keyset>.lock``, checks the stored
revision against the expected version, writes ``.<keyset>.json.tmp`` (O_EXCL, 0600),
fsyncs it, renames it over the document and fsyncs the directory; the version is
``str(revision)``. Reads take no lock (the rename is atomic). The lock and the sweeping of temp
files left by a crashed writer are in :mod:`keyrotd.storage.file_locks`; the envelope is
described in :mod:`keyrotd.storage.sealing`.

Run by root (an operator's emergency ``rotate --now`` or ``revoke`` beside a daemon running as
another user), every file it writes -- temp file, document and lock file -- is given the owner and
group of the storage directory before use (``fchown`` on the open file, before the rename), so the
daemon can still open them (docs/cli.md). A directory root creates is root's, and so are its files.

A document that fails its checks is a :class:`CorruptDocumentError` naming the file, and keyrotd
never rewrites it; writes on top of it refuse too. A file keyrotd did not create -- a FIFO, a
device, a symlink, a hard link, a file of another owner -- is refused naming it before anything
reads, writes, chowns or chmods it, and no open waits (see :mod:`keyrotd.storage.file_locks`).

Errors: permission denied is a :class:`ConfigError` (exit 2) naming the path. Temporary errors
(worth retrying): :class:`ConflictError` (another writer won) and :class:`TemporaryStorageError`
when the lock stays held by another process past ``lock_timeout``. Every other failure is a
permanent :class:`StorageError`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict

from keyrotd.atomic import Owner, replace_atomically
from keyrotd.config.fields import OptionalPath, SettingPath
from keyrotd.errors import ConfigError, KeyrotdError
from keyrotd.model import KEYSET_NAME
from keyrotd.secretfiles import load_encryption_key
from keyrotd.storage.file_locks import (
    FILE_MODE,
    SUFFIX,
    Leftovers,
    Owners,
    exclusive_lock,
    lock_path,
    open_ours,
    store_owners,
    temp_name,
)
from keyrotd.storage.interface import (
    BaseStorage,
    ConflictError,
    CorruptDocumentError,
    DocumentTooLargeError,
    StorageError,
    Versioned,
    checked_name,
)
from keyrotd.storage.registry import Backend
from keyrotd.storage.sealing import (
    KEY_SIZE,
    EnvelopeError,
    KeyRequiredError,
    Opened,
    seal,
    unseal,
)

__all__ = ["BACKEND", "MAX_DOCUMENT_SIZE", "FileSettings", "FileStorage", "load_encryption_key"]

MAX_DOCUMENT_SIZE: Final = 1024 * 1024
_MAX_FILE_SIZE: Final = 2 * MAX_DOCUMENT_SIZE  # a sealed 1 MiB document is about 1.34 MiB
_DIR_MODE: Final = 0o700
_UNTOUCHED: Final = "; the file was left untouched"
_CORRUPT_HINT: Final = (
    "inspect it, then restore it from a backup, or move it aside to start the keyset afresh "
    "(its keys are then lost); keyrotd never overwrites it"
)


class FileSettings(BaseModel):
    """``storage.type = "file"``: its ``[storage]`` keys (`keyrotd check-config --example`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: SettingPath = Path("./keyrotd-data")
    encryption_key_file: OptionalPath = None


class FileStorage(BaseStorage):
    """Keyset documents as files in one directory (see the module docstring)."""

    max_document_size: int = MAX_DOCUMENT_SIZE

    def __init__(
        self, path: Path, encryption_key: bytes | None = None, lock_timeout: float = 10.0
    ) -> None:
        if encryption_key is not None and len(encryption_key) != KEY_SIZE:
            raise ConfigError("the storage encryption key is not 32 bytes", "use a 256-bit key")
        self._directory = Path(path).absolute()
        self._key = encryption_key
        self._lock_timeout = lock_timeout
        self._verified: dict[str, tuple[bytes, Opened]] = {}
        """Per keyset, the SHA-256 of the last file bytes that checked out (not the bytes: 18 MB
        at 10,000 keysets): the same bytes need no second check (digest, decryption) under the
        write lock or on the next read."""
        self._leftovers = Leftovers(self._directory)
        self._read_at: dict[str, tuple[Signature, Versioned]] = {}
        """Per keyset, the (device, inode, size, mtime, ctime) of the file last read and what
        it held: the refresh of an unchanged store costs one ``stat`` per keyset. A write
        renames a new file (a new inode, while the old one still exists) over the document, so
        any write by any process changes the signature."""

    @classmethod
    def from_settings(cls, settings: FileSettings) -> FileStorage:
        key_file = settings.encryption_key_file
        key = None if key_file is None else load_encryption_key(key_file)
        return cls(settings.path, encryption_key=key)

    def location(self, keyset: str) -> str:
        return str(self._document(keyset))

    def read(self, keyset: str) -> Versioned | None:
        path = self._document(keyset)
        self._leftovers.sweep(keyset)
        with self._os_errors():
            try:
                seen = _signature(os.lstat(path))
            except FileNotFoundError:
                seen = None
            last = self._read_at.get(keyset)
            if seen is not None and last is not None and last[0] == seen:
                return last[1]  # the same file, unchanged since it was read: no open, no read
            opened, signature = (
                (None, None)
                if seen is None  # no document (maybe no directory either)
                else self._open(keyset, path, store_owners(self._directory))
            )
        if opened is None:
            self._read_at.pop(keyset, None)
            return None
        versioned = Versioned(data=opened.data, version=str(opened.revision), location=str(path))
        if signature is not None:
            self._read_at[keyset] = (signature, versioned)
        return versioned

    def write(self, keyset: str, data: bytes, expected_version: str | None) -> str:
        path = self._document(keyset)
        if len(data) > self.max_document_size:
            raise DocumentTooLargeError(
                f"the document for keyset {keyset} is {len(data)} bytes, above the file "
                f"storage limit of {self.max_document_size} bytes",
                "keep fewer keys or a shorter history in the keyset",
            )
        with self._os_errors():
            _make_private_directories(self._directory)
            owner = _owner_for(self._directory)
            owners = store_owners(self._directory)
            lock = lock_path(self._directory, keyset)
            with exclusive_lock(lock, self._lock_timeout, owner, owners):
                self._leftovers.remove_locked(keyset)
                current, _ = self._open(keyset, path, owners)
                revision = _check_version(path, current, expected_version)
                sealed = seal(keyset, revision, data, self._key)
                temp = self._directory / temp_name(keyset)
                replace_atomically(path, temp, sealed, FILE_MODE, owner)
                self._verified[keyset] = (_digest(sealed), Opened(revision=revision, data=data))
                versioned = Versioned(data=data, version=str(revision), location=str(path))
                self._read_at[keyset] = (_signature(os.lstat(path)), versioned)  # under the lock
        return str(revision)

    def list_keysets(self) -> list[str]:
        with self._os_errors():
            try:
                names = os.listdir(self._directory)
            except FileNotFoundError:
                return []
        stems = (name.removesuffix(SUFFIX) for name in names if name.endswith(SUFFIX))
        return sorted(stem for stem in stems if KEYSET_NAME.fullmatch(stem))

    def close(self) -> None:
        """Nothing to release: locks are held only inside ``write``."""

    def _document(self, keyset: str) -> Path:
        return self._directory / f"{checked_name(keyset)}{SUFFIX}"

    def _open(
        self, keyset: str, path: Path, owners: Owners
    ) -> tuple[Opened | None, Signature | None]:
        """The document checked, and the signature of the file it was read from."""
        try:
            fd = open_ours(path, os.O_RDONLY, owners)
        except FileNotFoundError:
            return None, None
        try:
            signature = _signature(os.fstat(fd))
            blob = _read_at_most(fd, _MAX_FILE_SIZE + 1)
        finally:
            os.close(fd)
        if len(blob) > _MAX_FILE_SIZE:
            raise CorruptDocumentError(
                f"{path} is larger than any document keyrotd writes{_UNTOUCHED}", _CORRUPT_HINT
            )
        verified = self._verified.get(keyset)
        if verified is not None and hmac.compare_digest(verified[0], _digest(blob)):
            return verified[1], signature
        try:
            opened = unseal(keyset, blob, self._key)
            self._verified[keyset] = (_digest(blob), opened)
            return opened, signature
        except KeyRequiredError as error:
            raise ConfigError(
                f"{path}: {error}", "set storage.encryption_key_file to the key it was written with"
            ) from None
        except EnvelopeError as error:
            raise CorruptDocumentError(f"{path}: {error}{_UNTOUCHED}", _CORRUPT_HINT) from None

    @contextmanager
    def _os_errors(self) -> Iterator[None]:
        """Translate OS errors into keyrotd errors naming the path (never the contents)."""
        try:
            yield
        except PermissionError as error:
            raise ConfigError(
                f"permission denied on {error.filename or self._directory}",
                f"make the storage directory {self._directory} and its files readable and "
                f"writable by the user running keyrotd (chown them to that user; chmod 700 "
                f"the directory)",
            ) from None
        except OSError as error:
            where = error.filename or self._directory
            reason = error.strerror or type(error).__name__
            raise StorageError(f"file storage failed on {where}: {reason}") from None


Signature = tuple[int, int, int, int, int]


def _digest(blob: bytes) -> bytes:
    return hashlib.sha256(blob).digest()


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes of the open file ``fd``."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _signature(info: os.stat_result) -> Signature:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _check_version(path: Path, current: Opened | None, expected_version: str | None) -> int:
    """The next revision, if the stored one is still ``expected_version``."""
    found = None if current is None else str(current.revision)
    if found != expected_version:
        raise ConflictError(
            f"{path} changed since it was read (expected version {expected_version or 'none'}, "
            f"found {found or 'none'})",
            "re-read the keyset and try again",
        )
    return 1 if current is None else current.revision + 1


def _make_private_directories(directory: Path) -> None:
    """Create ``directory`` and missing parents as 0700, whatever the umask."""
    missing: list[Path] = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, _DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(path, _DIR_MODE)


def _owner_for(directory: Path) -> Owner | None:
    """Root writes as the owner of the store (docs/cli.md): a root CLI must not leave files the
    daemon's user cannot open. ``None``: keep the writer's own uid and gid."""
    if os.geteuid() != 0:
        return None
    info = os.stat(directory)
    return info.st_uid, info.st_gid


def require_store(settings: FileSettings, source: str) -> None:
    """For a command that reads but never creates a store: refuse, naming where it looked, when
    no store is where the configuration points. It never advises creating keys there: that would
    start a second store beside the real one."""
    if not settings.path.is_dir():
        raise KeyrotdError(
            f"no key store at {settings.path} (storage.path, from {source})",
            "point --config (or KEYROTD_CONFIG) at the configuration the daemon runs with; a "
            "relative storage.path counts from the configuration file's directory",
        )


def _store_owner(settings: FileSettings) -> Path:
    return settings.path


BACKEND: Final = Backend(
    settings=FileSettings,
    open=FileStorage.from_settings,
    max_document_size=MAX_DOCUMENT_SIZE,
    require_store=require_store,
    store_owner=_store_owner,
)
"""``storage.type = "file"`` (:mod:`keyrotd.storage.registry`)."""
