"""``keyrotd backup`` and ``restore``, the pure part: the backup file and what a restore adds back.

A backup is the keyset document in the file store's envelope (:mod:`keyrotd.storage.sealing`):
bound to the keyset's name and its revision, AES-256-GCM sealed with ``storage.encryption_key_file``
when one is set, else plain with a SHA-256 digest. A restore never brings back a revoked kid and
never changes which key signs where a document exists (docs/cli.md, G8 in docs/threat-model.md).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Final

from keyrotd.errors import ConfigError, KeyrotdError
from keyrotd.lifecycle.due import expires_after
from keyrotd.model import Key, Keyset, KeyState, Policy, from_json
from keyrotd.storage.sealing import EnvelopeError, KeyRequiredError, seal, unseal

MAX_BACKUP_SIZE: Final = 4 * 1024 * 1024


def seal_backup(keyset: Keyset, data: bytes, key: bytes | None) -> bytes:
    """The backup file of the stored document ``data`` (parsed: ``keyset``)."""
    return seal(keyset.name, max(keyset.revision, 1), data, key)


def open_backup(path: Path, key: bytes | None, wanted: str | None) -> Keyset:
    """The keyset a backup file holds, checked; ``wanted``: the keyset it must be of."""
    try:
        with path.open("rb") as file:
            blob = file.read(MAX_BACKUP_SIZE + 1)
    except OSError as error:
        raise KeyrotdError(
            f"cannot read the backup {path}: {error.strerror or type(error).__name__}",
            "give the file `keyrotd backup --output` wrote",
        ) from None
    name = _keyset_of(blob, path)
    if wanted is not None and name != wanted:
        raise KeyrotdError(
            f"{path} is a backup of keyset {name}, not of {wanted}",
            f"restore it with --keyset {name}, or give a backup of {wanted}",
        )
    try:
        opened = unseal(name, blob, key)
    except KeyRequiredError as error:
        raise ConfigError(
            f"{path}: {error}", "set storage.encryption_key_file to the key it was written with"
        ) from None
    except EnvelopeError as error:
        raise KeyrotdError(f"{path}: not a usable keyrotd backup ({error})", _HINT) from None
    return from_json(opened.data, str(path))


_HINT: Final = "give the file `keyrotd backup --output` wrote, unmodified"


def _keyset_of(blob: bytes, path: Path) -> str:
    try:
        envelope = json.loads(blob)
        name = envelope["keyset"] if isinstance(envelope, dict) else None
    except (ValueError, KeyError):
        name = None
    if len(blob) > MAX_BACKUP_SIZE or not isinstance(name, str):
        raise KeyrotdError(f"{path} is not a keyrotd backup", _HINT)
    return name


def readoptable(
    backup: Keyset, current: Keyset, revoked: frozenset[str], policy: Policy, now: datetime
) -> tuple[Key, ...]:
    """The backup's keys that ``current`` lacks and never revoked or expired, as retired keys
    (public half only) for what remains of their ``token_lifetime + clock_skew``: a retired key
    keeps its own end; one that signed or was pending in the backup may have signed until now."""
    known = {k.kid for k in (*current.keys, *current.history)}
    back: list[Key] = []
    for key in backup.keys:
        if key.kid in known or key.kid in revoked or key.public_jwk is None:
            continue
        if key.state is KeyState.RETIRED and key.expires_at is not None:
            retired_at, expires_at = key.retired_at or now, key.expires_at
        else:
            retired_at, expires_at = now, expires_after(current, policy, now)
        if expires_at <= now:
            continue
        activated = key.activates_at if key.activates_at and key.activates_at <= now else None
        back.append(
            Key(
                kid=key.kid,
                alg=key.alg,
                state=KeyState.RETIRED,
                created_at=key.created_at,
                activates_at=activated or key.created_at,
                retired_at=retired_at,
                expires_at=expires_at,
                public_jwk=key.public_jwk,
            )
        )
    return tuple(back)
