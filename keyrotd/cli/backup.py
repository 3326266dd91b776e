"""``keyrotd backup`` and ``keyrotd restore``: the one legitimate way back under G8 (docs/cli.md).

``backup`` writes the stored document, as accepted (a rolled-back one is refused like any read),
in its envelope (:mod:`keyrotd.restoring`). ``restore`` goes through the writer and the planner
(:class:`keyrotd.lifecycle.Restore`), so its write goes forward: a revision above the backup's and
every high-water mark, and no kid revoked in the document or in ``storage.revision_file`` live.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

from keyrotd.atomic import replace_atomically
from keyrotd.cli.output import print_transitions
from keyrotd.config import Settings
from keyrotd.errors import CorruptDocumentError, KeyrotdError, RollbackError
from keyrotd.lifecycle.commands import Restore
from keyrotd.model import Keyset, from_json
from keyrotd.restoring import open_backup, readoptable, seal_backup
from keyrotd.retries import Retry
from keyrotd.secretfiles import load_encryption_key
from keyrotd.storage import Storage
from keyrotd.storage.revisions import RevisionGuard
from keyrotd.times import Clock, rfc3339
from keyrotd.writer import KeysetSpec, KeysetWriter, Loaded

FEW_ATTEMPTS = Retry(attempts=3, base_delay=timedelta(0), max_delay=timedelta(0))
"""A restore onto a missing or refused document plans on the backup (one attempt, and one more
for each round of key generation). Another writer winning meanwhile makes it re-read: a refused
document fails it again, one written meanwhile is kept and only its revoked kids stay out."""


def cmd_backup(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    name = settings.keyset(args.keyset).name
    stored = storage.read(name)
    if stored is None:
        raise KeyrotdError(
            f"keyset {name} has no document at {storage.location(name)}", "nothing to back up"
        )
    keyset = from_json(stored.data, stored.location)
    key = _encryption_key(settings)
    blob = seal_backup(keyset, stored.data, key)
    sealed = (
        "sealed with the storage encryption key"
        if key
        else "NOT encrypted: it holds private keys; keep it as secret as the store"
    )
    where = "stdout"
    if args.output:
        target = Path(args.output).absolute()
        temp = target.with_name(f".{target.name}.tmp")
        try:
            temp.unlink(missing_ok=True)  # left by an interrupted backup
            replace_atomically(target, temp, blob, 0o600, None)
        except OSError as error:
            raise KeyrotdError(
                f"cannot write {target}: {error.strerror or type(error).__name__}",
                "give --output a path in a directory you may write",
            ) from None
        where = str(target)
    else:
        sys.stdout.buffer.write(blob)
        sys.stdout.flush()
    report = sys.stdout if args.output else sys.stderr
    print(
        f"{name}: revision {keyset.revision} ({len(keyset.keys)} keys in the JWKS) backed up "
        f"to {where}, {sealed}",
        file=report,
    )
    return 0


def cmd_restore(
    settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock
) -> int:
    key = _encryption_key(settings)
    backup = open_backup(Path(args.file), key, args.keyset)
    ks = settings.keyset(backup.name)
    mark = storage.accepted(ks.name) if isinstance(storage, RevisionGuard) else None
    revoked = mark.revoked if mark is not None else frozenset()
    manager = KeysetWriter(storage, KeysetSpec.from_settings(ks), clock, retry=FEW_ATTEMPTS)
    try:
        current: Loaded | None = manager.load()
    except (RollbackError, CorruptDocumentError) as unreadable:
        print(f"{ks.name}: the stored document is unusable ({unreadable.message})")
        current = None
    if current is not None and current.version is not None:
        return _add_back(manager, backup, current.keyset, revoked, args.file)
    version = _version_under(storage, ks.name, settings)
    floor = max(backup.revision, mark.revision if mark is not None else 0)
    base = Keyset(
        name=backup.name,
        keys=backup.keys,
        history=backup.history,
        updated_at=backup.updated_at,
        revision=floor,
    )
    location = storage.location(ks.name)
    outcome = manager.apply(Restore(revoked=revoked, rewrite=True), Loaded(base, version, location))
    left_out = sorted(k.kid for k in backup.keys if k.kid in revoked)
    print(
        f"{ks.name}: restored the backup of revision {backup.revision} from {args.file} as "
        f"revision {outcome.keyset.revision} ({len(outcome.keyset.keys)} keys in the JWKS)"
    )
    if left_out:
        print(f"{ks.name}: left out as revoked: {', '.join(left_out)}")
    print_transitions(ks.name, outcome.transitions)
    return 0


def _add_back(
    manager: KeysetWriter, backup: Keyset, current: Keyset, revoked: frozenset[str], file: str
) -> int:
    now = manager.clock()
    keys = readoptable(backup, current, revoked, manager.spec.policy, now)
    if not keys:
        print(
            f"{manager.name}: nothing to add back from {file}: the keyset holds, revoked or "
            f"expired every key of the backup"
        )
        return 0
    outcome = manager.apply(Restore(keys=keys, revoked=revoked))
    added = [k for k in keys if any(k.kid == o.kid for o in outcome.keyset.keys)]
    for key in added:
        assert key.expires_at is not None
        print(
            f"{manager.name}: added back {key.kid} as retired (verification only) until "
            f"{rfc3339(key.expires_at)}"
        )
    active = outcome.keyset.active
    signer = active.kid if active is not None else "none"
    print(f"{manager.name}: revision {outcome.keyset.revision}; {signer} still signs")
    return 0


def _version_under(storage: Storage, name: str, settings: Settings) -> str | None:
    """The backend's version of a document the reader refused (the restore's compare-and-swap
    is on it); a file-store document that fails its own checks is moved aside first, as
    keyrotd never writes over it."""
    backend = storage.backend if isinstance(storage, RevisionGuard) else storage
    try:
        stored = backend.read(name)
    except CorruptDocumentError:
        if settings.storage.type != "file":
            raise
        document = Path(backend.location(name))
        aside = document.with_name(f"{document.name}.unusable")
        os.replace(document, aside)
        print(f"{name}: moved the unusable document aside to {aside}")
        return None
    return None if stored is None else stored.version


def _encryption_key(settings: Settings) -> bytes | None:
    key_file = settings.storage.setting("encryption_key_file")
    return load_encryption_key(key_file) if isinstance(key_file, Path) else None
