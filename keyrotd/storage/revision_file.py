"""``storage.revision_file``: the high-water marks of G8 that outlive a process.

Per keyset it keeps the highest revision accepted, the SHA-256 of the document accepted at it,
and every kid ever revoked::

    {"format": "keyrotd/revisions/v1",
     "keysets": {"api": {"revision": 7, "digest": "<hex>", "revoked": ["<kid>", ...]}}}

The daemon and the CLIs of one configuration share it. A change is made under ``flock`` on
``<file>.lock``, merged with what the file holds then (a mark is never lowered, a revoked kid
never forgotten) and written by an atomic replace (:mod:`keyrotd.atomic`), mode 0600. Run by root,
the files are given the owner of ``owner_of`` (the file store's directory), as the store's own
files are, so that the daemon's user can still update them.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from keyrotd.atomic import Owner, replace_atomically
from keyrotd.errors import ConfigError, StorageError

FORMAT: Final = "keyrotd/revisions/v1"
_MODE: Final = 0o600
_MAX_SIZE: Final = 64 * 1024 * 1024
_HINT: Final = (
    "restore it from a backup, or move it aside (its high-water marks and revoked kids are then "
    "forgotten: a rollback made meanwhile would be accepted)"
)


@dataclass(frozen=True)
class Mark:
    """What a reader has accepted of one keyset: the highest revision, the digest of the
    document at that revision ("" when unknown) and every kid ever revoked."""

    revision: int
    digest: str = ""
    revoked: frozenset[str] = field(default_factory=frozenset)

    def merge(self, other: Mark | None) -> Mark:
        """The higher of two marks, with the revoked kids of both."""
        if other is None:
            return self
        high = self if self.revision >= other.revision else other
        digest = high.digest
        if self.revision == other.revision and not digest:
            digest = other.digest or self.digest
        return Mark(high.revision, digest, self.revoked | other.revoked)


Marks = dict[str, Mark]


class RevisionFile:
    """The marks file (see the module docstring)."""

    def __init__(self, path: Path, owner_of: Path | None = None) -> None:
        """Refuses (exit 2) a path whose directory does not exist: a daemon would otherwise
        start and fail every read."""
        self.path = Path(path).absolute()
        self._owner_of = owner_of
        self._seen: tuple[tuple[int, int, int, int], Marks] | None = None
        self._check_directory()

    def load(self) -> Marks:
        """The marks in the file ({} if there is none yet); parsed again only when it changed."""
        with self._errors():
            try:
                info = os.stat(self.path)
            except FileNotFoundError:
                return {}
            signature = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            if self._seen is not None and self._seen[0] == signature:
                return self._seen[1]
            if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_SIZE:
                raise StorageError(f"{self.path} is not a keyrotd revision file", _HINT)
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as file:
                marks = _parse(file.read(_MAX_SIZE + 1), self.path)
        self._seen = (signature, marks)
        return marks

    def record(self, raised: Mapping[str, Mark]) -> None:
        """Merge ``raised`` into the file, under its lock: a mark only ever goes up."""
        if not raised:
            return
        from keyrotd.storage.file_locks import exclusive_lock, store_owners

        with self._errors():
            self._check_directory()
            owner = self._owner()
            lock = self.path.with_name(self.path.name + ".lock")
            # the lock is checked as the store's files are: a link or FIFO planted there is refused
            where = self._owner_of
            owners = store_owners(
                where if where is not None and where.exists() else self.path.parent
            )
            with exclusive_lock(lock, 10.0, owner, owners):
                self._seen = None
                marks = dict(self.load())
                for keyset, mark in raised.items():
                    marks[keyset] = mark.merge(marks.get(keyset))
                temp = self.path.with_name(f".{self.path.name}.tmp")
                temp.unlink(missing_ok=True)  # a crashed writer's, under the lock
                replace_atomically(self.path, temp, _render(marks), _MODE, owner)

    def _check_directory(self) -> None:
        if not self.path.parent.is_dir():
            raise ConfigError(
                f"storage.revision_file: the directory {self.path.parent} does not exist",
                "create it (owned by the user running keyrotd), or point revision_file at a "
                "file in an existing directory outside the store",
            )

    def _owner(self) -> Owner | None:
        if os.geteuid() != 0:
            return None
        where = self._owner_of if self._owner_of is not None else self.path.parent
        try:
            info = os.stat(where)
        except FileNotFoundError:
            info = os.stat(self.path.parent)
        return info.st_uid, info.st_gid

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except PermissionError as error:
            raise ConfigError(
                f"storage.revision_file: permission denied on {error.filename or self.path}",
                "let the user running keyrotd read and write it and its directory",
            ) from None
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise StorageError(
                f"storage.revision_file: {error.filename or self.path}: {reason}", _HINT
            ) from None


def _parse(blob: bytes, path: Path) -> Marks:
    try:
        document = json.loads(blob)
        if document.get("format") != FORMAT:
            raise ValueError("format")
        return {
            str(name): Mark(
                _revision(entry["revision"]),
                str(entry.get("digest", "")),
                frozenset(str(kid) for kid in entry.get("revoked", [])),
            )
            for name, entry in document["keysets"].items()
        }
    except (ValueError, TypeError, KeyError, AttributeError):
        raise StorageError(f"{path} is not a keyrotd revision file", _HINT) from None


def _revision(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("revision")
    return value


def _render(marks: Mapping[str, Mark]) -> bytes:
    keysets = {
        name: {"revision": m.revision, "digest": m.digest, "revoked": sorted(m.revoked)}
        for name, m in sorted(marks.items())
    }
    return (json.dumps({"format": FORMAT, "keysets": keysets}, indent=1) + "\n").encode()
